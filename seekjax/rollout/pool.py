"""The host-side helper pool: owns the asyncio loop and thread; starts calls, never blocks JAX.

`submit` is what the decode loop's io_callback calls. It only schedules the helper's
coroutine on the pool's own event-loop thread, and returns at once. Exceptions and
timeouts never cross into the callback: they become a HelperReply with `error` set.

The pool also handles helper faults (`seekjax.helpers.faults`). It counts every
attempt's outcome in `stats()`, and its outage gate pauses calls (policy "wait") or
fails them fast (policy "feedback_error") while the helper is down. A call's `timeout`
starts once the call holds a concurrency slot, and it leaves out any time spent paused
in an outage.

A stop request (SIGTERM, SIGINT) must not wait for slow helpers: a pool made with
`should_stop` calls it at least every `STOP_POLL` seconds while it waits, and when it
raises, the exception leaves the wait; the pool's owner then closes the pool, which
cancels the pending calls. `run_coroutine` does the same for one coroutine (the start
probe, the cold start's demonstrations, an LLM judge's verdicts).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time

from seekjax import protocol
from seekjax.protocol import HelperReply
from seekjax.helpers import faults

_pool_ids = itertools.count(1)
STOP_POLL = 0.1   # seconds between `should_stop` checks while waiting on helper calls


def run_coroutine(coro, should_stop=None, poll: float = STOP_POLL):
  """`asyncio.run(coro)`, calling `should_stop()` every `poll` seconds while it runs.

  should_stop: None, or a callable that raises to abandon the wait; the coroutine is then
    cancelled (its helper calls with it) and the exception propagates.
  """
  if should_stop is None:
    return asyncio.run(coro)

  async def watched():
    task = asyncio.ensure_future(coro)
    try:
      while True:
        done, _ = await asyncio.wait({task}, timeout=poll)
        if done:
          return task.result()
        should_stop()
    except BaseException:
      task.cancel()
      await asyncio.gather(task, return_exceptions=True)
      raise
  return asyncio.run(watched())


def _failed(error: str) -> HelperReply:
  return HelperReply("info", protocol.HELPER_UNAVAILABLE_TEXT, error=error)


class HelperPool:
  """Runs `helper.respond` calls concurrently on a private asyncio loop.

  Keys identify a pending call (the engine uses the batch row). One pool serves one
  rollout at a time; `close()` stops its thread. The pool does not own the helper: it
  never closes it (the helper's owner does, at the end of the run), so one helper can
  serve any number of pools, one after another.

  helper: a `seekjax.helpers.Helper`. A helper with ``reports_attempts = True`` reports
    each of its own attempts (and so its retries) to the outage gate. For any other
    helper, the pool counts one attempt per call, and it retries calls that fail during
    an outage under policy "wait".
  timeout: seconds one call may take (retries included, outage pauses excluded).
  max_concurrency: most calls in flight at once.
  on_outage / outage_failures / outage_after / max_outage_wait / outage_probe_min /
    outage_probe_max: the outage policy (`faults.OutagePolicy`).
  should_stop: None, or a callable that raises to abandon a wait (see the module docstring).
  """

  def __init__(self, helper, timeout: float = 60.0, max_concurrency: int = 64, *,
               on_outage: str = "wait", outage_failures: int = 8, outage_after: float = 10.0,
               max_outage_wait: float = 300.0, outage_probe_min: float = 0.25,
               outage_probe_max: float = 2.0, should_stop=None):
    self.helper = helper
    self.should_stop = should_stop
    self.timeout = timeout
    self.policy = faults.OutagePolicy(on_outage, outage_failures, outage_after,
                                      max_outage_wait, outage_probe_min, outage_probe_max)
    self._stats = faults.FaultStats()
    self._gate = faults.OutageGate(self.policy, self._stats)
    self._name = next(_pool_ids)
    self._call_ids = itertools.count()
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="seekjax-helper-pool",
                                    daemon=True)
    self._thread.start()
    self._sem = None
    self._max_concurrency = max_concurrency
    self._pending: dict[int, concurrent.futures.Future] = {}
    self._changed = threading.Condition()

  @classmethod
  def from_config(cls, helper, cfg, should_stop=None) -> "HelperPool":
    """A pool set up from a rollout config (`seekjax.rollout.rollout_config`)."""
    def get(name, default):
      return getattr(cfg, name, default)
    return cls(helper, timeout=cfg.helper_timeout, max_concurrency=cfg.helper_concurrency,
               on_outage=get("on_outage", "wait"),
               outage_failures=get("outage_failures", 8),
               outage_after=get("outage_after", 10.0),
               max_outage_wait=get("max_outage_wait", 300.0),
               outage_probe_min=get("outage_probe_min", 0.25),
               outage_probe_max=get("outage_probe_max", 2.0), should_stop=should_stop)

  def stats(self) -> dict:
    """Counts of calls, attempts and faults so far (`faults.COUNTERS`, `faults.SECONDS`).

    outage_seconds includes an outage still going on.
    """
    stats = self._stats.snapshot()
    stats["outage_seconds"] = round(stats["outage_seconds"] + self._gate.ongoing_seconds(), 3)
    return stats

  async def _guarded(self, key: int, message: str, history: list) -> HelperReply:
    call = faults.CallContext(f"{self._name}:{key}:{next(self._call_ids)}", key, self._gate)
    faults.CURRENT_CALL.set(call)   # this task's own context: the helper sees this call
    self._stats.add("calls")
    if self._sem is None:
      self._sem = asyncio.Semaphore(self._max_concurrency)
    t0 = time.perf_counter()
    try:
      async with self._sem:
        self._stats.enter()
        try:
          reply = await self._with_timeout(call, message, history)
        finally:
          self._stats.leave()
    finally:
      self._gate.release(call)
    if reply.error is None:
      self._stats.add("ok")
    else:
      self._stats.add("failed")
      self._stats.add("failed_" + faults.fault_kind(reply.error))
    if not reply.latency:
      reply.latency = time.perf_counter() - t0
    return reply

  async def _with_timeout(self, call, message: str, history: list) -> HelperReply:
    """Run the call's attempts; give up after `timeout` seconds not paused at the gate."""
    task = asyncio.ensure_future(self._attempts(call, message, history))
    start = time.monotonic()
    try:
      while True:
        now = time.monotonic()
        left = self.timeout - (now - start - call.paused_for(now))
        if left <= 0:
          break
        done, _ = await asyncio.wait({task}, timeout=max(left, 0.02))
        if done:
          return task.result()
    except asyncio.CancelledError:
      task.cancel()
      raise
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if not getattr(self.helper, "reports_attempts", False):
      call.after_attempt("timeout")
    return HelperReply("info", "", error="timeout")

  async def _attempts(self, call, message: str, history: list) -> HelperReply:
    reports = getattr(self.helper, "reports_attempts", False)
    while True:
      if not reports:
        refused = await call.before_attempt()
        if refused is not None:
          return _failed(refused)
      try:
        reply = await self.helper.respond(message, list(history))
        if not isinstance(reply, HelperReply):
          reply = HelperReply("info", "", error=f"malformed:{type(reply).__name__}")
      except asyncio.CancelledError:
        raise
      except Exception as e:  # noqa: BLE001 - a helper bug must not kill the rollout
        reply = HelperReply("info", "", error=f"exception:{type(e).__name__}")
      if reports:
        return reply
      if call.after_attempt(reply.error):
        continue   # an outage is on: the gate paces the retry
      if reply.error is None or not await call.hold_last_failure(reply.error):
        return reply

  def submit(self, key: int, message: str, history: list) -> None:
    """Start a call for `key`; returns immediately."""
    fut = asyncio.run_coroutine_threadsafe(self._guarded(key, message, history), self._loop)
    fut.add_done_callback(lambda _: self._notify())
    self._pending[key] = fut

  def _notify(self):
    with self._changed:
      self._changed.notify_all()

  def ready(self) -> list[int]:
    return [k for k, f in self._pending.items() if f.done()]

  def pending(self) -> list[int]:
    return list(self._pending)

  def _check_stop(self) -> None:
    if self.should_stop is not None:
      self.should_stop()

  def wait_any(self, timeout: float | None = None) -> list[int]:
    """Block until at least one pending call has finished; returns the finished keys.

    Raises whatever `should_stop` raises (checked every STOP_POLL seconds).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with self._changed:
      while self._pending and not self.ready():
        self._check_stop()
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
          break
        self._changed.wait(STOP_POLL if left is None else min(left, STOP_POLL))
    return self.ready()

  def wait(self, key: int) -> HelperReply:
    return self.take(key, block=True)

  def take(self, key: int, block: bool = False) -> HelperReply:
    """The reply of `key`'s call (block: wait for it, checking `should_stop`)."""
    fut = self._pending[key]
    while block and not fut.done():
      self._check_stop()
      concurrent.futures.wait([fut], timeout=STOP_POLL)
    del self._pending[key]
    return fut.result(timeout=0)

  def close(self):
    for f in self._pending.values():
      f.cancel()
    self._pending.clear()

    async def finish():
      self._gate.close()
      # The pool does not own the helper: it releases only what is bound to its own loop
      # (`Helper.release_loop`), and never closes the helper, which the next rollout uses.
      release = getattr(self.helper, "release_loop", None)
      if release is not None:
        await release()

    try:
      asyncio.run_coroutine_threadsafe(finish(), self._loop).result(timeout=5)
    except Exception:  # noqa: BLE001 - closing is best effort
      pass
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=5)
