"""Finite training: the first non-finite term of a step, and whether a state is finite.

The trainer checks each step's metrics and, before every save, the parameters, so a
diverged state (NaN/inf from a bad learning rate, reward or temperature) is never
checkpointed and the last good checkpoint stays the latest.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TERMS = ("reward", "loss", "grad_norm", "kl")   # checked in this order; the first bad one is named


class NonFiniteError(RuntimeError):
  """Training produced a non-finite value (reported in one line)."""


def nonfinite_term(metrics: dict) -> str | None:
  """The first of TERMS whose value in `metrics` is not finite (None when all are)."""
  for term in TERMS:
    v = metrics.get(term)
    if v is not None and not math.isfinite(float(v)):
      return term
  return None


@jax.jit
def _all_finite(tree) -> jax.Array:
  """tree: any pytree of float arrays -> bool[] (True when every element is finite)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(tree) -> bool:
  return bool(_all_finite(tree))
