"""Checkpoint loaders: HF safetensors directories and GGUF files -> (ModelConfig, numpy params).

Both map checkpoint keys declaratively: a table of (pattern, our leaf path, transform).
A per-layer key fills index i of a stacked [L, ...] leaf. Nothing here touches devices;
`seekjax.models.api` puts each leaf onto its sharding.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from seekjax.models.config import ARCH_FLAGS, ModelConfig
from seekjax.models.decoder import param_shapes
from seekjax.models.errors import ModelLoadError

_T = lambda w: w.T  # noqa: E731  HF Linear stores [out, in]; we store [in, out].
_I = lambda w: w  # noqa: E731

# HF key -> (our path, transform). {i} is the layer index.
HF_KEYS = [
    (r"model\.embed_tokens\.weight", "embed", _I),
    (r"model\.norm\.weight", "final_norm", _I),
    (r"lm_head\.weight", "lm_head", _T),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "layers/attn_norm", _I),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "layers/mlp_norm", _I),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", "layers/q", _T),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", "layers/k", _T),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", "layers/v", _T),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "layers/o", _T),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.bias", "layers/q_bias", _I),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.bias", "layers/k_bias", _I),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.bias", "layers/v_bias", _I),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", "layers/q_norm", _I),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", "layers/k_norm", _I),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "layers/gate", _T),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "layers/up", _T),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "layers/down", _T),
]
# Keys that carry no parameters we need.
HF_IGNORED = [r".*rotary_emb\.inv_freq"]


def _unpermute_rope(n_head):
  """Undo llama.cpp's q/k row permutation (its rotary layout) -> HF rotate-half layout."""
  def fn(w):  # w: [out, in]
    rows = w.shape[0]
    w = w.reshape(n_head, rows // n_head // 2, 2, -1).swapaxes(1, 2).reshape(rows, -1)
    return w.T
  return fn


def gguf_keys(cfg: ModelConfig, arch: str):
  """GGUF tensor name -> (our path, transform), for a config. llama.cpp permutes q/k for llama."""
  permute = arch == "llama"
  q_fn = _unpermute_rope(cfg.num_heads) if permute else _T
  k_fn = _unpermute_rope(cfg.num_kv_heads) if permute else _T
  return [
      (r"token_embd\.weight", "embed", _I),
      (r"output_norm\.weight", "final_norm", _I),
      (r"output\.weight", "lm_head", _T),
      (r"blk\.(\d+)\.attn_norm\.weight", "layers/attn_norm", _I),
      (r"blk\.(\d+)\.ffn_norm\.weight", "layers/mlp_norm", _I),
      (r"blk\.(\d+)\.attn_q\.weight", "layers/q", q_fn),
      (r"blk\.(\d+)\.attn_k\.weight", "layers/k", k_fn),
      (r"blk\.(\d+)\.attn_v\.weight", "layers/v", _T),
      (r"blk\.(\d+)\.attn_output\.weight", "layers/o", _T),
      (r"blk\.(\d+)\.attn_q\.bias", "layers/q_bias", _I),
      (r"blk\.(\d+)\.attn_k\.bias", "layers/k_bias", _I),
      (r"blk\.(\d+)\.attn_v\.bias", "layers/v_bias", _I),
      (r"blk\.(\d+)\.attn_q_norm\.weight", "layers/q_norm", _I),
      (r"blk\.(\d+)\.attn_k_norm\.weight", "layers/k_norm", _I),
      (r"blk\.(\d+)\.ffn_gate\.weight", "layers/gate", _T),
      (r"blk\.(\d+)\.ffn_up\.weight", "layers/up", _T),
      (r"blk\.(\d+)\.ffn_down\.weight", "layers/down", _T),
  ]


class _ParamFiller:
  """Collects checkpoint tensors into stacked numpy leaves, checking every shape."""

  def __init__(self, cfg: ModelConfig, path, dtype):
    self.cfg, self.path, self.dtype = cfg, path, np.dtype(dtype)
    self.shapes = param_shapes(cfg)
    self.leaves: dict[str, np.ndarray] = {}
    self.filled: dict[str, set] = {k: set() for k in self.shapes}

  def put(self, ckpt_key: str, table, array_fn):
    for pattern, leaf, fn in table:
      m = re.fullmatch(pattern, ckpt_key)
      if not m:
        continue
      if leaf not in self.shapes:
        return  # e.g. lm_head in a tied model: ignore the duplicate
      value = np.asarray(fn(array_fn()), dtype=self.dtype)
      full = self.shapes[leaf]
      if m.groups():
        i = int(m.group(1))
        if i >= self.cfg.num_layers:
          raise ModelLoadError(self.path, f"tensor {ckpt_key} has layer {i} but config has "
                                          f"{self.cfg.num_layers} layers")
        want = full[1:]
        if value.shape != want:
          raise ModelLoadError(self.path, f"shape mismatch for {ckpt_key}: checkpoint "
                                          f"{value.shape}, config expects {want}")
        buf = self.leaves.setdefault(leaf, np.zeros(full, self.dtype))
        buf[i] = value
        self.filled[leaf].add(i)
      else:
        if value.shape != full:
          raise ModelLoadError(self.path, f"shape mismatch for {ckpt_key}: checkpoint "
                                          f"{value.shape}, config expects {full}")
        self.leaves[leaf] = value
        self.filled[leaf].add(0)
      return
    raise ModelLoadError(self.path, f"unexpected tensor {ckpt_key!r} for arch {self.cfg.arch}")

  def finish(self) -> dict:
    missing = [k for k, s in self.shapes.items()
               if not self.filled[k] or (k.startswith("layers/") and
                                         len(self.filled[k]) != self.cfg.num_layers)]
    if missing:
      raise ModelLoadError(self.path, f"checkpoint lacks tensors for {missing}")
    params: dict = {}
    for k, v in self.leaves.items():
      node = params
      *parents, name = k.split("/")
      for p in parents:
        node = node.setdefault(p, {})
      node[name] = v
    return params


# ----------------------------------------------------------------------------- HF dirs


def config_from_hf(path: str, dtype: str = "float32") -> ModelConfig:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise ModelLoadError(cfg_path, "missing config.json")
  try:
    with open(cfg_path) as f:
      c = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ModelLoadError(cfg_path, f"corrupt config.json ({e.__class__.__name__}: {e})") from None
  if not isinstance(c, dict):
    raise ModelLoadError(cfg_path, "corrupt config.json (not a JSON object)")
  mt = c.get("model_type")
  if mt not in ARCH_FLAGS:
    raise ModelLoadError(cfg_path, f"unknown architecture model_type={mt!r}; "
                                   f"supported: {sorted(ARCH_FLAGS)}")
  try:
    heads = int(c["num_attention_heads"])
    hidden = int(c["hidden_size"])
    flags = dict(ARCH_FLAGS[mt])
    if mt == "qwen2":
      flags["qkv_bias"] = True
    elif "attention_bias" in c:
      flags["qkv_bias"] = bool(c["attention_bias"])
    rope_theta = c.get("rope_theta")
    if rope_theta is None:
      rope_theta = (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    scaling = c.get("rope_scaling") or (c.get("rope_parameters") or {})
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
      raise ModelLoadError(cfg_path, f"unsupported rope scaling {scaling!r}")
    return ModelConfig(
        vocab_size=int(c["vocab_size"]), hidden_size=hidden,
        num_layers=int(c["num_hidden_layers"]), num_heads=heads,
        num_kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or hidden // heads),
        intermediate_size=int(c["intermediate_size"]), rope_theta=float(rope_theta),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_position_embeddings=int(c.get("max_position_embeddings", 4096)), dtype=dtype,
        **flags)
  except KeyError as e:
    raise ModelLoadError(cfg_path, f"config.json lacks field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    if isinstance(e, ModelLoadError):
      raise
    raise ModelLoadError(cfg_path, f"bad value in config.json: {e}") from None


def _safetensors_files(path: str) -> list[str]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    try:
      with open(index) as f:
        wm = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise ModelLoadError(index, f"corrupt index ({e})") from None
    files = sorted(set(wm.values()))
    for fn in files:
      if not os.path.exists(os.path.join(path, fn)):
        raise ModelLoadError(os.path.join(path, fn), "shard named in the index is missing")
    return [os.path.join(path, fn) for fn in files]
  single = os.path.join(path, "model.safetensors")
  if os.path.exists(single):
    return [single]
  raise ModelLoadError(path, "no model.safetensors or model.safetensors.index.json")


def load_hf_params(path: str, cfg: ModelConfig, dtype=np.float32) -> dict:
  """Read every tensor of an HF safetensors checkpoint into our numpy params pytree."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel
  filler = _ParamFiller(cfg, path, dtype)
  for fn in _safetensors_files(path):
    try:
      with safe_open(fn, framework="numpy") as f:
        for key in f.keys():
          if any(re.fullmatch(p, key) for p in HF_IGNORED):
            continue
          filler.put(key, HF_KEYS, lambda k=key, f=f: f.get_tensor(k))
    except (SafetensorError, OSError) as e:
      raise ModelLoadError(fn, f"truncated or corrupt safetensors file ({e})") from None
    except TypeError as e:  # bfloat16 cannot be read by numpy directly
      raise ModelLoadError(fn, f"cannot read tensor ({e})") from None
  return filler.finish()


# ----------------------------------------------------------------------------- GGUF


def open_gguf(path: str):
  import gguf  # pylint: disable=import-outside-toplevel
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # noqa: BLE001 - gguf raises assorted errors on bad files
    raise ModelLoadError(path, f"truncated or corrupt GGUF file ({e.__class__.__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None


def config_from_gguf(reader, path, dtype="float32") -> ModelConfig:
  def field(name, default=None):
    f = reader.fields.get(name)
    return default if f is None else f.contents()

  arch = field("general.architecture")
  if arch not in ARCH_FLAGS:
    raise ModelLoadError(path, f"unknown architecture general.architecture={arch!r}; "
                               f"supported: {sorted(ARCH_FLAGS)}")
  names = {t.name for t in reader.tensors}
  try:
    hidden = int(field(f"{arch}.embedding_length"))
    heads = int(field(f"{arch}.attention.head_count"))
    head_dim = int(field(f"{arch}.attention.key_length", hidden // heads))
    vocab = field(f"{arch}.vocab_size")
    if vocab is None:
      vocab = len(field("tokenizer.ggml.tokens"))
    return ModelConfig(
        vocab_size=int(vocab), hidden_size=hidden, num_layers=int(field(f"{arch}.block_count")),
        num_heads=heads, num_kv_heads=int(field(f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim, intermediate_size=int(field(f"{arch}.feed_forward_length")),
        rope_theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings="output.weight" not in names,
        max_position_embeddings=int(field(f"{arch}.context_length", 4096)), dtype=dtype,
        **ARCH_FLAGS[arch])
  except TypeError:
    raise ModelLoadError(path, "GGUF metadata lacks a required model field") from None


SUPPORTED_GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                        "Q4_K", "Q5_K", "Q6_K", "Q8_K")


def load_gguf_params(reader, path, cfg: ModelConfig, dtype=np.float32) -> dict:
  """Dequantize every tensor of a GGUF file into our numpy params pytree."""
  from gguf import quants  # pylint: disable=import-outside-toplevel
  arch = reader.fields["general.architecture"].contents()
  table = gguf_keys(cfg, arch)
  filler = _ParamFiller(cfg, path, dtype)
  for t in reader.tensors:
    qtype = t.tensor_type.name
    if qtype not in SUPPORTED_GGUF_TYPES:
      raise ModelLoadError(path, f"tensor {t.name}: unsupported quantization type {qtype}")

    def array(t=t):
      try:
        w = quants.dequantize(t.data, t.tensor_type)
        return w.reshape(tuple(reversed([int(s) for s in t.shape])))
      except (ValueError, IndexError) as e:
        raise ModelLoadError(path, f"tensor {t.name}: truncated or corrupt data ({e})") from None
    filler.put(t.name, table, array)
  return filler.finish()
