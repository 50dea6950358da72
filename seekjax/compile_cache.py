"""The persistent compilation cache: XLA programs kept under $SEEKJAX_CACHE/jax.

A second run of the same config (or `evaluate` after `train`) reads its compiled
programs back instead of compiling them again. Every program is kept, however small or
quick to compile (jax's defaults skip those under a second, which on a CPU are most).
SEEKJAX_COMPILE_CACHE=0 turns it off; a cache directory already given to jax
(JAX_COMPILATION_CACHE_DIR) is kept. `seekjax/compiles.py` counts the hits.
"""
from __future__ import annotations

import os

import jax

from seekjax.models.embedded import cache_dir

OFF = ("0", "false", "no", "off")


def directory() -> str | None:
  """Where compiled programs are kept, or None when SEEKJAX_COMPILE_CACHE turns it off."""
  if os.environ.get("SEEKJAX_COMPILE_CACHE", "").strip().lower() in OFF:
    return None
  return jax.config.jax_compilation_cache_dir or os.path.join(cache_dir(), "jax")


def enable() -> str | None:
  """Points jax's persistent compilation cache at `directory()`; returns it (None: off).

  Call it before the first compilation of the process: jax decides once, at its first
  compilation, whether the cache is used.
  """
  path = directory()
  if path is None:
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path
