"""Token sampling: greedy, temperature, top-k and top-p, returning the sampler's log-probs."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_token(logits, rng, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Sample one token per row.

  logits: float32[B, V]. temperature == 0 means greedy. top_k == 0 / top_p == 1 disable
  those filters. Returns (ids int32[B], logprobs float32[B]) where logprobs is
  log softmax(logits / temperature) at the chosen id (log softmax(logits) when greedy),
  i.e. the policy's log-probability before any top-k/top-p truncation, which is what
  a teacher-forced forward pass reproduces.
  """
  logits = logits.astype(jnp.float32)
  if temperature == 0.0:
    ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    lp = jax.nn.log_softmax(logits, axis=-1)
    return ids, jnp.take_along_axis(lp, ids[:, None], axis=-1)[:, 0]
  scaled = logits / temperature
  filtered = scaled
  if top_k and top_k > 0:
    kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
    filtered = jnp.where(scaled < kth, -jnp.inf, filtered)
  if top_p < 1.0:
    sorted_logits = jnp.sort(filtered, axis=-1)[:, ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    cutoff_idx = jnp.sum(cum < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
    filtered = jnp.where(filtered < cutoff, -jnp.inf, filtered)
  ids = jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)
  lp = jax.nn.log_softmax(scaled, axis=-1)
  return ids, jnp.take_along_axis(lp, ids[:, None], axis=-1)[:, 0]
