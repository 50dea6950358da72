"""Tokenizers: from an HF directory (tokenizer.json) or built from GGUF metadata, one wrapper type."""
from __future__ import annotations

import json
import os
import re

import jinja2
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from seekjax.models.errors import ModelLoadError

# Stand-ins for message contents while the chat template renders (private-use characters,
# which no template or tokenizer treats specially).
_CONTENT_MARK = "\ue000{}\ue001"
_CONTENT_MARK_RE = re.compile("\ue000(\\d+)\ue001")

# GGUF token_type values (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
_GGUF_CONTROL = 3
_GGUF_USER_DEFINED = 4


class Tokenizer:
  """A thin wrapper: encode/decode ids, special ids, and the chat template.

  encode(str) -> list[int]; decode(ids) -> str. `eos_ids` holds every id that ends a turn.
  Untrusted text (questions, contexts, SLM turns) goes through `encode_text` or
  `encode_chat`: a special-token string inside it ("<|im_end|>") is encoded as the plain
  text it spells, never as the control token, so text cannot end a turn or forge a role.
  """

  def __init__(self, tok: tokenizers.Tokenizer, *, eos_id: int, bos_id: int | None = None,
               pad_id: int | None = None, add_bos: bool = False, chat_template: str | None = None,
               extra_eos_ids: tuple[int, ...] = ()):
    self.tok = tok
    self.eos_id = eos_id
    self.bos_id = bos_id
    self.pad_id = eos_id if pad_id is None else pad_id
    self.add_bos = add_bos
    self.chat_template = chat_template
    self.eos_ids = tuple(dict.fromkeys((eos_id,) + tuple(extra_eos_ids)))
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    self.special_tokens = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    self._text_tok = None   # a copy of `tok` that splits special-token strings as text

  def _text_only(self) -> tokenizers.Tokenizer:
    """The copy of the tokenizer that reads special-token strings as text (built once; a
    separate object, since `encode_special_tokens` is a setting, not an argument)."""
    if self._text_tok is None:
      text_tok = tokenizers.Tokenizer.from_str(self.tok.to_str())
      text_tok.encode_special_tokens = True
      self._text_tok = text_tok
    return self._text_tok

  def holds_special(self, text) -> bool:
    """Whether text spells one of the special tokens (e.g. "<|im_start|>")."""
    return isinstance(text, str) and any(t and t in text for t in self.special_tokens)

  def encode(self, text: str) -> list[int]:
    ids = self.tok.encode(text, add_special_tokens=False).ids
    if self.add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def encode_text(self, text: str) -> list[int]:
    """Ids of untrusted text: like `encode`, but a special-token string in it is split into
    ordinary pieces, so no id of the result is a special token (bos aside)."""
    if not self.holds_special(text):
      return self.encode(text)
    ids = self._text_only().encode(text, add_special_tokens=False).ids
    if self.add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self.tok.token_to_id(token)

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render chat messages with the model's template (plain fallback if it has none)."""
    if not self.chat_template:
      text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
      return text + ("assistant: " if add_generation_prompt else "")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(self.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=self.decode([self.bos_id]) if self.bos_id is not None else "",
        eos_token=self.decode([self.eos_id]))

  def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Ids of a chat: the template's own special tokens are control ids; the messages'
    contents are untrusted text (see `encode_text`).

    Contents without special-token strings take the plain path (render, then encode), so
    their ids are exactly what the template alone gives. Otherwise the template is
    rendered with a mark in place of each content, and each content is encoded as text
    where its mark stands.
    """
    if not any(self.holds_special(m.get("content")) for m in messages):
      return self.encode(self.apply_chat_template(messages, add_generation_prompt))
    marked = [dict(m, content=_CONTENT_MARK.format(i)) for i, m in enumerate(messages)]
    pieces = _CONTENT_MARK_RE.split(self.apply_chat_template(marked, add_generation_prompt))
    ids = [self.bos_id] if self.add_bos and self.bos_id is not None else []
    for k, piece in enumerate(pieces):
      if k % 2:   # a mark: the content of message int(piece)
        content = messages[int(piece)].get("content")
        ids += self._text_only().encode(str(content), add_special_tokens=False).ids
      elif piece:
        ids += self.tok.encode(piece, add_special_tokens=False).ids
    return ids


def _raise(msg):
  raise jinja2.TemplateError(msg)


def _field(reader, name, default=None):
  f = reader.fields.get(name)
  if f is None:
    return default
  return f.contents()


def tokenizer_from_gguf(reader, path="<gguf>") -> Tokenizer | None:
  """Build a byte-level BPE tokenizer from a gguf.GGUFReader's metadata (no torch needed).

  Returns None when the file carries no tokenizer.
  """
  model = _field(reader, "tokenizer.ggml.model")
  if model is None:
    return None
  if model != "gpt2":
    raise ModelLoadError(path, f"unsupported GGUF tokenizer model {model!r} (only 'gpt2' BPE)")
  tokens = _field(reader, "tokenizer.ggml.tokens")
  merges = _field(reader, "tokenizer.ggml.merges") or []
  types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
  vocab = {t: i for i, t in enumerate(tokens)}
  bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                   fuse_unk=False, byte_fallback=False)
  tok = tokenizers.Tokenizer(bpe)
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if _field(reader, "tokenizer.ggml.pre") in ("smollm", "starcoder", "refact"):
    # SmolLM2 / StarCoder split every digit on its own before the GPT-2 regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  special = [tokenizers.AddedToken(tokens[i], special=True, normalized=False)
             for i, ty in enumerate(types) if ty in (_GGUF_CONTROL, _GGUF_USER_DEFINED)]
  tok.add_special_tokens(special)
  eos = int(_field(reader, "tokenizer.ggml.eos_token_id", 0))
  # SmolLM2's GGUF chat turns end with <|im_end|>; make sure that (and eos) stop generation.
  im_end = vocab.get("<|im_end|>")
  extra = (im_end,) if im_end is not None else ()
  if im_end is not None and tokens[eos] == "<|im_start|>":
    eos = im_end  # guard against the known mis-conversion (eos must never be <|im_start|>)
  bos = _field(reader, "tokenizer.ggml.bos_token_id")
  pad = _field(reader, "tokenizer.ggml.padding_token_id")
  return Tokenizer(tok, eos_id=eos, bos_id=None if bos is None else int(bos),
                   pad_id=None if pad is None else int(pad),
                   add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
                   chat_template=_field(reader, "tokenizer.chat_template"), extra_eos_ids=extra)


def tokenizer_from_hf_dir(path: str) -> Tokenizer | None:
  """Load tokenizer.json (+ tokenizer_config.json) from an HF directory; None if absent."""
  tj = os.path.join(path, "tokenizer.json")
  if not os.path.exists(tj):
    return None
  try:
    tok = tokenizers.Tokenizer.from_file(tj)
  except Exception as e:  # noqa: BLE001 - report the file, not the Rust traceback
    raise ModelLoadError(tj, f"cannot parse tokenizer: {str(e).splitlines()[0]}") from None
  cfg = {}
  tc = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(tc):
    with open(tc) as f:
      cfg = json.load(f)

  def tid(name):
    v = cfg.get(name)
    if isinstance(v, dict):
      v = v.get("content")
    return tok.token_to_id(v) if v else None

  eos = tid("eos_token")
  if eos is None:
    eos = tok.token_to_id("<|im_end|>") or tok.token_to_id("<|endoftext|>") or 0
  extra = tuple(i for i in (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>"))
                if i is not None)
  template = cfg.get("chat_template")
  ct = os.path.join(path, "chat_template.jinja")
  if template is None and os.path.exists(ct):
    with open(ct) as f:
      template = f.read()
  return Tokenizer(tok, eos_id=eos, bos_id=tid("bos_token"), pad_id=tid("pad_token"),
                   add_bos=bool(cfg.get("add_bos_token", False)), chat_template=template,
                   extra_eos_ids=extra)
