"""The CPU kernels' library: built once, registered with XLA once per process.

`cpu_attention.cc` (the decode step's cached attention) and `cpu_matmul.cc` (its thin
matmuls) are called through the XLA FFI on XLA's intra-op threads. They are compiled
together with the system C++ compiler ($CXX, else c++) into one library under
$SEEKJAX_CACHE/kernels, keyed by the sources, the jax version, the machine type and the
flags, so a later process loads it without compiling (a few seconds). Where nothing can
build it (one warning with the compiler's message), or SEEKJAX_CPU_KERNELS=0, `available`
is False and the decoder keeps XLA's forms: the kernels change speed, never results beyond
float rounding.
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

from seekjax.models.embedded import cache_dir

log = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = tuple(os.path.join(_HERE, f) for f in ("cpu_attention.cc", "cpu_matmul.cc"))
HEADERS = (os.path.join(_HERE, "cpu_kernels.h"),)
# FFI target name -> the handler symbol the library exports.
TARGETS = {"seekjax_cached_attention": "SeekjaxCachedAttention",
           "seekjax_packed_matmul": "SeekjaxPackedMatmul"}
# -ffp-contract=off: no fused multiply-adds the source does not ask for, so the attention's
# bits do not depend on the instruction set (the matmul's vector forms ask for them).
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno")

_lock = threading.Lock()
_state: dict = {}


def enabled() -> bool:
  """False when SEEKJAX_CPU_KERNELS turns the kernels off (read when a program is traced)."""
  return os.environ.get("SEEKJAX_CPU_KERNELS", "").strip().lower() not in ("0", "false", "no",
                                                                          "off")


def _library_path() -> str:
  digest = hashlib.sha256(f"{jax.__version__} {platform.machine()} {' '.join(FLAGS)}".encode())
  for source in SOURCES + HEADERS:
    with open(source, "rb") as f:
      digest.update(f.read())
  return os.path.join(cache_dir(), "kernels", f"cpu_kernels-{digest.hexdigest()[:16]}.so")


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
  cmd = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), *SOURCES, "-o", tmp]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    os.unlink(tmp)
    raise RuntimeError(f"building the CPU kernels failed ({' '.join(cmd)}):\n"
                       f"{proc.stderr[-2000:]}")
  os.replace(tmp, path)   # atomic: concurrent builders each leave a whole library
  return path


def available() -> bool:
  """Builds and registers every FFI target once per process; False (warned once) if it
  cannot, or when SEEKJAX_CPU_KERNELS turns the kernels off."""
  if not enabled():
    return False
  with _lock:
    if "ok" not in _state:
      try:
        lib = ctypes.cdll.LoadLibrary(build())
        for target, symbol in TARGETS.items():
          jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                      platform="cpu")
        _state.update(ok=True, lib=lib)
      except (RuntimeError, OSError, AttributeError) as e:
        log.warning("CPU kernels unavailable, using XLA's attention and matmuls: %s", e)
        _state["ok"] = False
    return _state["ok"]


def library():
  """The loaded library (ctypes), or None where `available()` is False."""
  return _state.get("lib") if available() else None
