"""Confidence intervals for evaluation metrics: a seeded percentile bootstrap (pure numpy).

`bootstrap_ci(values)` resamples the per-episode values with replacement, takes the
mean of each resample, and returns the (alpha/2, 1 - alpha/2) quantiles of those
means. `paired_difference_ci(a, b)` does the same for mean(a) - mean(b) of two methods
on the same questions, resampling the question indices jointly, so the questions'
own difficulty cancels. Same inputs and seed, same interval.
"""
from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def resample_means(values, num_resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> np.ndarray:
  """float64[num_resamples]: means of bootstrap resamples (with replacement) of values[N]."""
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("resample_means needs at least one value")
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, x.size, size=(num_resamples, x.size))
  return x[idx].mean(axis=1)


def percentile_interval(means, confidence: float = 0.95) -> tuple[float, float]:
  """(low, high): the (1-c)/2 and (1+c)/2 quantiles (linear interpolation) of means[R]."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  alpha = 1.0 - confidence
  low, high = np.quantile(np.asarray(means, np.float64), [alpha / 2, 1.0 - alpha / 2])
  return float(low), float(high)


def bootstrap_ci(values, num_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                 seed: int = DEFAULT_SEED) -> dict | None:
  """{"mean", "low", "high", "n"} for the mean of values[N]; None when N == 0.

  values: per-episode numbers (0/1 for EM and leak flags).
  """
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    return None
  low, high = percentile_interval(resample_means(x, num_resamples, seed), confidence)
  return {"mean": float(x.mean()), "low": low, "high": high, "n": int(x.size)}


def paired_difference_ci(a, b, num_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                         seed: int = DEFAULT_SEED) -> dict | None:
  """{"mean", "low", "high", "n"} for mean(a) - mean(b); None when N == 0.

  a, b: per-question values[N] of two methods, row i on the same question i. Each
  resample draws N question indices with replacement and takes the mean of a[idx] -
  b[idx] (the same indices for both methods).
  """
  x, y = (np.asarray(v, np.float64).reshape(-1) for v in (a, b))
  if x.shape != y.shape:
    raise ValueError(f"paired_difference_ci: {x.size} and {y.size} values; pairing needs "
                     "the same questions")
  return bootstrap_ci(x - y, num_resamples, confidence, seed)
