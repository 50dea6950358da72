"""Advantage estimators: pure functions in a registry, chosen by name from the config.

Layout: rewards are float32[B] with B = N * G; the G samples of one question are
contiguous (rows [i*G, (i+1)*G) form group i). Every estimator returns float32[B],
one advantage per episode, which the policy loss broadcasts over that episode's tokens.

An optional `valid` mask (float32[B], 1 = keep) drops episodes from the group
statistics, e.g. episodes whose helper call failed: they neither move their group's
baseline nor receive an advantage (theirs is exactly 0).

    adv_fn = get_advantage_fn(cfg.rl.advantage)       # "grpo" | "drgrpo" | "rloo"
    adv = adv_fn(rewards, cfg.rl.group_size, whiten=cfg.rl.whiten, valid=valid)
"""
from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp

DEFAULT_EPS = 1e-6

# name -> fn(groups: float32[N, G], valid: float32[N, G], eps: float) -> float32[N, G]
_ESTIMATORS: dict[str, Callable] = {}


def register_advantage(name: str):
  """Decorator: registers `fn(groups, valid, eps) -> float32[N, G]` under `name`."""
  def deco(fn):
    if name in _ESTIMATORS:
      raise ValueError(f"advantage estimator {name!r} is already registered")
    _ESTIMATORS[name] = fn
    return fn
  return deco


def advantage_names() -> list[str]:
  """The registered estimator names, sorted."""
  return sorted(_ESTIMATORS)


def get_advantage_fn(name: str):
  """The estimator `fn(rewards, group_size, *, whiten=False, valid=None, eps=1e-6)`.

  Raises ValueError naming the valid estimators when `name` is unknown.
  """
  if name not in _ESTIMATORS:
    raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(advantage_names())}")
  return functools.partial(compute_advantages, estimator=name)


def compute_advantages(rewards, group_size: int, *, estimator: str, whiten: bool = False,
                       valid=None, eps: float = DEFAULT_EPS):
  """Per-episode advantages from per-episode rewards.

  Args:
    rewards: float32[B], B = N * group_size, groups contiguous.
    group_size: G, a Python int (static under jit).
    estimator: a registered name ("grpo", "drgrpo", "rloo").
    whiten: if True, standardise the (valid) advantages over the whole batch afterwards.
    valid: optional float32[B] (or bool) mask; 0 rows are left out of every statistic and
      get advantage 0.
    eps: added to standard deviations.

  Returns:
    float32[B].
  """
  if estimator not in _ESTIMATORS:
    raise ValueError(f"unknown advantage estimator {estimator!r}; valid: "
                     f"{', '.join(advantage_names())}")
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1:
    raise ValueError(f"rewards must be float32[B], got shape {rewards.shape}")
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
  if valid is None:
    valid = jnp.ones_like(rewards)
  valid = jnp.asarray(valid).astype(jnp.float32)
  if valid.shape != rewards.shape:
    raise ValueError(f"valid has shape {valid.shape}, rewards {rewards.shape}")
  # Invalid rewards may be anything (even NaN): replace them before any arithmetic.
  rewards = jnp.where(valid > 0, rewards, 0.0)
  groups, group_valid = rewards.reshape(-1, group_size), valid.reshape(-1, group_size)
  adv = _ESTIMATORS[estimator](groups, group_valid, eps).reshape(-1)
  if whiten:
    adv = _whiten(adv, valid, eps)
  return jnp.where(valid > 0, adv, 0.0)


def _masked_group_stats(groups, valid):
  """Mean and population std over the valid members of each group.

  groups, valid: float32[N, G]. Returns (mean float32[N, 1], std float32[N, 1], count
  float32[N, 1]); a group with no valid member has mean 0 and std 0.
  """
  count = valid.sum(axis=1, keepdims=True)
  mean = (groups * valid).sum(axis=1, keepdims=True) / jnp.maximum(count, 1.0)
  var = (jnp.square(groups - mean) * valid).sum(axis=1, keepdims=True) / jnp.maximum(count, 1.0)
  return mean, jnp.sqrt(var), count


def _whiten(adv, valid, eps):
  """(adv - mean) / (std + eps) over the valid entries of the batch. adv, valid: float32[B]."""
  mean, std, _ = _masked_group_stats(adv[None], valid[None])
  return ((adv[None] - mean) / (std + eps))[0]


@register_advantage("grpo")
def grpo(groups, valid, eps):
  """GRPO: (r - group mean) / (group std + eps), std with ddof=0.

  groups, valid: float32[N, G]. Returns float32[N, G]. A group whose rewards are all
  equal gets advantage 0 throughout.
  """
  mean, std, _ = _masked_group_stats(groups, valid)
  return (groups - mean) / (std + eps)


@register_advantage("drgrpo")
def drgrpo(groups, valid, eps):
  """Dr. GRPO: r - group mean (no std normalisation). groups, valid: float32[N, G]."""
  del eps
  mean, _, _ = _masked_group_stats(groups, valid)
  return groups - mean


@register_advantage("rloo")
def rloo(groups, valid, eps):
  """RLOO: r_i - mean_{j != i} r_j over the valid members (0 if i has no valid peer).

  groups, valid: float32[N, G]. Returns float32[N, G].
  """
  del eps
  count = valid.sum(axis=1, keepdims=True)
  total = (groups * valid).sum(axis=1, keepdims=True)
  peers = count - valid
  baseline = (total - groups * valid) / jnp.maximum(peers, 1.0)
  return jnp.where(peers > 0, groups - baseline, 0.0)
