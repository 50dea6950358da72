"""Attention over a sequence (`attention`, `causal_attention`) and over a KV cache's
window of slots (`cached_attention`, `attention_windows`): the decoder's attention forms.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from seekjax.models import cpu_attention

MASK_VALUE = -1e30


def attention_windows(size: int, smallest: int = 64) -> tuple[int, ...]:
  """Static attention windows for a cache of `size` slots: 64, 96, 128, 192, ..., size.

  Each step attends over the smallest window that covers every row's position, so a
  decode step's attention costs the live length (within 1.5x), not the allocated size.
  """
  out, w = [], smallest
  while w < size:
    out.append(w)
    if w + w // 2 < size and (w // 2) % 32 == 0:
      out.append(w + w // 2)
    w *= 2
  return tuple(sorted(set(out))) + (size,)


def attention(q, k, v, mask):
  """Grouped-query attention.

  q: [B, T, H, hd], k, v: [B, S, K, hd], mask: bool[B, T, S] -> [B, T, H*hd].
  """
  b, t, h, hd = q.shape
  kv_heads = k.shape[2]
  # the 1/sqrt(hd) scale on q ([B, T, H, hd]), not on the [B, K, G, T, S] scores: one
  # pass less over the scores, forward and backward
  q = (q * jnp.asarray(1.0 / math.sqrt(hd), q.dtype)).reshape(
      b, t, kv_heads, h // kv_heads, hd)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(mask[:, None, None, :, :], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h * hd).astype(q.dtype)


def query_blocks(t: int, smallest: int = 128, most: int = 4) -> tuple[int, ...]:
  """Static query-block bounds (0, ..., t) for causal attention over t tokens: as many
  blocks of at least `smallest` tokens as fit, at most `most`, bounds multiples of 8.

  Block i attends only to keys before its end, so n blocks compute (n + 1) / 2n of the
  T x T scores (0.625 at 4), forward and backward.
  """
  n = max(1, min(most, t // smallest))
  return tuple(i * t // n // 8 * 8 for i in range(n)) + (t,)


def causal_attention(q, k, v, positions):
  """Self-attention of a sequence over itself, in query blocks (`query_blocks`) that skip
  the keys after the block's end: q [B, T, H, hd], k, v [B, T, K, hd], positions int32[B, T]
  that strictly increase along every row (so a key after a query is masked for it) ->
  [B, T, H*hd], equal to `attention` with the mask positions[k] <= positions[q].
  """
  bounds = query_blocks(q.shape[1])
  outs = []
  for start, end in zip(bounds[:-1], bounds[1:]):
    mask = positions[:, None, :end] <= positions[:, start:end, None]  # [B, end-start, end]
    outs.append(attention(q[:, start:end], k[:, :end], v[:, :end], mask))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def window_index(windows, positions):
  """Index of the smallest window that covers max(positions) + 1 (int32 scalar)."""
  return jnp.sum(jnp.asarray(windows[:-1]) <= jnp.max(positions)).astype(jnp.int32)


def cached_attention(q, k_buf, v_buf, positions, windows, index):
  """Attention of q [B, T, H, hd] at positions [B, T] over a per-layer cache [B, S, K, hd].

  Reads only window `windows[index]` (see `window_index`); the slots left out are all
  masked, so the result equals attending over all S slots. On a CPU backend the call goes
  to `cpu_attention.cached_attention`, which reads each row's live slots in place: for the
  decode step's single query XLA's slice-and-dot form runs at a fraction of the memory
  bandwidth, and for a prefill or an append the kernel needs no window branches (a
  `lax.switch` of 8 in every layer, which most of those programs' size and load time
  was). The result is the same up to float rounding. Several queries a row take the
  kernel on a single device only: prefill and appends run outside the decode loop's
  `shard_map`, and an FFI call has no rule to split its rows over a mesh (XLA would
  gather them onto every device).
  """
  if (jax.default_backend() == "cpu" and (q.shape[1] == 1 or jax.device_count() == 1)
      and cpu_attention.usable(q, k_buf)):
    return cpu_attention.cached_attention(q, k_buf, v_buf, positions).astype(q.dtype)
  if len(windows) == 1:
    return _window_attention(windows[0])(q, k_buf, v_buf, positions)
  return jax.lax.switch(index, [_window_attention(w) for w in windows], q, k_buf, v_buf,
                        positions)


@functools.lru_cache(maxsize=None)
def _window_attention(w: int):
  """Attention over the first `w` slots of a cache, as one function per `w`: the same
  branch callables for every layer, so `lax.switch` traces each window once per program,
  not once per layer (tracing them per layer was most of a prefill's or append's trace)."""
  def over(q, k_buf, v_buf, positions):
    mask = jnp.arange(w)[None, None, :] <= positions[:, :, None]
    return attention(q, k_buf[:, :w], v_buf[:, :w], mask)
  return over
