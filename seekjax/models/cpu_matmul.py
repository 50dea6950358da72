"""The decode step's thin matmuls as a CPU kernel (`cpu_matmul.cc`), via the XLA FFI.

A decode step multiplies a few rows (one token per batch row) by every weight of the
model, so it is bound by reading the weights; XLA:CPU's dots read them at about a third
of the box's streaming rate (BENCHMARKS.md). The kernel reads each weight packed into
16-column panels (`pack`, once per rollout: `packing.decode_params`), each panel one
contiguous stream. Its vector forms (AVX-512, or AVX2 with FMA) beat XLA's dots; its
portable loop does not, so the decoder packs weights only where a vector form runs
(`worthwhile`). Building, loading and turning it off: `cpu_kernels`;
SEEKJAX_CPU_MATMUL_ISA=avx2|portable asks for a lower form than the CPU has.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from seekjax.models import cpu_kernels

TARGET = "seekjax_packed_matmul"
PANEL = 16          # columns per panel
N_MULTIPLE = 32     # the kernel works on pairs of panels
ISAS = ("portable", "avx2", "avx512")  # SeekjaxMatmulIsa() -> name


def pack(w):
  """[K, N] -> [N / 16, K, 16]: column panel p holds columns 16p..16p+15, row by row."""
  k, n = w.shape
  if n % N_MULTIPLE:
    raise ValueError(f"pack: N={n} is not a multiple of {N_MULTIPLE}")
  return w.reshape(k, n // PANEL, PANEL).transpose(1, 0, 2)


def isa() -> str | None:
  """The form the matmul runs in this process ("avx512", "avx2", "portable"); None when
  the kernels are not available."""
  lib = cpu_kernels.library()
  return None if lib is None else ISAS[lib.SeekjaxMatmulIsa()]


def worthwhile() -> bool:
  """Whether packing pays here: the kernels are available and the matmul runs a vector
  form (the portable loop is slower than XLA's dots)."""
  return isa() in ("avx2", "avx512")


def packable(w) -> bool:
  """Whether `pack` and the kernel take this weight (float32 [K, N], N a multiple of 32)."""
  return len(w.shape) == 2 and w.dtype == jnp.float32 and w.shape[1] % N_MULTIPLE == 0


def supports(x, packed) -> bool:
  """Whether the kernel takes these operands (float32, packed [P, K, 16] matching x)."""
  return (cpu_kernels.enabled() and x.dtype == jnp.float32 and packed.dtype == jnp.float32
          and packed.ndim == 3 and packed.shape[2] == PANEL and packed.shape[0] % 2 == 0
          and x.shape[-1] == packed.shape[1])


def usable(x, packed) -> bool:
  """Whether `packed_matmul` can run on these operands in this process (builds it once)."""
  return supports(x, packed) and cpu_kernels.available()


def packed_matmul(x, packed):
  """x [..., K] @ the [K, N] weight that `pack` gave `packed` -> float32 [..., N].

  CPU only; check `usable` first.
  """
  if not usable(x, packed):
    raise RuntimeError("the CPU matmul kernel cannot run on these operands here "
                       f"(x {x.dtype}{x.shape}, packed {packed.dtype}{packed.shape}); "
                       "see the log")
  lead, k = x.shape[:-1], x.shape[-1]
  n = packed.shape[0] * PANEL
  m = math.prod(lead)
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32),
                          vmap_method="sequential")
  return call(x.reshape(m, k), packed).reshape(*lead, n)
