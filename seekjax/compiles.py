"""Counts XLA compilations (and persistent-cache hits) through `jax.monitoring` events.

Every XLA compilation jax makes, whether built fresh or read back from the persistent
compilation cache (`seekjax/compile_cache.py`), reports one backend-compile event with the
function's name; a read from the cache also reports a cache-hit event. The RL loop
records the difference over each step, so a step that compiled anything says so in its
metrics row (`compiles`, `compile_cache_hits`, `compile_time`).
"""
from __future__ import annotations

import collections
import threading

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_totals = collections.Counter()      # compiles, compile_cache_hits, compile_time
_names = collections.Counter()       # compiles by function name
_installed = False


def _on_duration(event: str, duration_secs: float, **kwargs) -> None:
  if event == COMPILE_EVENT:
    with _lock:
      _totals["compiles"] += 1
      _totals["compile_time"] += duration_secs
      _names[str(kwargs.get("fun_name", "?"))] += 1


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event == CACHE_HIT_EVENT:
    with _lock:
      _totals["compile_cache_hits"] += 1


def install() -> None:
  """Registers the listeners (once per process; later calls do nothing)."""
  global _installed
  with _lock:
    if _installed:
      return
    _installed = True
  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  jax.monitoring.register_event_listener(_on_event)


def snapshot() -> tuple[dict, dict]:
  """The counts so far: ({compiles, compile_cache_hits, compile_time}, {name: compiles})."""
  install()
  with _lock:
    totals = {k: _totals.get(k, 0) for k in ("compiles", "compile_cache_hits", "compile_time")}
    return totals, dict(_names)


def since(before: tuple[dict, dict]) -> tuple[dict, dict]:
  """What compiled after `before` (a `snapshot`): (totals, {name: compiles}) differences."""
  totals, names = snapshot()
  diff = {k: v - before[0].get(k, 0) for k, v in totals.items()}
  new = {k: v - before[1].get(k, 0) for k, v in names.items() if v > before[1].get(k, 0)}
  return diff, new

