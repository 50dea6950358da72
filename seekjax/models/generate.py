"""Single-turn generation: jitted prefill plus a `lax.while_loop` decode over a KV cache.

This is the simple path (`sj.generate`). The multi-turn engine with helper callbacks
lives in `seekjax.rollout` and reuses `prefill_chunk` and `decode_step` from here.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seekjax.models import decoder, packing, sharding
from seekjax.models.config import ModelConfig
from seekjax.models.sampling import sample_token
from seekjax.shapes import bucket


def prefill_chunk(params, cfg: ModelConfig, cache, chunk, chunk_len, start, capture=None):
  """Write a right-padded chunk into the cache at per-row offsets and score its last token.

  chunk: int32[B, C], chunk_len: int32[B] (0 = row untouched), start: int32[B].
  Returns (logits float32[B, V] at each row's last valid chunk token, new cache), plus
  the residual after `capture` layers [B, C, D] when set (`decoder.hidden_states`).
  Rows with chunk_len == 0 write only past their end (harmless: never attended, later
  overwritten) and their logits are meaningless.
  """
  c = chunk.shape[1]
  positions = start[:, None] + jnp.arange(c)[None, :]
  out = decoder.hidden_states(params, cfg, chunk, positions, cache=cache, capture=capture)
  x, cache = out[:2]
  last = jnp.clip(chunk_len - 1, 0, c - 1)
  x_last = jnp.take_along_axis(x, last[:, None, None], axis=1)  # [B, 1, D]
  logits = decoder.lm_head(params, cfg, x_last)[:, 0]
  return (logits, cache) if capture is None else (logits, cache, out[2])


def decode_step(params, cfg: ModelConfig, cache, token, position, capture=None):
  """One token per row. token, position: int32[B]. Returns (logits float32[B, V], cache),
  plus the residual after `capture` layers [B, D] when set (`decoder.hidden_states`)."""
  out = decoder.hidden_states(params, cfg, token[:, None], position[:, None], cache=cache,
                              capture=capture)
  logits = decoder.lm_head(params, cfg, out[0])[:, 0]
  return (logits, out[1]) if capture is None else (logits, out[1], out[2][:, 0])


@struct.dataclass
class _GenState:
  cache: decoder.KVCache
  token: jax.Array      # int32[B]   last sampled token, not yet in the cache
  position: jax.Array   # int32[B]   slot where `token` goes
  out: jax.Array        # int32[B, N]
  count: jax.Array      # int32[B]   tokens emitted
  done: jax.Array       # bool[B]
  rng: jax.Array
  step: jax.Array


@functools.lru_cache(maxsize=None)
def _generate_fn(cfg: ModelConfig, max_new_tokens: int, cache_size: int, temperature: float,
                 top_k: int, top_p: float, stop_ids: tuple[int, ...], cache_sharding=None):
  stops = jnp.asarray(stop_ids or (-1,), jnp.int32)

  @jax.jit
  def fn(params, tokens, lengths, rng):
    b = tokens.shape[0]
    cache = decoder.init_cache(cfg, b, cache_size)
    if cache_sharding is not None:
      cache = cache.map_layers(lambda a: jax.lax.with_sharding_constraint(a, cache_sharding))
    logits, cache = prefill_chunk(params, cfg, cache, tokens, lengths, jnp.zeros_like(lengths))
    rng, sub = jax.random.split(rng)
    tok, _ = sample_token(logits, sub, temperature, top_k, top_p)
    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(tok)
    done = jnp.isin(tok, stops) | (max_new_tokens <= 1)
    state = _GenState(cache, tok, lengths, out, jnp.ones_like(lengths), done, rng, jnp.int32(1))

    def cond(s):
      return (s.step < max_new_tokens) & ~jnp.all(s.done)

    def body(s):
      logits, cache = decode_step(params, cfg, s.cache, s.token, s.position)
      rng, sub = jax.random.split(s.rng)
      tok, _ = sample_token(logits, sub, temperature, top_k, top_p)
      tok = jnp.where(s.done, 0, tok)
      out = s.out.at[:, s.step].set(tok)
      count = s.count + (~s.done).astype(jnp.int32)
      done = s.done | jnp.isin(tok, stops) | (count >= max_new_tokens)
      return _GenState(cache, tok, s.position + 1, out, count, done, rng, s.step + 1)

    s = jax.lax.while_loop(cond, body, state)
    return s.out, s.count
  return fn


def _decode_params(model):
  """`packing.decode_params(model.params)`, kept on the model for as long as its params are
  the same arrays, so that repeated calls do not unstack and repack the weights again (0.4 s
  a call for SmolLM2-135M on CPU). The packed copy then lives as long as the model does, as
  the rollout's does for a rollout."""
  leaves, tree = jax.tree_util.tree_flatten(model.params)
  kept = model.__dict__.get("_decode_params")
  if kept is not None and kept[0] == tree and all(a is b for a, b in zip(kept[1], leaves)):
    return kept[2]
  out = packing.decode_params(model.params)
  model.__dict__["_decode_params"] = (tree, leaves, out)
  return out


def generate_ids(model, prompt_ids: list[list[int]], *, max_new_tokens: int = 64,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 stop_ids=None, seed: int = 0) -> list[list[int]]:
  """Generate from token-id prompts. Returns the new ids per row (stop token included)."""
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
    raise ValueError("every prompt must contain at least one token")
  cfg = model.config
  n = len(prompt_ids)
  rows = n + (-n) % sharding.batch_divisor(model.mesh)
  width = bucket(max(len(p) for p in prompt_ids))
  cache_size = bucket(width + max_new_tokens, 64)
  if cache_size > cfg.max_position_embeddings:
    raise ValueError(f"prompt ({width}) + max_new_tokens ({max_new_tokens}) exceeds the "
                     f"model's context {cfg.max_position_embeddings}")
  tokens = np.zeros((rows, width), np.int32)
  lengths = np.ones((rows,), np.int32)
  for i, p in enumerate(prompt_ids):
    tokens[i, :len(p)] = p
    lengths[i] = len(p)
  if stop_ids is None:
    stop_ids = model.tokenizer.eos_ids if model.tokenizer is not None else ()
  cache_shard = None
  tokens, lengths = jnp.asarray(tokens), jnp.asarray(lengths)
  if model.mesh is not None:
    cache_shape = (rows, cache_size, cfg.num_kv_heads, cfg.head_dim)
    cache_shard = sharding.cache_sharding(model.mesh, cache_shape)
    tokens = jax.device_put(tokens, sharding.batch_sharding(model.mesh, 2))
    lengths = jax.device_put(lengths, sharding.batch_sharding(model.mesh, 1))
  fn = _generate_fn(cfg, max_new_tokens, cache_size, float(temperature), int(top_k),
                    float(top_p), tuple(int(s) for s in stop_ids), cache_shard)
  out, count = fn(_decode_params(model), tokens, lengths, jax.random.PRNGKey(seed))
  out, count = np.asarray(out), np.asarray(count)
  return [out[i, :count[i]].tolist() for i in range(n)]


def generate(model, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, chat: bool = True, system: str | None = None,
             stop_ids=None, seed: int = 0) -> list[str]:
  """Generate text for each prompt (wrapped in the chat template when `chat`)."""
  tok = model.tokenizer
  if tok is None:
    raise ValueError(f"model {model.name!r} has no tokenizer; use generate_ids")
  if isinstance(prompts, str):
    prompts = [prompts]
  ids = []
  for p in prompts:
    if chat:
      msgs = ([{"role": "system", "content": system}] if system else []) + [
          {"role": "user", "content": p}]
      ids.append(tok.encode_chat(msgs))
    else:
      ids.append(tok.encode(p))
  outs = generate_ids(model, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_k=top_k, top_p=top_p, stop_ids=stop_ids, seed=seed)
  return [tok.decode([t for t in o if t not in tok.eos_ids], skip_special_tokens=False)
          for o in outs]
