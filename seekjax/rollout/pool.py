"""The host-side helper pool: owns the asyncio loop and thread; starts calls, never blocks JAX.

`submit` is what the decode loop's io_callback calls: it only schedules the helper's
coroutine on the pool's own event-loop thread and returns at once. Exceptions and
timeouts never cross into the callback: they become a HelperReply with `error` set.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from seekjax.helpers.base import HelperReply


class HelperPool:
  """Runs `helper.respond` calls concurrently on a private asyncio loop.

  Keys identify a pending call (the engine uses the batch row). One pool serves one
  rollout at a time; `close()` stops its thread.
  """

  def __init__(self, helper, timeout: float = 60.0, max_concurrency: int = 64):
    self.helper = helper
    self.timeout = timeout
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="seekjax-helper-pool",
                                    daemon=True)
    self._thread.start()
    self._sem = None
    self._max_concurrency = max_concurrency
    self._pending: dict[int, concurrent.futures.Future] = {}
    self._changed = threading.Condition()

  async def _guarded(self, message: str, history: list) -> HelperReply:
    if self._sem is None:
      self._sem = asyncio.Semaphore(self._max_concurrency)
    t0 = time.perf_counter()
    try:
      async with self._sem:
        reply = await asyncio.wait_for(self.helper.respond(message, list(history)), self.timeout)
      if not isinstance(reply, HelperReply):
        reply = HelperReply("info", "", error=f"malformed:{type(reply).__name__}")
    except asyncio.TimeoutError:
      reply = HelperReply("info", "", error="timeout")
    except Exception as e:  # noqa: BLE001 - a helper bug must not kill the rollout
      reply = HelperReply("info", "", error=f"exception:{type(e).__name__}")
    if not reply.latency:
      reply.latency = time.perf_counter() - t0
    return reply

  def submit(self, key: int, message: str, history: list) -> None:
    """Start a call for `key`; returns immediately."""
    fut = asyncio.run_coroutine_threadsafe(self._guarded(message, history), self._loop)
    fut.add_done_callback(lambda _: self._notify())
    self._pending[key] = fut

  def _notify(self):
    with self._changed:
      self._changed.notify_all()

  def ready(self) -> list[int]:
    return [k for k, f in self._pending.items() if f.done()]

  def pending(self) -> list[int]:
    return list(self._pending)

  def wait_any(self, timeout: float | None = None) -> list[int]:
    """Block until at least one pending call has finished; returns the finished keys."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with self._changed:
      while self._pending and not self.ready():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
          break
        self._changed.wait(left if left is not None else 1.0)
    return self.ready()

  def wait(self, key: int) -> HelperReply:
    return self.take(key, block=True)

  def take(self, key: int, block: bool = False) -> HelperReply:
    fut = self._pending.pop(key)
    return fut.result(timeout=None if block else 0)

  def close(self):
    for f in self._pending.values():
      f.cancel()
    self._pending.clear()
    try:
      closer = asyncio.run_coroutine_threadsafe(self.helper.aclose(), self._loop)
      closer.result(timeout=5)
    except Exception:  # noqa: BLE001 - closing is best effort
      pass
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=5)
