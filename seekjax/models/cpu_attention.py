"""The decode step's cached attention as a CPU kernel (`cpu_attention.cc`), via the XLA FFI.

XLA:CPU's form of it slices a window out of each layer's cache and runs two batched dots
of a few rows each; on the 2-core box that reads the cache at a seventh of the streaming
rate and was most of a decode step (BENCHMARKS.md). The kernel reads each row's live slots
in place, in order, on XLA's intra-op threads. Building, loading and turning it off:
`cpu_kernels`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seekjax.models import cpu_kernels

TARGET = "seekjax_cached_attention"
LANES = 16   # the kernel's dot splits hd into 16 partial sums


def supports(q, k_buf) -> bool:
  """Whether the kernel takes these operands (float32, head_dim a multiple of 16)."""
  return (cpu_kernels.enabled() and q.dtype == jnp.float32 and k_buf.dtype == jnp.float32
          and q.shape[-1] % LANES == 0)


def usable(q, k_buf) -> bool:
  """Whether `cached_attention` can run on these operands in this process (builds it once)."""
  return supports(q, k_buf) and cpu_kernels.available()


def cached_attention(q, k_buf, v_buf, positions):
  """q [B, T, H, hd] at positions [B, T] over one layer's cache [B, S, K, hd] -> [B, T, H*hd].

  Each query attends to its row's slots 0..position, as `attention.attention` with the mask
  `slot <= position` does (a negative position gives zeros). CPU only; check `usable` first.
  """
  if not usable(q, k_buf):
    raise RuntimeError("the CPU attention kernel cannot run on these operands here "
                       f"(q {q.dtype}{q.shape}, cache {k_buf.dtype}{k_buf.shape}); see the log")
  b, t, h, hd = q.shape
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((b, t, h * hd), jnp.float32),
                          vmap_method="sequential")
  return call(q, k_buf, v_buf, positions.astype(jnp.int32))
