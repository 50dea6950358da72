"""What the paper-scale configs need, in miniature, for CPU tests (tests/test_paper_path.py).

  write_qwen3_dir   a random Qwen3 HF checkpoint: config.json (model_type qwen3, head_dim,
                    q/k norms), bfloat16 weights in two safetensors shards with
                    model.safetensors.index.json, a byte-level BPE tokenizer.json trained
                    here on the protocol's text and a ChatML template in
                    tokenizer_config.json (its vocabulary fits the checkpoint's);
  write_hotpotqa    rows in HotpotQA's published layout;
  gold_responder    an OpenAI-compatible helper's replies (for tests/loopback_server.py):
                    the gold answer of the question a message quotes, on an "Answer:" line
                    (what the cold start's helper demos keep), a <need> to the demos'
                    opener, and a short <info> otherwise.
"""
from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

from seekjax import protocol
from seekjax.coldstart import helper_demos

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
          "{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN3_SHAPE = dict(vocab_size=768, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, intermediate_size=128)


def hotpot_rows(n: int) -> list[dict]:
  """`n` HotpotQA rows, each about its own person (its own entity, so the split by entity
  has both sides)."""
  return [{"_id": f"hp{i}", "question": f"In which city was the painter Person {i} born?",
           "answer": f"City {i}", "type": "bridge", "level": "easy",
           "supporting_facts": [[f"Person {i}", 0]],
           "context": [[f"Person {i}", [f"Person {i} was born in City {i}."]]]}
          for i in range(n)]


def write_hotpotqa(path: str, n: int = 32) -> list[dict]:
  rows = hotpot_rows(n)
  with open(path, "w") as f:
    json.dump(rows, f)
  return rows


def _corpus(rows) -> list[str]:
  """Text the tokenizer learns its merges from: prompts, tags, questions, answers."""
  tags = [f"<{t}>" for t in protocol.PROTOCOL_TAGS] + [f"</{t}>" for t in protocol.PROTOCOL_TAGS]
  texts = [protocol.SLM_SYSTEM_PROMPT, protocol.HELPER_SYSTEM_PROMPT, helper_demos.ANSWER_REQUEST,
           helper_demos.NEED_OPENER, " ".join(tags), "".join(tags)]
  texts += [f"{r['question']} Answer: {r['answer']}" for r in rows]
  return texts * 4


def train_tokenizer(rows, vocab_size: int):
  """A byte-level BPE tokenizer (the `tokenizers` library) with Qwen's special tokens."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(_corpus(rows), trainer)
  return tok


def _tensors(cfg: dict, seed: int = 0) -> dict:
  """HF-named bfloat16 tensors of a random Qwen3 (tied embeddings: no lm_head)."""
  rng = np.random.default_rng(seed)
  d, hd, f = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
  h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
  w = lambda *s: (0.02 * rng.standard_normal(s)).astype(ml_dtypes.bfloat16)  # noqa: E731
  ones = lambda n: np.ones(n, ml_dtypes.bfloat16)  # noqa: E731
  out = {"model.embed_tokens.weight": w(cfg["vocab_size"], d), "model.norm.weight": ones(d)}
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    out.update({
        p + "input_layernorm.weight": ones(d), p + "post_attention_layernorm.weight": ones(d),
        p + "self_attn.q_proj.weight": w(h * hd, d), p + "self_attn.k_proj.weight": w(kv * hd, d),
        p + "self_attn.v_proj.weight": w(kv * hd, d), p + "self_attn.o_proj.weight": w(d, h * hd),
        p + "self_attn.q_norm.weight": ones(hd), p + "self_attn.k_norm.weight": ones(hd),
        p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
        p + "mlp.down_proj.weight": w(d, f)})
  return out


def write_qwen3_dir(path: str, rows, **shape) -> str:
  """A random Qwen3 checkpoint dir (module docstring); `shape` overrides QWEN3_SHAPE."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(path, exist_ok=True)
  cfg = dict(QWEN3_SHAPE, **shape)
  tok = train_tokenizer(rows, cfg["vocab_size"])
  assert tok.get_vocab_size() <= cfg["vocab_size"]
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
               "add_bos_token": False, "chat_template": CHATML}, f)
  config = dict(cfg, architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                hidden_act="silu", attention_bias=False, attention_dropout=0.0,
                max_position_embeddings=4096, rope_theta=1000000.0, rope_scaling=None,
                rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="bfloat16",
                bos_token_id=None, eos_token_id=tok.token_to_id("<|im_end|>"),
                use_cache=True, sliding_window=None, use_sliding_window=False)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
  tensors = _tensors(cfg)
  shards = {}   # layer 0 and the embedding in one shard, the rest in the other
  for key in tensors:
    shards.setdefault("model-00001-of-00002.safetensors" if ("layers.0." in key or "embed" in key)
                      else "model-00002-of-00002.safetensors", []).append(key)
  for name, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, os.path.join(path, name), metadata={"format": "pt"})
  total = sum(t.nbytes for t in tensors.values())
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total},
               "weight_map": {k: name for name, keys in shards.items() for k in keys}}, f)
  return path


def gold_responder(rows):
  """An OpenAI-compatible helper's reply to a request (`LoopbackServer(responder=...)`)."""
  gold = {r["question"]: r["answer"] for r in rows}

  def respond(request: dict) -> str:
    message = str(((request.get("messages") or [{}])[-1]).get("content", ""))
    if message.strip() == helper_demos.NEED_OPENER:
      return "<think>No question yet.</think><need>Which question do you have?</need>"
    answer = next((a for q, a in gold.items() if q in message), None)
    if answer is None:
      return "<info>I cannot tell from this message.</info>"
    return f"<think>I know this.</think><info>The city is {answer}.\nAnswer: {answer}</info>"
  return respond
