"""Policy-gradient losses as small pure functions: PPO-clip, KL estimators, masked reductions.

Alignment convention, used by every function here and by the trainer:
  `logprobs[b, t] = log p(tokens[b, t] | tokens[b, :t])`, a float32[B, T] aligned with
  `tokens`. Position 0 is 0 (nothing predicts the first token); the trainer reads them
  off the LM head at the states that predict each token (`head_logprobs_and_entropy`, via
  `step.token_logprobs_and_entropy`), or `logprobs_and_entropy` off given logits.
Masks are float32[B, T] (bool/int accepted) aligned the same way: 1 on tokens the SLM
sampled, 0 on prompt, feedback and padding. A masked position never contributes to a
loss value or a gradient, even if its inputs are inf or NaN.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

# ----------------------------------------------------------------------------- reductions


def _as_mask(mask):
  return jnp.asarray(mask).astype(jnp.float32)


def masked_sum(x, mask, axis=None):
  """Sum of x * mask over `axis` (all axes if None); masked entries never leak inf/NaN.

  x: float32[B, T]; mask: [B, T] (0/1 or weights). Returns a scalar or the reduced array.
  """
  mask = _as_mask(mask)
  return jnp.sum(jnp.where(mask > 0, x * mask, 0.0), axis=axis)


def masked_mean(x, mask, axis=None):
  """Weighted mean of x where mask > 0; 0 where the mask is empty.

  x: float32[B, T]; mask: [B, T]. Returns a scalar or the reduced array.
  """
  mask = _as_mask(mask)
  return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1e-8)


# ----------------------------------------------------------------------------- aggregation

# name -> fn(per_token float32[B, T], mask float32[B, T]) -> scalar
AGGREGATIONS: dict[str, Callable] = {}


def register_aggregation(name: str):
  """Decorator: registers a rule `fn(per_token, mask) -> scalar` under `name`."""
  def deco(fn):
    AGGREGATIONS[name] = fn
    return fn
  return deco


def _row_present(mask):
  """float32[B]: 1 for rows with at least one unmasked token."""
  return (jnp.sum(mask, axis=1) > 0).astype(jnp.float32)


@register_aggregation("token-mean")
def _token_mean(per_token, mask):
  """Mean over every unmasked token of the batch (long episodes weigh more)."""
  return masked_mean(per_token, mask)


@register_aggregation("seq-mean-token-mean")
def _seq_mean_token_mean(per_token, mask):
  """Mean over episodes of each episode's token mean (the original GRPO)."""
  seq = masked_mean(per_token, mask, axis=1)
  present = _row_present(mask)
  return jnp.sum(seq * present) / jnp.maximum(jnp.sum(present), 1.0)


@register_aggregation("seq-mean-token-sum")
def _seq_mean_token_sum(per_token, mask):
  """Mean over episodes of each episode's token sum (no length normalisation)."""
  seq = masked_sum(per_token, mask, axis=1)
  present = _row_present(mask)
  return jnp.sum(seq * present) / jnp.maximum(jnp.sum(present), 1.0)


def aggregate(per_token, mask, aggregation: str):
  """Reduce per_token float32[B, T] under mask [B, T] to a scalar by the named rule.

  Episodes whose mask is empty are not counted in the sequence-level means.
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"unknown loss aggregation {aggregation!r}; valid: "
                     f"{', '.join(sorted(AGGREGATIONS))}")
  return AGGREGATIONS[aggregation](per_token, _as_mask(mask))


# ----------------------------------------------------------------------------- log-probs


def logprobs_and_entropy(logits, ids, temperature: float = 1.0):
  """Log-probabilities of `ids` and the entropy of the distributions they were drawn from.

  logits: float[B, K, V], where logits[:, k] is the prediction for ids[:, k] (the trainer
  passes the LM head's output at the positions before its loss targets); ids: int32[B, K].
  temperature: the distribution is softmax(logits / temperature), the one a sampler at
  that temperature drew from (`models.sampling.sample_token`).
  Returns (logprobs float32[B, K], entropy float32[B, K]).

  Written as logit[id] - logsumexp and entropy = logsumexp - E_p[logit] from one exp of
  the shifted logits, rather than gathering from a materialised log_softmax: the same
  values (to float32 rounding), but the LM head's forward and backward make fewer passes
  over the [B, K, V] logits, which are most of an update step's memory traffic
  (BENCHMARKS.md, "the head's softmax"). The max shift carries no gradient; the
  function does not depend on it.
  """
  logits = logits.astype(jnp.float32)
  if temperature != 1.0:
    logits = logits / temperature
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  e = jnp.exp(logits - shift)
  total = jnp.sum(e, axis=-1)
  lse = jnp.log(total) + shift[..., 0]
  target = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
  # E_p[logit] as a contraction, not a multiply-reduce: XLA:CPU runs the reduce over V far
  # slower inside the update step (BENCHMARKS.md, "the update's entropy")
  expected = jnp.einsum("...v,...v->...", e, logits, preferred_element_type=jnp.float32)
  return target - lse, lse - expected / total


def head_logprobs_and_entropy(x, head, ids, temperature: float = 1.0):
  """`logprobs_and_entropy` of the LM head's logits x @ head, without a second pass over
  them for the entropy, and with a backward pass that never forms the [..., V] gradient of
  the logits unless `head` itself is differentiated.

  x: [..., D] the final-normed states; head: [D, V] (`decoder.head_weights`); ids: int32[...].
  Returns (logprobs float32[...], entropy float32[...]); the entropy carries no gradient
  (it is a metric; `stop_gradient` makes that explicit).

  With p = softmax(x @ head / T), the expected logit is x . (p @ head^T), so one [V x D]
  matmul of p gives both the entropy (lse - x . (p @ head^T) / T) and the gradient with
  respect to x, (head[:, id] - p @ head^T) * g / T: the matmul the backward pass would
  otherwise run on the logits' gradient, done once in the forward pass. The residuals are
  [..., D] where autodiff would keep [..., V]. The head's gradient is computed too (it
  needs p again); the trainer uses this function where the head is frozen (top_n, LoRA:
  `step._head_logprobs`), so that part is dead code and XLA drops it.
  """
  lp, ent = _head_lp_ent(x, head, ids, float(temperature))
  return lp, jax.lax.stop_gradient(ent)


def _head_logits(x, head, temperature):
  return jnp.einsum("...d,dv->...v", x, head.astype(x.dtype),
                    preferred_element_type=jnp.float32) / temperature


def _head_forward(x, head, ids, temperature):
  logits = _head_logits(x, head, temperature)
  shift = jnp.max(logits, axis=-1, keepdims=True)   # never differentiated: custom_vjp
  e = jnp.exp(logits - shift)
  total = jnp.sum(e, axis=-1, keepdims=True)
  lse = jnp.log(total) + shift
  target = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
  p = (e / total).astype(x.dtype)
  p_head = jnp.einsum("...v,dv->...d", p, head.astype(x.dtype),
                      preferred_element_type=jnp.float32)   # E_p[head column], [..., D]
  expected = jnp.sum(x.astype(jnp.float32) * p_head, axis=-1) / temperature
  return target - lse[..., 0], lse[..., 0] - expected, (p_head, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _head_lp_ent(x, head, ids, temperature):
  lp, ent, _ = _head_forward(x, head, ids, temperature)
  return lp, ent


def _head_lp_ent_fwd(x, head, ids, temperature):
  lp, ent, (p_head, lse) = _head_forward(x, head, ids, temperature)
  return (lp, ent), (x, head, ids, p_head, lse)


def _head_lp_ent_bwd(temperature, res, cotangents):
  x, head, ids, p_head, lse = res
  g = cotangents[0] / temperature       # the entropy's cotangent is dropped (a metric)
  # head[:, id] as rows of head.T ([V, D], the embedding itself when tied): a gather of
  # columns from the [D, V] view would copy the whole head into that layout first
  target_col = jnp.take(head.T, ids, axis=0).astype(jnp.float32)    # [..., D]
  dx = (g[..., None] * (target_col - p_head)).astype(x.dtype)
  # head's gradient: x^T (onehot - p) g / T, which needs p again; dead when head is frozen
  p = jnp.exp(_head_logits(x, head, temperature) - lse)
  onehot = jax.nn.one_hot(ids, head.shape[-1], dtype=jnp.float32)
  dlogits = (g[..., None] * (onehot - p)).astype(x.dtype)
  dhead = jnp.einsum("...d,...v->dv", x, dlogits,
                     preferred_element_type=jnp.float32).astype(head.dtype)
  return dx, dhead, None


_head_lp_ent.defvjp(_head_lp_ent_fwd, _head_lp_ent_bwd)


# ----------------------------------------------------------------------------- PPO


def policy_loss(logprobs, old_logprobs, advantages, mask, *, epsilon: float,
                epsilon_high: float | None = None, aggregation: str = "token-mean",
                tis_cap: float | None = None, sampler_logprobs=None):
  """PPO-clip surrogate, to minimise.

  Per token: max(-A * r, -A * clip(r, 1 - epsilon, 1 + epsilon_high)) with
  r = exp(logprobs - old_logprobs) (old_logprobs get no gradient), then `aggregate`d.
  Truncated importance sampling: when the sampler's log-probs differ from the trainer's
  old_logprobs (e.g. a bf16 sampler or another engine), pass both `sampler_logprobs` and
  `tis_cap`; each token is weighted by min(exp(old_logprobs - sampler_logprobs), tis_cap),
  with no gradient through the weight.

  Args:
    logprobs: float32[B, T], current policy (differentiated).
    old_logprobs: float32[B, T], the policy that the ratio is taken against.
    advantages: float32[B], one per episode, broadcast over its tokens.
    mask: [B, T] loss mask.
    epsilon: lower clip, ratio >= 1 - epsilon.
    epsilon_high: upper clip, ratio <= 1 + epsilon_high (defaults to epsilon).
    aggregation: "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum".
    tis_cap: truncation of the importance weight; requires sampler_logprobs.
    sampler_logprobs: float32[B, T], the sampler's log-probs; requires tis_cap.

  Returns:
    (scalar loss, metrics) with metrics clip_fraction (tokens where the clipped term is
    the active one), clip_fraction_low/high, ratio_mean/min/max, approx_kl (k3 estimate
    of KL(old || current) on the masked tokens) and, with TIS, tis_weight_mean and
    tis_truncated_fraction. All are over the masked tokens (ratio_min/max are 1 if none).
  """
  if (tis_cap is None) != (sampler_logprobs is None):
    raise ValueError("truncated importance sampling needs both tis_cap and sampler_logprobs")
  eps_low = epsilon
  eps_high = epsilon if epsilon_high is None else epsilon_high
  mask = _as_mask(mask)
  on = mask > 0
  adv = jnp.asarray(advantages, jnp.float32)[:, None]
  log_ratio = jnp.where(on, logprobs - jax.lax.stop_gradient(old_logprobs), 0.0)
  ratio = jnp.exp(log_ratio)
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  per_token = jnp.maximum(unclipped, clipped)

  metrics = {}
  if tis_cap is not None:
    sampler_gap = jnp.where(on, old_logprobs - sampler_logprobs, 0.0)
    raw_weight = jnp.exp(sampler_gap)
    weight = jax.lax.stop_gradient(jnp.minimum(raw_weight, tis_cap))
    per_token = per_token * weight
    metrics["tis_weight_mean"] = masked_mean(weight, mask)
    metrics["tis_truncated_fraction"] = masked_mean((raw_weight > tis_cap).astype(jnp.float32),
                                                    mask)

  loss = aggregate(per_token, mask, aggregation)
  ratio_ng = jax.lax.stop_gradient(ratio)
  adv_b = jnp.broadcast_to(adv, ratio.shape)
  low = (ratio_ng < 1.0 - eps_low) & (adv_b < 0)
  high = (ratio_ng > 1.0 + eps_high) & (adv_b > 0)
  any_on = jnp.any(on)
  metrics.update(
      clip_fraction=masked_mean((low | high).astype(jnp.float32), mask),
      clip_fraction_low=masked_mean(low.astype(jnp.float32), mask),
      clip_fraction_high=masked_mean(high.astype(jnp.float32), mask),
      ratio_mean=masked_mean(ratio_ng, mask),
      ratio_min=jnp.where(any_on, jnp.min(jnp.where(on, ratio_ng, jnp.inf)), 1.0),
      ratio_max=jnp.where(any_on, jnp.max(jnp.where(on, ratio_ng, -jnp.inf)), 1.0),
      approx_kl=masked_mean(kl_divergence(jax.lax.stop_gradient(logprobs), old_logprobs, "k3",
                                          mask=mask), mask),
  )
  return loss, metrics


# ----------------------------------------------------------------------------- KL

KL_METHODS = ("k1", "k2", "k3")


def kl_divergence(logprobs, ref_logprobs, method: str, *, mask=None):
  """Per-token estimate of KL(policy || reference) from log-probs of sampled tokens.

  With d = logprobs - ref_logprobs (tokens sampled from the policy):
    k1 = d                        unbiased; negative on some tokens
    k2 = d^2 / 2                  biased, non-negative
    k3 = exp(-d) + d - 1          unbiased, non-negative, low variance
  There is no default method: the config names it.

  logprobs, ref_logprobs: float32[B, T]; mask: optional [B, T], zeroing (and making safe)
  positions outside it. Returns float32[B, T].
  """
  d = logprobs - ref_logprobs
  if mask is not None:
    d = jnp.where(_as_mask(mask) > 0, d, 0.0)
  if method == "k1":
    return d
  if method == "k2":
    return 0.5 * jnp.square(d)
  if method == "k3":
    return jnp.expm1(-d) + d
  raise ValueError(f"unknown KL estimator {method!r}; valid: {', '.join(KL_METHODS)}")


def kl_loss(logprobs, ref_logprobs, mask, *, beta: float, method: str,
            aggregation: str = "token-mean"):
  """KL in the loss: beta * aggregate(kl_divergence(...)). Returns a scalar.

  logprobs: float32[B, T] (differentiated); ref_logprobs: float32[B, T]; mask: [B, T].
  """
  kl = kl_divergence(logprobs, jax.lax.stop_gradient(ref_logprobs), method, mask=mask)
  return beta * aggregate(kl, mask, aggregation)


def kl_in_reward(logprobs, ref_logprobs, mask, *, method: str):
  """KL in the reward: each episode's summed KL estimate, to subtract (times beta).

  logprobs (usually the sampler's), ref_logprobs: float32[B, T]; mask: [B, T].
  Returns float32[B], with no gradient.
  """
  kl = kl_divergence(logprobs, ref_logprobs, method, mask=mask)
  return jax.lax.stop_gradient(masked_sum(kl, mask, axis=1))
