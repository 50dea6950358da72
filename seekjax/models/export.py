"""Export: our params pytree -> an HF Llama / Qwen2 / Qwen3 state dict and config.

The key mapping is the inverse of `loaders.HF_KEYS` (not a second table): each pattern is
turned back into a key template, and each transform is an involution ([in, out] <-> [out,
in] transpose, or identity), so applying it again undoes the load.
"""
from __future__ import annotations

import re

import numpy as np

from seekjax.models import loaders
from seekjax.models.config import ModelConfig

# Every transform in HF_KEYS is its own inverse; anything else must be added here explicitly.
_INVERSE = {loaders._T: loaders._T, loaders._I: loaders._I}  # pylint: disable=protected-access

_HF_ARCH = {"llama": ("llama", "LlamaForCausalLM"),
            "qwen2": ("qwen2", "Qwen2ForCausalLM"),
            "qwen3": ("qwen3", "Qwen3ForCausalLM")}


def _template(pattern: str) -> str:
  """r"model\\.layers\\.(\\d+)\\.mlp\\.up_proj\\.weight" -> "model.layers.{i}.mlp.up_proj.weight"."""
  out = pattern.replace(r"(\d+)", "{i}").replace(r"\.", ".")
  if re.search(r"[\\()\[\]*+?|^$]", out):
    raise ValueError(f"cannot invert HF key pattern {pattern!r}")
  return out


def _export_table():
  """Our leaf path -> (HF key template, inverse transform), derived from loaders.HF_KEYS."""
  table = {}
  for pattern, leaf, fn in loaders.HF_KEYS:
    if fn not in _INVERSE:
      raise ValueError(f"no inverse known for the transform of {leaf!r}")
    tmpl = _template(pattern)
    probe = tmpl.format(i=0)
    assert re.fullmatch(pattern, probe), (pattern, probe)
    table[leaf] = (tmpl, _INVERSE[fn])
  return table


def _flat_leaves(params) -> dict:
  out = {}

  def walk(node, prefix):
    for k, v in node.items():
      path = f"{prefix}/{k}" if prefix else k
      if isinstance(v, dict):
        walk(v, path)
      else:
        out[path] = v
  walk(params, "")
  return out


def to_hf_state_dict(model, dtype=np.float32) -> dict[str, np.ndarray]:
  """HF-named numpy tensors ([out, in] Linear weights) for `model` (a seekjax Model).

  Tied models get no `lm_head.weight` (HF ties it to `model.embed_tokens.weight`).
  `dtype=None` keeps the params' own dtype (bfloat16 arrays are ml_dtypes, not torch-ready).
  """
  cfg: ModelConfig = model.config
  table = _export_table()
  out: dict[str, np.ndarray] = {}
  for leaf, value in _flat_leaves(model.params).items():
    if leaf not in table:
      raise ValueError(f"param {leaf!r} has no HF name (HF_KEYS lacks it)")
    tmpl, fn = table[leaf]
    arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if leaf.startswith("layers/"):
      if arr.shape[0] != cfg.num_layers:
        raise ValueError(f"{leaf}: leading axis {arr.shape[0]} != num_layers {cfg.num_layers}")
      for i in range(cfg.num_layers):
        out[tmpl.format(i=i)] = np.ascontiguousarray(fn(arr[i]))
    else:
      out[tmpl] = np.ascontiguousarray(fn(arr))
  return out


def hf_config_dict(cfg: ModelConfig, **extra) -> dict:
  """An HF config.json dict for `cfg` (the inverse of `loaders.config_from_hf`).

  `extra` is merged last (e.g. bos_token_id / eos_token_id / pad_token_id).
  """
  if cfg.arch not in _HF_ARCH:
    raise ValueError(f"cannot export arch {cfg.arch!r}")
  model_type, cls = _HF_ARCH[cfg.arch]
  c = dict(
      model_type=model_type, architectures=[cls], vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, hidden_act="silu",
      max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
      tie_word_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta,
      rope_parameters=dict(rope_type="default", rope_theta=cfg.rope_theta),
      attention_dropout=0.0, use_cache=True, dtype=cfg.dtype)
  if cfg.arch == "llama":
    if cfg.qk_norm:
      raise ValueError("HF Llama has no q/k norm")
    c.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
  elif cfg.arch == "qwen2":
    if not cfg.qkv_bias or cfg.qk_norm:
      raise ValueError("HF Qwen2 always has q/k/v bias and no q/k norm")
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
      raise ValueError("HF Qwen2 needs head_dim * num_heads == hidden_size")
    del c["head_dim"]
    c.update(use_sliding_window=False)
  else:  # qwen3
    if not cfg.qk_norm:
      raise ValueError("HF Qwen3 always has q/k norm")
    c.update(attention_bias=cfg.qkv_bias, use_sliding_window=False)
  c.update(extra)
  return c


def to_hf_model(model, **config_extra):
  """A transformers *ForCausalLM (torch float32, eval mode) holding `model`'s weights."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cdict = hf_config_dict(model.config, **config_extra)
  cdict["dtype"] = "float32"
  model_type = cdict.pop("model_type")
  hf_cfg = transformers.AutoConfig.for_model(model_type, **cdict)
  hf = getattr(transformers, cdict["architectures"][0])(hf_cfg)
  sd = {k: torch.from_numpy(v if v.flags.writeable else v.copy())
        for k, v in to_hf_state_dict(model).items()}
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  allowed = {"lm_head.weight"} if model.config.tie_embeddings else set()
  if set(missing) - allowed or unexpected:
    raise ValueError(f"state dict mismatch: missing={sorted(set(missing) - allowed)} "
                     f"unexpected={sorted(unexpected)}")
  if model.config.tie_embeddings:
    hf.tie_weights()
  return hf.eval()
