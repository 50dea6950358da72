"""Start the command-line entry points with glibc's malloc keeping large buffers for reuse.

Why: XLA:CPU allocates each program's temporaries afresh on every call (the update step's
are one 561 MiB block on the default), from one of its worker threads. glibc serves a
request that large from a thread's arena with a new mmap, and unmaps it on free, so the
kernel faults in and zeroes every page the program touches, on every call (up to 561 MiB /
4 KiB = 143,000 faults a step), and `clear_page` was 16% of the samples of an RL run's
profile on the 2-core box.
With a single arena, no mmap for large requests and no trimming, freed blocks stay in the
heap and the next call reuses them (BENCHMARKS.md, "Fresh buffers on every call"). The heap
is also asked for transparent huge pages (`hugetlb=1`: `madvise`, so it applies where THP
is in "madvise" or "always" mode): a seventh of the page faults, and resumed RL steps
1.18-1.32x faster (BENCHMARKS.md, "Huge pages on the reused heap").

The tunables are read once, when the process starts, so an entry point re-runs itself
(`os.execve`, same pid, same arguments) with GLIBC_TUNABLES extended. That happens only in
a `python -m seekjax.<entry>` process (never where `main()` is called from Python), only on
Linux with glibc, only where no accelerator plugin is installed (on a GPU or TPU host the
large buffers live on the device), and not when the variable already sets one of these
tunables or `SEEKJAX_REUSE_MEMORY=0` is set.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys

# one arena: a worker thread's arena cannot grow past 64 MiB and falls back to mmap
# whatever mmap_max says; mmap_max 0: large requests come from the heap; trim_threshold:
# freed memory at the heap's top is kept (1 TiB: never trimmed); hugetlb 1: the heap in
# transparent huge pages (a glibc before 2.35 ignores it)
TUNABLES = (("glibc.malloc.arena_max", "1"), ("glibc.malloc.mmap_max", "0"),
            ("glibc.malloc.trim_threshold", str(1 << 40)), ("glibc.malloc.hugetlb", "1"))
SETTINGS = tuple(f"{name}={value}" for name, value in TUNABLES)
OFF_VARIABLE = "SEEKJAX_REUSE_MEMORY"
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def _is_glibc() -> bool:
  return platform.libc_ver()[0] == "glibc"


def _accelerator_installed(env) -> bool:
  if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS)


def tunables_for_reuse(env, *, glibc: bool | None = None,
                       accelerator: bool | None = None) -> str | None:
  """The GLIBC_TUNABLES value to restart with, or None when nothing should change.

  env: the environment (os.environ). glibc / accelerator: whether this is glibc and whether
  an accelerator plugin is installed (read from this machine when None).
  """
  if env.get(OFF_VARIABLE, "1") == "0":
    return None
  current = env.get("GLIBC_TUNABLES", "")
  if any(name in current for name, _ in TUNABLES):
    return None   # the user set malloc up themselves
  if not (_is_glibc() if glibc is None else glibc):
    return None
  if _accelerator_installed(env) if accelerator is None else accelerator:
    return None
  ours = ":".join(SETTINGS)
  return f"{current}:{ours}" if current else ours


def restart_with_reused_memory() -> None:
  """Re-run this `python -m ...` process with `tunables_for_reuse`'s GLIBC_TUNABLES, if it
  gives any; returns (doing nothing) otherwise; `active()` tells the restarted process.
  Call it only from an `if __name__ == "__main__":` block, before any work: the process
  image is replaced."""
  if sys.platform != "linux":
    return
  value = tunables_for_reuse(os.environ)
  argv = list(getattr(sys, "orig_argv", ()))
  if value is None or len(argv) < 2:
    return
  # silent: an entry point's output (one line for a bad flag) stays what it was
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:],
            dict(os.environ, GLIBC_TUNABLES=value))


def active() -> bool:
  """Whether this process runs with the tunables (a line for the run's log)."""
  current = os.environ.get("GLIBC_TUNABLES", "")
  return all(setting in current for setting in SETTINGS)
