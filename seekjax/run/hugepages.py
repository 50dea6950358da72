"""Start the command-line entry points with glibc's malloc asking for transparent huge pages.

Why: XLA:CPU allocates every large buffer of a program (the LM head's [N x V] logits, the
update's activations, the reference pass's states) afresh on each call, and glibc serves
any allocation above 32 MiB with a new mmap. The kernel then faults the buffer in one 4 KiB
page at a time as the program first writes it: a 75 MB logits buffer costs about 18,000
faults, 25-30 ms on the 2-core box, against 3 ms for the same pass over a reused buffer.
With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc advises those mappings
for transparent huge pages, and the same buffer takes about 550 faults of 2 MiB
(BENCHMARKS.md, "Fresh buffers and huge pages").

The tunable is read once, when the process starts, so an entry point that wants it re-runs
itself (`os.execv`, same pid, same arguments) with the variable added. That happens only
in a `python -m seekjax.<entry>` process (never where `main()` is called from Python),
only on Linux with glibc >= 2.35 and transparent huge pages not set to "never", and not
when the variable already names the tunable or `SEEKJAX_HUGEPAGES=0` is set.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
OFF_VARIABLE = "SEEKJAX_HUGEPAGES"


def _glibc_version() -> tuple[int, ...] | None:
  lib, version = platform.libc_ver()
  if lib != "glibc" or not version:
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never"), or None when
  the file is missing or unreadable."""
  try:
    with open(path, encoding="ascii") as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def tunables_with_hugepages(env: dict, *, glibc=None, mode=None) -> str | None:
  """The GLIBC_TUNABLES value to restart with, or None when nothing should change.

  env: the environment (os.environ). glibc / mode: the glibc version and huge-page mode
  (read from this machine when None).
  """
  if env.get(OFF_VARIABLE, "1") == "0":
    return None
  current = env.get("GLIBC_TUNABLES", "")
  if TUNABLE in current:
    return None
  glibc = _glibc_version() if glibc is None else glibc
  if glibc is None or glibc < (2, 35):
    return None
  mode = thp_mode() if mode is None else mode
  if mode not in ("always", "madvise"):
    return None
  return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def restart_with_hugepages() -> None:
  """Re-run this `python -m ...` process with huge pages for malloc, if `tunables_with_hugepages`
  says so; returns (doing nothing) otherwise. Call it only from an `if __name__ ==
  "__main__":` block, before any work: the process image is replaced."""
  if sys.platform != "linux":
    return
  value = tunables_with_hugepages(os.environ)
  argv = list(getattr(sys, "orig_argv", ()))
  if value is None or len(argv) < 2:
    return
  print(f"[seekjax] restarting with GLIBC_TUNABLES={value} (huge pages for XLA's buffers; "
        f"{OFF_VARIABLE}=0 turns this off)", file=sys.stderr, flush=True)
  env = dict(os.environ, GLIBC_TUNABLES=value)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)
