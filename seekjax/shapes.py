"""Shape helpers shared by the sampler, the rollout, the trainer and the memory plan.

Array widths are rounded up to powers of two so that jitted functions see a few shapes
again and again (and compile once each), instead of one new shape per batch.
"""
from __future__ import annotations


def bucket(n: int, minimum: int = 16) -> int:
  """Round up to a power of two (>= minimum) so compiled shapes are reused."""
  b = minimum
  while b < n:
    b *= 2
  return b
