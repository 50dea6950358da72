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
  the trainer's teacher-forced pass at the same temperature reproduces
  (`rl.step.scoring_temperature`).
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
  u = jax.random.uniform(rng, filtered.shape[:-1])
  ids = categorical_icdf(filtered, u)
  lp = jax.nn.log_softmax(scaled, axis=-1)
  return ids, jnp.take_along_axis(lp, ids[:, None], axis=-1)[:, 0]


def categorical_icdf(logits, u):
  """One draw per row from softmax(logits) by inverting its CDF at u (float32[...], in
  [0, 1)): one uniform a row, where the Gumbel-max trick (`jax.random.categorical`) needs
  one a vocabulary entry; on a CPU, generating those was most of a sampled decode step's
  sampling cost. Entries at -inf (top-k / top-p) are never drawn.

  logits: float32[..., V]. Returns int32[...].
  """
  p = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  cdf = jnp.cumsum(p, axis=-1)
  x = u[..., None] * cdf[..., -1:]
  # the first entry whose CDF exceeds x; it has p > 0 since the CDF rises there. x can
  # round up to the total, so cap at the last entry with p > 0.
  ids = jnp.sum(cdf <= x, axis=-1)
  last = logits.shape[-1] - 1 - jnp.argmax((p > 0)[..., ::-1], axis=-1)
  return jnp.minimum(ids, last).astype(jnp.int32)


def row_keys(rng, rows, positions):
  """One key per row from (rng, row index, buffer position): a row's draw at a position
  does not depend on how many loop steps other rows took (e.g. while waiting on a helper).

  rng: a PRNG key; rows, positions: int32[B]. Returns a [B] batch of keys.
  """
  return jax.vmap(lambda r, p: jax.random.fold_in(jax.random.fold_in(rng, r), p))(rows, positions)


def sample_token_rows(logits, keys, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """`sample_token` with a key per row (keys: a [B] batch of keys, e.g. from `row_keys`)."""
  def one(row_logits, key):
    ids, lp = sample_token(row_logits[None], key, temperature, top_k, top_p)
    return ids[0], lp[0]
  return jax.vmap(one)(logits, keys)
