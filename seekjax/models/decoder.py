"""The decoder forward pass: pure functions over a params pytree, with an optional KV cache.

Params layout (layers stacked on a leading axis so the layer loop is one `lax.scan`):

  params = {
    "embed":      [V, D],
    "final_norm": [D],
    "lm_head":    [D, V]            (only when embeddings are untied),
    "layers": {
      "attn_norm": [L, D], "mlp_norm": [L, D],
      "q": [L, D, H*hd], "k": [L, D, K*hd], "v": [L, D, K*hd], "o": [L, H*hd, D],
      "q_bias": [L, H*hd], "k_bias": [L, K*hd], "v_bias": [L, K*hd]   (qwen2),
      "q_norm": [L, hd], "k_norm": [L, hd]                            (qwen3),
      "gate": [L, D, F], "up": [L, D, F], "down": [L, F, D],
    },
  }

Positions are absolute slot indices. With a cache, a token at position p is written to
cache slot p of its row and attends to every slot <= p of that row, so rows at different
offsets share one batch, and appending a chunk at a per-row offset is the same code path
as prefill. Rows must be contiguous (no holes): the engine guarantees it.

Two layer loops. Without a cache (training, teacher forcing) the stacked layers run as one
`lax.scan`. With a cache (prefill and decode) the loop is unrolled over per-layer cache
buffers, and the weights are best given per layer too, packed for the CPU matmul kernel
where it pays (`packing.decode_params`; `_dense` then runs a single-token step's matmuls
there). Cached attention reads only the live slots: on a CPU the kernel reads each row's
own, elsewhere XLA's form reads the smallest window of slots that covers the batch's
furthest position (`attention.attention_windows`), so a decode step costs what the live
length needs, not what the buffer allocates. The attention forms live in
`seekjax/models/attention.py`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from seekjax.models import attention as attn, cpu_matmul, packing
from seekjax.models.config import ModelConfig


@struct.dataclass
class KVCache:
  """Per-layer keys and values: k, v are tuples of L arrays dtype[B, S, K, hd].

  One buffer per layer (not one stacked [L, ...] array) so that a decode step updates
  and reads each layer's buffer in place instead of slicing it out of a stack.
  """

  k: tuple
  v: tuple

  @property
  def size(self) -> int:
    return self.k[0].shape[1]

  def map_layers(self, fn) -> "KVCache":
    """Apply fn to every per-layer buffer (e.g. repeat rows, constrain a sharding)."""
    return KVCache(k=tuple(fn(a) for a in self.k), v=tuple(fn(a) for a in self.v))


def init_cache(cfg: ModelConfig, batch: int, size: int, dtype=None) -> KVCache:
  """An empty cache: KVCache with L per-layer buffers k, v: [batch, size, K, hd]."""
  shape = (batch, size, cfg.num_kv_heads, cfg.head_dim)
  dtype = dtype or cfg.jnp_dtype
  return KVCache(k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
                 v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)))


def _dense(x, lp, name):
  """x @ lp[name]: by the CPU matmul kernel for a single token per row when
  `packing.decode_params` packed the weight, else XLA's dot."""
  packed = lp.get("packed")
  if packed is not None and x.shape[1] == 1 and cpu_matmul.usable(x, packed[name]):
    return cpu_matmul.packed_matmul(x, packed[name]).astype(x.dtype)
  return x @ lp[name]


def rms_norm(x, weight, eps):
  """x: [..., D], weight: [D] -> [..., D] (computed in float32, cast back)."""
  xf = x.astype(jnp.float32)
  xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return (xf * weight.astype(jnp.float32)).astype(x.dtype)


def rope(x, positions, theta):
  """Rotary embedding, rotate-half convention. x: [B, T, N, hd], positions: int32[B, T]."""
  hd = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., : hd // 2], xf[..., hd // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _project(cfg, lp, x, positions, name):
  """x [B, T, D] -> projection `name` ("q", "k" or "v") as heads [B, T, N, hd], with the
  model's bias, and for q and k its norm and RoPE."""
  b, t, _ = x.shape
  y = _dense(x, lp, name)
  if cfg.qkv_bias:
    y = y + lp[f"{name}_bias"]
  y = y.reshape(b, t, cfg.num_heads if name == "q" else cfg.num_kv_heads, cfg.head_dim)
  if name == "v":
    return y
  if cfg.qk_norm:
    y = rms_norm(y, lp[f"{name}_norm"], cfg.rms_norm_eps)
  return rope(y, positions, cfg.rope_theta)


def _project_qkv(cfg, lp, x, positions):
  """x: [B, T, D] -> q [B, T, H, hd], k, v [B, T, K, hd] with RoPE applied to q, k."""
  return tuple(_project(cfg, lp, x, positions, name) for name in ("q", "k", "v"))


def _mlp(lp, x):
  return _dense(jax.nn.silu(_dense(x, lp, "gate")) * _dense(x, lp, "up"), lp, "down")


def _write_rows(buf, new, positions):
  """Scatter new [B, T, K, hd] into buf [B, S, K, hd] at per-row slots positions[B, T].

  Slots past the end of the buffer are dropped (never clamped onto valid slots).
  """
  rows = jnp.arange(buf.shape[0])[:, None]
  return buf.at[rows, positions].set(new.astype(buf.dtype), mode="drop")


def forward(params, cfg: ModelConfig, tokens, positions, *, cache: KVCache | None = None,
            key_mask=None, remat: bool = False, return_hidden: bool = False):
  """Run the decoder and the LM head. See `hidden_states` for the arguments.

  Returns:
    (logits float32[B, T, V], new cache or None[, hidden [B, T, D]]).
  """
  x, new_cache = hidden_states(params, cfg, tokens, positions, cache=cache, key_mask=key_mask,
                               remat=remat)
  logits = lm_head(params, cfg, x)
  if return_hidden:
    return logits, new_cache, x
  return logits, new_cache


def lm_head(params, cfg: ModelConfig, x):
  """x: [B, T, D] (final-normed) -> float32[B, T, V]."""
  packed = params.get("head_packed")
  if packed is not None and x.shape[1] == 1 and cpu_matmul.usable(x, packed):
    return cpu_matmul.packed_matmul(x, packed)
  return jnp.einsum("btd,dv->btv", x, head_weights(params, cfg).astype(x.dtype),
                    preferred_element_type=jnp.float32)


def head_weights(params, cfg: ModelConfig):
  """The LM head as a [D, V] matrix (the embedding's transpose when they are tied)."""
  return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


def hidden_states(params, cfg: ModelConfig, tokens, positions, *, cache: KVCache | None = None,
                  key_mask=None, remat: bool = False, inputs=None, final_norm: bool = True,
                  capture: int | None = None, causal: bool = False):
  """Run the decoder stack up to the final norm.

  Args:
    params: the params pytree (module docstring).
    tokens: int32[B, T].
    positions: int32[B, T] absolute positions (= cache slots when a cache is given).
    cache: optional KVCache (L buffers [B, S, K, hd]). When given, the new keys/values are
      written at `positions` and every token attends to slots <= its position of its row.
    key_mask: optional bool[B, T] (no-cache mode only): False marks padding keys.
    remat: rematerialise each layer in the backward pass (saves activation memory).
    inputs: optional residual stream [B, T, D] to start from instead of embedding
      `tokens` (runs only `params["layers"]` on top of earlier layers' output).
    final_norm: apply the final RMSNorm (False returns the raw residual stream).
    capture: optional layer count c (cache mode only): also return the residual stream
      after the first c layers, as the remaining layers receive it (the rollout keeps it
      so that top_n training need not run the frozen bottom layers again).
    causal: (no-cache mode, no key_mask) the caller guarantees that positions strictly
      increase along every row, as arange(T) does; attention then runs in query blocks
      that skip the keys no query of the block sees (`attention.causal_attention`).

  Returns:
    (hidden [B, T, D], new cache or None), plus captured [B, T, D] when `capture` is set.
  """
  if causal and (cache is not None or key_mask is not None):
    raise ValueError("causal=True is for the no-cache pass without a key_mask (positions "
                     "that strictly increase along each row)")
  dtype = cfg.jnp_dtype
  x = params["embed"][tokens].astype(dtype) if inputs is None else inputs.astype(dtype)
  if capture is not None:
    if cache is None:
      raise ValueError("capture needs a cache (it is the rollout's cached layer loop)")
    x, cache, captured = _cached_layers(params, cfg, x, positions, cache, remat, capture)
    if final_norm:
      x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    return x, cache, captured
  if cache is not None:
    x, cache, _ = _cached_layers(params, cfg, x, positions, cache, remat)
  elif isinstance(params["layers"], (list, tuple)):
    layer = _layer_fn(cfg, positions, key_mask, remat, causal)
    for lp in params["layers"]:
      x = layer(x, lp)
  else:
    layer = _layer_fn(cfg, positions, key_mask, remat, causal)
    x, _ = jax.lax.scan(lambda x, lp: (layer(x, lp), None), x, params["layers"])
  if final_norm:
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
  return x, cache


def hidden_states_at(params, cfg: ModelConfig, tokens, positions, at, *, key_mask=None,
                     remat: bool = False, inputs=None, causal: bool = False):
  """`hidden_states` without a cache, read only at `at`: int32[B, K] indices into T ->
  the final-normed hidden states there, [B, K, D].

  Every layer but the last runs over all T tokens; the last computes keys and values for
  all of them but its query, attention output and MLP only at `at`, which is all that a
  loss over K of the T positions reads (the teacher-forced log-probs of the update and the
  reference pass). Equal to `hidden_states(...)` gathered at `at`, to float rounding.
  `causal` as in `hidden_states`, for the layers below the last.
  """
  layers = params["layers"]
  if isinstance(layers, (list, tuple)):
    lower, last = tuple(layers[:-1]), layers[-1]
  else:
    lower, last = jax.tree.map(lambda a: a[:-1], layers), jax.tree.map(lambda a: a[-1], layers)
  x, _ = hidden_states(dict(params, layers=lower), cfg, tokens, positions, key_mask=key_mask,
                       remat=remat, inputs=inputs, final_norm=False, causal=causal)
  at_positions = jnp.take_along_axis(positions, at, axis=1)
  mask = positions[:, None, :] <= at_positions[:, :, None]  # [B, K(q), T(k)]
  if key_mask is not None:
    mask = mask & key_mask[:, None, :]
  gather = lambda y: jnp.take_along_axis(y, at[..., None], axis=1)  # noqa: E731

  def layer(x, lp):
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    k = _project(cfg, lp, h, positions, "k")
    v = _project(cfg, lp, h, positions, "v")
    q = _project(cfg, lp, gather(h), at_positions, "q")
    x = gather(x) + attn.attention(q, k, v, mask) @ lp["o"]
    return x + _mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps))
  layer = jax.checkpoint(layer, prevent_cse=False) if remat else layer
  return rms_norm(layer(x, last), params["final_norm"], cfg.rms_norm_eps)


def _layer_fn(cfg, positions, key_mask, remat, causal=False):
  """One decoder layer without a cache: (x [B, T, D], layer params) -> x. With `causal`
  (see `hidden_states`), attention in query blocks (`attention.causal_attention`)."""
  if causal:
    attend = lambda q, k, v: attn.causal_attention(q, k, v, positions)  # noqa: E731
  else:
    mask = positions[:, None, :] <= positions[:, :, None]  # [B, T(q), T(k)]
    if key_mask is not None:
      mask = mask & key_mask[:, None, :]
    attend = lambda q, k, v: attn.attention(q, k, v, mask)  # noqa: E731

  def layer(x, lp):
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _project_qkv(cfg, lp, h, positions)
    x = x + attend(q, k, v) @ lp["o"]
    return x + _mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps))
  return jax.checkpoint(layer, prevent_cse=False) if remat else layer


def _cached_layers(params, cfg, x, positions, cache, remat, capture=None):
  """The layer loop with a cache, unrolled: writes and reads each layer's own buffers.

  Returns (x, new cache, the residual after `capture` layers or None).
  """
  layer_params = packing.layer_list(params)
  if capture is not None and not 0 <= capture <= len(layer_params):
    raise ValueError(f"capture={capture} must be in [0, {len(layer_params)}] (layers)")
  windows = attn.attention_windows(cache.size)
  index = attn.window_index(windows, positions)

  def layer(x, lp, k_buf, v_buf):
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _project_qkv(cfg, lp, h, positions)
    k_buf = _write_rows(k_buf, k, positions)
    v_buf = _write_rows(v_buf, v, positions)
    x = x + _dense(attn.cached_attention(q, k_buf, v_buf, positions, windows, index), lp, "o")
    x = x + _mlp(lp, rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps))
    return x, k_buf, v_buf

  if remat:
    layer = jax.checkpoint(layer, prevent_cse=False)
  ks, vs = [], []
  captured = x if capture == 0 else None
  for i, lp in enumerate(layer_params):
    x, k_buf, v_buf = layer(x, lp, cache.k[i], cache.v[i])
    ks.append(k_buf)
    vs.append(v_buf)
    if capture == i + 1:
      captured = x
  return x, KVCache(k=tuple(ks), v=tuple(vs)), captured


def positions_from_mask(attention_mask):
  """int32[B, T] positions for a (left- or right-) padded batch: running count of real tokens."""
  m = attention_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=1) - 1, 0)


def init_params(cfg: ModelConfig, rng, scale: float = 0.02):
  """Random params (for tests and GPU checks). Returns the params pytree."""
  d, f, h, kv, hd, l = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads,
                        cfg.num_kv_heads, cfg.head_dim, cfg.num_layers)
  shapes = {
      "q": (l, d, h * hd), "k": (l, d, kv * hd), "v": (l, d, kv * hd), "o": (l, h * hd, d),
      "gate": (l, d, f), "up": (l, d, f), "down": (l, f, d),
  }
  keys = jax.random.split(rng, len(shapes) + 2)
  dtype = cfg.jnp_dtype
  layers = {name: (scale * jax.random.normal(k, s)).astype(dtype)
            for (name, s), k in zip(shapes.items(), keys)}
  layers["attn_norm"] = jnp.ones((l, d), dtype)
  layers["mlp_norm"] = jnp.ones((l, d), dtype)
  if cfg.qkv_bias:
    layers["q_bias"] = jnp.zeros((l, h * hd), dtype)
    layers["k_bias"] = jnp.zeros((l, kv * hd), dtype)
    layers["v_bias"] = jnp.zeros((l, kv * hd), dtype)
  if cfg.qk_norm:
    layers["q_norm"] = jnp.ones((l, hd), dtype)
    layers["k_norm"] = jnp.ones((l, hd), dtype)
  params = {
      "embed": (scale * jax.random.normal(keys[-2], (cfg.vocab_size, d))).astype(dtype),
      "final_norm": jnp.ones((d,), dtype),
      "layers": layers,
  }
  if not cfg.tie_embeddings:
    params["lm_head"] = (scale * jax.random.normal(keys[-1], (d, cfg.vocab_size))).astype(dtype)
  return params


def param_shapes(cfg: ModelConfig) -> dict:
  """The expected shape of every leaf, as a flat {"layers/q": (L, D, H*hd), ...} dict."""
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
