"""The persistent compilation cache: XLA programs kept under $SEEKJAX_CACHE/jax.

A second run of the same config (or `evaluate` after `train`) reads its compiled
programs back instead of compiling them again. Every program is kept, however small or
quick to compile (jax's defaults skip those under a second, which on a CPU are most).
SEEKJAX_COMPILE_CACHE=0 turns it off; a cache directory already given to jax
(JAX_COMPILATION_CACHE_DIR) is kept. `seekjax/compiles.py` counts the hits.

Programs with host callbacks (the rollout's decode loops, whose `io_callback` hands
messages to the helper) are kept too, on CPU. jax writes none of them: it assumes a
callback is baked into the program. On CPU it is not: the program names each callback by
its index in the list handed to the compiler, and that list can be handed again when the
program is read back (`jaxlib`'s `deserialize_executable(..., host_callbacks=)`). So
`enable()` wraps jax's compile-or-read step (`jax._src.compiler.compile_or_get_cached`,
a private function: the wrapper checks its signature and stays out where it differs)
for those programs only, under jax's own cache key, which hashes the program, the
compile options, the backend and jaxlib versions and XLA_FLAGS. Any failure to read or
write such an entry falls back to compiling, with a warning. SEEKJAX_CALLBACK_CACHE=0
leaves those programs to jax (compiled in every run).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import threading
import zlib

import jax

from seekjax.compiles import CACHE_HIT_EVENT
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
  if os.environ.get("SEEKJAX_CALLBACK_CACHE", "").strip().lower() in OFF:
    uninstall_callback_cache()
  else:
    install_callback_cache()
  return path


# ------------------------------------------------- programs with host callbacks (CPU)

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "seekjax-cb-"
_MAGIC = b"SJCB1"
_WRAPPED_PARAMS = ("backend", "computation", "devices", "compile_options",
                   "host_callbacks", "executable_devices", "pgle_profiler")
_original = None


def callback_entry_path(directory_: str, key: str) -> str:
  return os.path.join(directory_, CALLBACK_PREFIX + key)


def _pack(serialized: bytes) -> bytes:
  body = zlib.compress(serialized, 1)
  return _MAGIC + hashlib.sha256(body).digest() + body


def _unpack(data: bytes) -> bytes:
  """The serialized executable in an entry; ValueError when the entry is not whole."""
  head = len(_MAGIC) + 32
  if len(data) < head or not data.startswith(_MAGIC):
    raise ValueError("not a seekjax callback-program entry")
  digest, body = data[len(_MAGIC):head], data[head:]
  if hashlib.sha256(body).digest() != digest:
    raise ValueError("checksum mismatch (a truncated or altered entry)")
  return zlib.decompress(body)


def _local_cache_dir(backend) -> str | None:
  path = jax.config.jax_compilation_cache_dir
  if (path is None or "://" in str(path) or backend.platform != "cpu"
      or not jax.config.jax_enable_compilation_cache):
    return None
  return str(path)


def _compile_or_read(backend, computation, devices, compile_options, host_callbacks,
                     executable_devices, pgle_profiler=None):
  """jax's compile-or-read step, plus a cache for CPU programs with host callbacks."""
  def compile_():
    return _original(backend, computation, devices, compile_options, host_callbacks,
                     executable_devices, pgle_profiler)

  path = _local_cache_dir(backend) if host_callbacks else None
  if path is None:
    return compile_()
  from jax._src import cache_key
  try:
    entry = callback_entry_path(path, cache_key.get(computation, devices, compile_options,
                                                    backend))
  except Exception as e:   # noqa: BLE001 - a key that cannot be made means: just compile
    log.warning("callback-program cache: no key (%s); compiling", e)
    return compile_()
  if os.path.exists(entry):
    try:
      with open(entry, "rb") as f:
        serialized = _unpack(f.read())
      executable = backend.deserialize_executable(
          serialized, executable_devices, compile_options, host_callbacks=host_callbacks)
      jax.monitoring.record_event(CACHE_HIT_EVENT)
      return executable
    except Exception as e:   # noqa: BLE001 - a bad entry is dropped and compiled again
      log.warning("callback-program cache: could not read %s (%s); compiling", entry, e)
      try:
        os.remove(entry)
      except OSError:
        pass
  executable = compile_()
  if jax.process_index() == 0:
    tmp = f"{entry}.tmp{os.getpid()}-{threading.get_ident()}"
    try:
      os.makedirs(path, exist_ok=True)
      with open(tmp, "wb") as f:
        f.write(_pack(backend.serialize_executable(executable)))
      os.replace(tmp, entry)   # whole or absent: a reader never sees half an entry
    except Exception as e:   # noqa: BLE001 - the run goes on without the entry
      log.warning("callback-program cache: could not write %s (%s)", entry, e)
      try:
        os.remove(tmp)
      except OSError:
        pass
  return executable


def install_callback_cache() -> bool:
  """Wraps jax's compile-or-read step (once); False where its signature is not the one
  this wrapper was written for, so a jax upgrade turns the feature off, not the run."""
  global _original
  from jax._src import compiler
  if _original is not None:
    return True
  current = compiler.compile_or_get_cached
  if tuple(inspect.signature(current).parameters) != _WRAPPED_PARAMS:
    log.warning("callback-program cache off: jax's compile_or_get_cached has another "
                "signature in jax %s", jax.__version__)
    return False
  _original = current
  compiler.compile_or_get_cached = _compile_or_read
  return True


def uninstall_callback_cache() -> None:
  """Puts jax's own compile-or-read step back (SEEKJAX_CALLBACK_CACHE=0, tests)."""
  global _original
  from jax._src import compiler
  if _original is not None:
    compiler.compile_or_get_cached = _original
    _original = None
