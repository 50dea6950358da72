"""Advantage estimators as pure functions in a registry, chosen by name from the config.

Rewards are float32[B] with B = N * G and each group of G samples of one question
contiguous. Every estimator returns float32[B].
"""
from __future__ import annotations

import jax.numpy as jnp

_REGISTRY = {}


def register_advantage(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def get_advantage_fn(name: str):
  """The estimator `fn(rewards, group_size, *, whiten=False, eps=1e-6)`."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown advantage estimator {name!r}; valid: {sorted(_REGISTRY)}")
  fn = _REGISTRY[name]

  def wrapped(rewards, group_size: int, *, whiten: bool = False, eps: float = 1e-6):
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.shape[0] % group_size:
      raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    adv = fn(rewards.reshape(-1, group_size), eps).reshape(-1)
    if whiten:
      adv = (adv - adv.mean()) / (adv.std() + eps)
    return adv
  return wrapped


@register_advantage("grpo")
def grpo(groups, eps):
  """(r - group mean) / (group std + eps). groups: float32[N, G]."""
  mean = groups.mean(axis=1, keepdims=True)
  std = groups.std(axis=1, keepdims=True)
  return (groups - mean) / (std + eps)


@register_advantage("drgrpo")
def drgrpo(groups, eps):
  """r - group mean (Dr. GRPO: no std normalisation)."""
  del eps
  return groups - groups.mean(axis=1, keepdims=True)


@register_advantage("rloo")
def rloo(groups, eps):
  """r_i - mean_{j != i} r_j (leave-one-out baseline)."""
  del eps
  g = groups.shape[1]
  if g < 2:
    return jnp.zeros_like(groups)
  total = groups.sum(axis=1, keepdims=True)
  return groups - (total - groups) / (g - 1)
