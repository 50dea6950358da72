"""The decode step's cached attention as a CPU kernel (`cpu_attention.cc`), via the XLA FFI.

XLA:CPU's form of it slices a window out of each layer's cache and runs two batched dots
of a few rows each; on the 2-core box that reads the cache at a seventh of the streaming
rate and was most of a decode step (BENCHMARKS.md). The kernel reads each row's live slots
in place, in order, on XLA's intra-op threads.

Built with the system C++ compiler ($CXX, else c++) into $SEEKJAX_CACHE/kernels, keyed by
the source, the jax version, the machine type and the flags, so a later process loads it
without compiling (about 3 s). Where nothing can build it (one warning with the
compiler's message), or SEEKJAX_CPU_KERNELS=0, `usable` is False and the decoder keeps
XLA's form: the kernel changes speed, never results beyond float rounding.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp

from seekjax.models.embedded import cache_dir

log = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_attention.cc")
TARGET = "seekjax_cached_attention"
# -ffp-contract=off: no fused multiply-adds, so the bits do not depend on the instruction set.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno")
LANES = 16   # the kernel's dot splits hd into 16 partial sums

_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
  """False when SEEKJAX_CPU_KERNELS turns the kernel off (read when a program is traced)."""
  return os.environ.get("SEEKJAX_CPU_KERNELS", "").strip().lower() not in ("0", "false", "no",
                                                                          "off")


def _library_path() -> str:
  with open(SOURCE, "rb") as f:
    key = f"{jax.__version__} {platform.machine()} {' '.join(FLAGS)}"
    digest = hashlib.sha256(f.read() + key.encode())
  return os.path.join(cache_dir(), "kernels", f"cpu_attention-{digest.hexdigest()[:16]}.so")


def build(path: str | None = None) -> str:
  """Compiles the kernel library (if not already there); returns its path.

  Raises RuntimeError with the compiler's message when it cannot be built.
  """
  path = path or _library_path()
  if os.path.exists(path):
    return path
  cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if not cxx:
    raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  cmd = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), SOURCE, "-o", tmp]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    os.unlink(tmp)
    raise RuntimeError(f"building {SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
  os.replace(tmp, path)   # atomic: concurrent builders each leave a whole library
  return path


def _register() -> bool:
  """Builds and registers the FFI target once per process; False (warned once) if it cannot."""
  with _lock:
    if "ok" not in _state:
      try:
        lib = ctypes.cdll.LoadLibrary(build())
        jax.ffi.register_ffi_target(
            TARGET, jax.ffi.pycapsule(lib.SeekjaxCachedAttention), platform="cpu")
        _state.update(ok=True, lib=lib)
      except (RuntimeError, OSError) as e:
        log.warning("CPU attention kernel unavailable, using XLA's attention: %s", e)
        _state["ok"] = False
    return _state["ok"]


def supports(q, k_buf) -> bool:
  """Whether the kernel takes these operands (float32, head_dim a multiple of 16)."""
  return (enabled() and q.dtype == jnp.float32 and k_buf.dtype == jnp.float32
          and q.shape[-1] % LANES == 0)


def usable(q, k_buf) -> bool:
  """Whether `cached_attention` can run on these operands in this process (builds it once)."""
  return supports(q, k_buf) and _register()


def cached_attention(q, k_buf, v_buf, positions):
  """q [B, T, H, hd] at positions [B, T] over one layer's cache [B, S, K, hd] -> [B, T, H*hd].

  Each query attends to its row's slots 0..position, as `decoder.attention` with the mask
  `slot <= position` does (a negative position gives zeros). CPU only; check `usable` first.
  """
  if not usable(q, k_buf):
    raise RuntimeError("the CPU attention kernel cannot run on these operands here "
                       f"(q {q.dtype}{q.shape}, cache {k_buf.dtype}{k_buf.shape}); see the log")
  b, t, h, hd = q.shape
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((b, t, h * hd), jnp.float32),
                          vmap_method="sequential")
  return call(q, k_buf, v_buf, positions.astype(jnp.int32))
