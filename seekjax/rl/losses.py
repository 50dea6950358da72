"""Policy-gradient losses as small pure functions: PPO-clip, KL estimators, masked reductions.

Alignment convention (shared with `seekjax.rl.step.token_logprobs_and_entropy`):
`logprobs[b, t]` is log p(tokens[b, t] | tokens[b, <t]); masks mark the tokens the SLM
sampled, so feedback and prompt tokens never get gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum(x, mask, axis=None):
  """Sum of x where mask is 1. x, mask: [B, T]."""
  return jnp.sum(x * mask, axis=axis)


def masked_mean(x, mask, axis=None):
  """Mean of x where mask is 1 (0 when the mask is empty). x, mask: [B, T]."""
  return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def _token_mean(per_token, mask):
  return masked_mean(per_token, mask)


def _seq_mean_token_mean(per_token, mask):
  seq = masked_mean(per_token, mask, axis=1)
  has = (jnp.sum(mask, axis=1) > 0).astype(per_token.dtype)
  return jnp.sum(seq * has) / jnp.maximum(jnp.sum(has), 1.0)


def _seq_mean_token_sum(per_token, mask):
  seq = masked_sum(per_token, mask, axis=1)
  return jnp.mean(seq)


AGGREGATIONS = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
}


def aggregate(per_token, mask, aggregation: str):
  """Reduce a float32[B, T] per-token loss to a scalar by the named rule."""
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"unknown loss aggregation {aggregation!r}; valid: {sorted(AGGREGATIONS)}")
  return AGGREGATIONS[aggregation](per_token, mask)


def policy_loss(logprobs, old_logprobs, advantages, mask, *, epsilon: float,
                epsilon_high: float | None = None, aggregation: str = "token-mean",
                tis_cap: float | None = None, sampler_logprobs=None):
  """PPO-clip surrogate (to minimise).

  logprobs: float32[B, T] current policy; old_logprobs: float32[B, T] behaviour policy;
  advantages: float32[B] (one per sequence, broadcast over tokens); mask: [B, T].
  ratio = exp(logprobs - old_logprobs) is clipped to [1 - epsilon, 1 + epsilon_high].
  With `tis_cap` and `sampler_logprobs`, each token is reweighted by the truncated
  importance weight min(exp(old - sampler), tis_cap) (no gradient), correcting for a
  sampler whose log-probs differ from the trainer's.
  Returns (scalar loss, metrics).
  """
  eps_hi = epsilon if epsilon_high is None else epsilon_high
  mask = mask.astype(jnp.float32)
  adv = advantages[:, None].astype(jnp.float32)
  log_ratio = logprobs - jax.lax.stop_gradient(old_logprobs)
  ratio = jnp.exp(log_ratio)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - epsilon, 1.0 + eps_hi)
  per_token = jnp.maximum(unclipped, clipped)
  if tis_cap is not None and sampler_logprobs is not None:
    w = jnp.minimum(jnp.exp(old_logprobs - sampler_logprobs), tis_cap)
    per_token = per_token * jax.lax.stop_gradient(w)
  loss = aggregate(per_token, mask, aggregation)
  clip_frac = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
  metrics = dict(clip_fraction=clip_frac, ratio_mean=masked_mean(ratio, mask),
                 ratio_max=jnp.max(jnp.where(mask > 0, ratio, 0.0)))
  return loss, metrics


def kl_divergence(logprobs, ref_logprobs, method: str):
  """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

  k1 = lp - ref (unbiased, can be negative); k2 = (lp - ref)^2 / 2;
  k3 = exp(ref - lp) - (ref - lp) - 1 (unbiased, non-negative, low variance).
  No default: the config must name the estimator. Returns float32[B, T].
  """
  d = logprobs - ref_logprobs
  if method == "k1":
    return d
  if method == "k2":
    return 0.5 * d * d
  if method == "k3":
    return jnp.exp(-d) + d - 1.0
  raise ValueError(f"unknown KL estimator {method!r}; valid: k1, k2, k3")


def kl_loss(logprobs, ref_logprobs, mask, *, beta: float, method: str,
            aggregation: str = "token-mean"):
  """beta * aggregated KL estimate (the KL-in-the-loss variant). Returns a scalar."""
  return beta * aggregate(kl_divergence(logprobs, ref_logprobs, method), mask, aggregation)


def kl_in_reward(logprobs, ref_logprobs, mask, *, method: str):
  """Per-sequence summed KL estimate, float32[B], to subtract (times beta) from rewards."""
  return masked_sum(kl_divergence(logprobs, ref_logprobs, method), mask, axis=1)


def entropy_from_logits(logits, mask):
  """Mean entropy of the next-token distributions at masked positions. logits: [B, T, V]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  return masked_mean(ent, mask)
