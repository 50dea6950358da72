"""The public model API: `load_model`, `logits`, and the Model record they share."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seekjax.models import decoder, embedded, loaders, sharding
from seekjax.models.config import ModelConfig
from seekjax.models.errors import ModelLoadError
from seekjax.models.tokenizer import Tokenizer, tokenizer_from_gguf, tokenizer_from_hf_dir


@dataclasses.dataclass
class Model:
  """A loaded model: static config, params pytree (maybe sharded), tokenizer, mesh."""

  config: ModelConfig
  params: dict
  tokenizer: Tokenizer | None = None
  mesh: jax.sharding.Mesh | None = None
  name: str = ""

  def replace(self, **kw) -> "Model":
    return dataclasses.replace(self, **kw)


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for k, v in flat.items():
    node = out
    *parents, name = k.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[name] = v
  return out


def _flatten(tree) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _place(params, cfg: ModelConfig, mesh):
  dtype = cfg.jnp_dtype
  params = jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)
  if mesh is None:
    return jax.tree.map(jnp.asarray, params)
  return sharding.shard_params(mesh, params)


def _converted_tokenizer(conv: str) -> Tokenizer:
  import tokenizers  # pylint: disable=import-outside-toplevel
  with open(os.path.join(conv, "tokenizer_meta.json")) as f:
    meta = json.load(f)
  return Tokenizer(tokenizers.Tokenizer.from_file(os.path.join(conv, "tokenizer.json")),
                   eos_id=meta["eos_id"], bos_id=meta["bos_id"], pad_id=meta["pad_id"],
                   add_bos=meta["add_bos"], chat_template=meta["chat_template"],
                   extra_eos_ids=tuple(meta["extra_eos_ids"]))


def load_tokenizer(name: str = "smollm2-135m") -> Tokenizer:
  """The embedded model's tokenizer alone (converting the model once if needed)."""
  conv = embedded.converted_dir(name)
  if not os.path.exists(os.path.join(conv, "tokenizer_meta.json")):
    load_model(name)
  return _converted_tokenizer(conv)


TINY_CONFIG = ModelConfig(arch="llama", vocab_size=49152, hidden_size=64, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
                          rope_theta=10000.0, rms_norm_eps=1e-5, tie_embeddings=True,
                          max_position_embeddings=2048)


def _load_embedded(name: str, dtype: str, mesh):
  conv = embedded.converted_dir(name)
  if os.path.exists(os.path.join(conv, "params.safetensors")):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    import tokenizers  # pylint: disable=import-outside-toplevel
    with open(os.path.join(conv, "config.json")) as f:
      cfg = ModelConfig(**{**json.load(f), "dtype": dtype})
    tok = _converted_tokenizer(conv)
    params = _unflatten(load_file(os.path.join(conv, "params.safetensors")))
    return Model(cfg, _place(params, cfg, mesh), tok, mesh, name)
  path = embedded.embedded_gguf(name)
  model = _load_gguf(path, dtype, mesh)
  try:
    flat = {k: np.asarray(v, np.float32) for k, v in _flatten(model.params).items()}
    embedded.save_converted(name, model.config.replace(dtype="float32"), flat, model.tokenizer)
  except OSError as e:  # a read-only cache only costs speed
    print(f"[seekjax] could not cache converted weights: {e}", file=sys.stderr)
  return model.replace(name=name)


def _load_gguf(path: str, dtype: str, mesh) -> Model:
  if not os.path.exists(path):
    raise ModelLoadError(path, "no such file")
  reader = loaders.open_gguf(path)
  cfg = loaders.config_from_gguf(reader, path, dtype)
  params = loaders.load_gguf_params(reader, path, cfg)
  tok = tokenizer_from_gguf(reader, path)
  return Model(cfg, _place(params, cfg, mesh), tok, mesh, os.path.basename(path))


def _load_hf_dir(path: str, dtype: str, mesh) -> Model:
  cfg = loaders.config_from_hf(path, dtype)
  tok = tokenizer_from_hf_dir(path)
  if tok is not None and tok.vocab_size > cfg.vocab_size:  # ids past the embedding: garbage
    raise ModelLoadError(os.path.join(path, "tokenizer.json"), f"tokenizer has {tok.vocab_size} "
                         f"tokens but config.json has vocab_size={cfg.vocab_size}")
  params = loaders.load_hf_params(path, cfg)
  return Model(cfg, _place(params, cfg, mesh), tok, mesh, os.path.basename(path.rstrip("/")))


def load_model(path: str, *, dtype: str = "float32", mesh=None, verbose: bool = False) -> Model:
  """Load an HF checkpoint dir, a .gguf file, or an embedded name ("smollm2-135m").

  Params are cast to `dtype` ("float32" | "bfloat16") and, when `mesh` is given, put
  straight onto their NamedSharding. Bad inputs raise ModelLoadError with one line.
  """
  t0 = time.perf_counter()
  if path == "tiny-random":  # tests and smoke runs: 2 random layers, the SmolLM2 tokenizer
    return random_model(TINY_CONFIG.replace(dtype=dtype), tokenizer=load_tokenizer(), mesh=mesh)
  if path in embedded.EMBEDDED:
    model = _load_embedded(path, dtype, mesh)
  elif str(path).endswith(".gguf"):
    model = _load_gguf(str(path), dtype, mesh)
  elif os.path.isdir(path):
    model = _load_hf_dir(str(path), dtype, mesh)
  else:
    raise ModelLoadError(path, "not an HF checkpoint directory, a .gguf file, or one of "
                               f"the embedded names {sorted(embedded.EMBEDDED)}")
  if verbose:
    print(f"[seekjax] loaded {model.name} ({model.config.num_params / 1e6:.0f}M params) "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
  return model


def random_model(cfg: ModelConfig, seed: int = 0, tokenizer=None, mesh=None) -> Model:
  """A model with random weights (tests, benchmarks, GPU checks)."""
  params = decoder.init_params(cfg, jax.random.PRNGKey(seed))
  if mesh is not None:
    params = sharding.shard_params(mesh, params)
  return Model(cfg, params, tokenizer, mesh, f"random-{cfg.arch}")


@functools.lru_cache(maxsize=None)
def _logits_fn(cfg: ModelConfig):
  @jax.jit
  def fn(params, tokens, attention_mask):
    positions = decoder.positions_from_mask(attention_mask)
    out, _ = decoder.forward(params, cfg, tokens, positions, key_mask=attention_mask.astype(bool))
    return out
  return fn


def logits(model: Model, token_ids, attention_mask=None):
  """Full-sequence logits. token_ids: int32[B, T]; attention_mask: optional {0,1}[B, T]
  (left or right padding). Returns float32[B, T, V]."""
  tokens = jnp.asarray(token_ids, jnp.int32)
  if tokens.ndim != 2:
    raise ValueError(f"token_ids must be [B, T], got shape {tokens.shape}")
  mask = jnp.ones_like(tokens) if attention_mask is None else jnp.asarray(attention_mask,
                                                                          jnp.int32)
  if model.mesh is not None:
    sharding.check_batch(model.mesh, tokens.shape[0])
    bs = sharding.batch_sharding(model.mesh, 2)
    tokens, mask = jax.device_put(tokens, bs), jax.device_put(mask, bs)
  return _logits_fn(model.config)(model.params, tokens, mask)
