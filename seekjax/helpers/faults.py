"""Helper faults: counts each kind of failed call and pauses calls while the helper is down.

The pool (`seekjax.rollout.pool.HelperPool`) owns one `FaultStats` and one `OutageGate`
per rollout. Each helper call runs inside a `CallContext`, which is kept in a
contextvar. A helper that makes its own network attempts (``OpenAIHelper`` sets
``reports_attempts = True``) reports each attempt through `current_call()`: it calls
``await call.before_attempt()`` before it sends and ``call.after_attempt(error, retry_after)``
when the attempt ends. For any other helper, the pool counts one attempt per call.

Outage: an outage starts after a run of consecutive outage-type failures (connection
errors, HTTP 5xx). The run must be `failures` long, or hold at least two failures and
span more than `after` seconds. During an outage, one probe attempt at a time goes
through. (A call whose retries run out on such a failure while a run is forming, and
other calls are in flight, waits up to `after` seconds to see whether it becomes an
outage.) Probes are spaced by a backoff that grows from `probe_min` to `probe_max`
seconds, and that also honours any Retry-After. The outage ends at the first success of
an attempt that started after the outage began. Other attempts are handled by the
`on_outage` policy:

  "wait"            the attempt pauses until the outage ends. Time spent paused does not
                    count against the call's timeout. Failures during the outage do not use
                    up the helper's retries. After `max_wait` seconds of outage, the gate
                    degrades to "feedback_error" until the endpoint answers again.
  "feedback_error"  the attempt is refused at once with error "outage", and the row gets
                    the defined "helper unavailable" feedback.

The gate prints one line to stderr when an outage starts, when it degrades, and when it
ends. All gate methods run on the pool's event-loop thread. `FaultStats` may be read
from any thread.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import sys
import threading
import time

OUTAGE = "outage"   # error of a call refused (or given up) because the helper is down
ON_OUTAGE = ("wait", "feedback_error")

# Counters that stats() always reports, zero or not. Fault kinds count attempts; an HTTP
# status other than 500 gets its own key the first time it happens ("http_503"), and so
# does "exception" (a helper that raised).
COUNTERS = (
    "calls",           # helper calls submitted (one per message sent)
    "ok",              # calls that ended with a usable reply
    "failed",          # calls that ended with reply.error set (split by kind in failed_<kind>)
    "attempts",        # attempts sent to the endpoint (retries included, refusals not)
    "retried",         # attempts after a call's first
    "http_500", "rate_limited", "timeout", "malformed", "connection",   # per attempt
    "retry_after",     # failed attempts that carried a Retry-After header
    "outages",         # outages detected
    "outage_waits",    # calls that paused at the gate (policy "wait"), once per outage
    "outage_refused",  # attempts refused during an outage (feedback_error, or degraded)
    "probes",          # attempts let through during an outage to test the endpoint
    "max_in_flight",   # most calls holding a concurrency slot at once
)
SECONDS = ("outage_seconds", "outage_wait_seconds")


def fault_kind(error: str) -> str:
  """The counter a failed attempt or call goes under: "exception:KeyError" -> "exception"."""
  return error.split(":", 1)[0]


def is_outage_error(error: str | None) -> bool:
  """Connection failures and HTTP 5xx, which mean the endpoint is down or broken.

  A helper that raised ("exception:<Type>") has a bug; that is not an outage.
  """
  if error is None:
    return False
  return error == "connection" or (error.startswith("http_5") and error[5:].isdigit())


def endpoint_answered(error: str | None) -> bool:
  """Success, or a failure that shows the endpoint is up (429, malformed body, HTTP 4xx)."""
  return error is None or error in ("rate_limited", "malformed") or error.startswith("http_4")


@dataclasses.dataclass(frozen=True)
class OutagePolicy:
  """When an outage starts, and what calls do during one (see the module docstring)."""

  on_outage: str = "wait"
  failures: int = 8        # this many consecutive outage-type failures start an outage...
  after: float = 10.0      # ...or a run of them (>= 2) spanning more than this many seconds
  max_wait: float = 300.0  # policy "wait": longest outage before degrading to feedback_error
  probe_min: float = 0.25  # first gap between probes; it doubles after each failed probe...
  probe_max: float = 2.0   # ...up to this (so recovery is seen within ~2 s)

  def __post_init__(self):
    if self.on_outage not in ON_OUTAGE:
      raise ValueError(f"on_outage must be one of {ON_OUTAGE}, got {self.on_outage!r}")
    if self.failures < 1:
      raise ValueError(f"outage_failures must be >= 1, got {self.failures}")
    if min(self.after, self.max_wait, self.probe_min) <= 0 or self.probe_max < self.probe_min:
      raise ValueError(f"outage times must be > 0 and probe_max >= probe_min, got {self}")


class FaultStats:
  """Thread-safe counters of helper calls, attempts and faults (keys: COUNTERS, SECONDS)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._counts = collections.Counter(dict.fromkeys(COUNTERS, 0))
    self._seconds = dict.fromkeys(SECONDS, 0.0)
    self._in_flight = 0

  def add(self, key: str, n: int = 1) -> None:
    with self._lock:
      self._counts[key] += n

  def add_seconds(self, key: str, seconds: float) -> None:
    with self._lock:
      self._seconds[key] += seconds

  def enter(self) -> None:
    """A call took a concurrency slot."""
    with self._lock:
      self._in_flight += 1
      self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)

  def leave(self) -> None:
    with self._lock:
      self._in_flight -= 1

  def in_flight(self) -> int:
    """Calls holding a concurrency slot now."""
    with self._lock:
      return self._in_flight

  def snapshot(self) -> dict:
    """Counters as a plain dict (ints, and floats for the *_seconds keys)."""
    with self._lock:
      return {**self._counts, **{k: round(v, 3) for k, v in self._seconds.items()}}


@dataclasses.dataclass(eq=False)
class CallContext:
  """One helper call as the gate sees it; `current_call()` returns it inside the call."""

  call_id: str          # "<pool>:<key>:<n>", unique in the process; sent as X-Seekjax-Call
  key: int              # the pool key (the batch row in a rollout)
  gate: "OutageGate"
  attempts: int = 0     # attempts that have ended (so also the index of the next one)
  attempt_start: float = 0.0
  paused: float = 0.0   # seconds spent waiting at the gate, ended waits only
  wait_start: float | None = None
  paused_in: float | None = None   # start time of the last outage this call paused in

  def paused_for(self, now: float) -> float:
    """Seconds this call has spent paused at the gate, including a wait in progress."""
    return self.paused + (now - self.wait_start if self.wait_start is not None else 0.0)

  async def before_attempt(self) -> str | None:
    """Wait until this attempt may go out; returns None, or the error if it is refused."""
    return await self.gate.before_attempt(self)

  def after_attempt(self, error: str | None, retry_after: float | None = None) -> bool:
    """Report how the attempt ended; True means retry now, the gate paces it."""
    return self.gate.after_attempt(self, error, retry_after)

  async def hold_last_failure(self, error: str) -> bool:
    """The call is about to give up on `error`; True means retry instead (see the gate)."""
    return await self.gate.hold_last_failure(self, error)


CURRENT_CALL: contextvars.ContextVar = contextvars.ContextVar("seekjax_helper_call",
                                                               default=None)


def current_call() -> CallContext | None:
  """The CallContext of the helper call running in this task (None outside a pool)."""
  return CURRENT_CALL.get()


def _say(line: str) -> None:
  print(f"[seekjax.helper] {line}", file=sys.stderr, flush=True)


class OutageGate:
  """Detects helper outages from attempt outcomes and decides which attempts may go out."""

  def __init__(self, policy: OutagePolicy, stats: FaultStats, clock=time.monotonic):
    self.policy = policy
    self.stats = stats
    self.clock = clock
    self._run = 0                 # consecutive outage-type failures
    self._run_start = 0.0
    self._since: float | None = None   # when the current outage started
    self._degraded = False
    self._prober: CallContext | None = None   # the call whose attempt is the probe
    self._probe_gap = policy.probe_min
    self._next_probe = 0.0
    self._paused_calls = 0        # calls that paused during the current outage
    self._wake = asyncio.Event()

  @property
  def in_outage(self) -> bool:
    return self._since is not None

  def _changed(self) -> None:
    self._wake.set()
    self._wake = asyncio.Event()

  async def before_attempt(self, call: CallContext) -> str | None:
    try:
      while self._since is not None:
        now = self.clock()
        if (not self._degraded and self.policy.on_outage == "wait"
            and now - self._since > self.policy.max_wait):
          self._degraded = True
          _say(f"helper still down after {self.policy.max_wait:.0f}s (max_outage_wait); "
               "failing calls with error feedback until it answers again")
          self._changed()
        if self._prober is None and now >= self._next_probe:
          self._prober = call
          self.stats.add("probes")
          break
        if self.policy.on_outage == "feedback_error" or self._degraded:
          self.stats.add("outage_refused")
          return OUTAGE
        if call.wait_start is None:
          call.wait_start = now
          if call.paused_in != self._since:   # count each call once per outage
            call.paused_in = self._since
            self._paused_calls += 1
            self.stats.add("outage_waits")
        timeout = self._since + self.policy.max_wait - now + 0.01
        if self._prober is None:
          timeout = min(timeout, self._next_probe - now)
        wake = self._wake
        try:
          await asyncio.wait_for(wake.wait(), max(timeout, 0.001))
        except asyncio.TimeoutError:
          pass
    finally:
      self._end_wait(call)
    call.attempt_start = self.clock()
    return None

  def _end_wait(self, call: CallContext) -> None:
    if call.wait_start is not None:
      waited = self.clock() - call.wait_start
      call.paused += waited
      call.wait_start = None
      self.stats.add_seconds("outage_wait_seconds", waited)

  def after_attempt(self, call: CallContext, error: str | None,
                    retry_after: float | None = None) -> bool:
    now = self.clock()
    self.stats.add("attempts")
    if call.attempts:
      self.stats.add("retried")
    call.attempts += 1
    if error is not None:
      self.stats.add(fault_kind(error))
      if retry_after is not None:
        self.stats.add("retry_after")
    was_probe = self._prober is call
    self.release(call)
    if endpoint_answered(error):
      # An answer to an attempt sent before the run of failures began says nothing about
      # the endpoint now (a slow reply can land inside an outage): it does not end the run.
      if self._run and call.attempt_start >= self._run_start:
        self._run = 0
        self._changed()
      if self._since is not None and call.attempt_start >= self._since:
        self._end(now)
      return False
    if is_outage_error(error):
      if self._run == 0:
        self._run_start = now
      self._run += 1
      if self._since is None and (self._run >= self.policy.failures or (
          self._run >= 2 and now - self._run_start > self.policy.after)):
        self._start(now, error)
    if self._since is None:
      return False
    if was_probe:  # still down: back off before the next probe
      self._next_probe = now + max(self._probe_gap, retry_after or 0.0)
      self._probe_gap = min(2 * self._probe_gap, self.policy.probe_max)
      self._changed()
    return (is_outage_error(error) and self.policy.on_outage == "wait"
            and not self._degraded)

  async def hold_last_failure(self, call: CallContext, error: str) -> bool:
    """A call's last allowed attempt failed with `error`: wait while an outage may be forming.

    Without this, a call whose retries run out on a 5xx just before the run of failures
    reaches `failures` would fail, although the outage it hit is about to be waited out.
    The call waits (up to `after` seconds) while other calls are in flight and the run is
    open. Returns True (retry; the gate paces it) once an outage under policy "wait" is
    on, and False (give up) when the endpoint answers again, nothing else is in flight,
    or the wait runs out.
    """
    if not is_outage_error(error):
      return False
    deadline = self.clock() + self.policy.after
    while self._since is None:
      now = self.clock()
      if self._run == 0 or self.stats.in_flight() <= 1 or now >= deadline:
        return False
      wake = self._wake
      try:
        await asyncio.wait_for(wake.wait(), deadline - now)
      except asyncio.TimeoutError:
        pass
    return self.policy.on_outage == "wait" and not self._degraded

  def release(self, call: CallContext) -> None:
    """Free the probe slot if `call` holds it (its attempt ended, or it was cancelled)."""
    if self._prober is call:
      self._prober = None
      self._changed()
    self._end_wait(call)

  def _start(self, now: float, error: str) -> None:
    self._since, self._degraded, self._paused_calls = now, False, 0
    self._probe_gap = self.policy.probe_min
    self._next_probe = now + self._probe_gap
    self.stats.add("outages")
    then = (f"waiting for it (up to {self.policy.max_wait:.0f}s)"
            if self.policy.on_outage == "wait" else "failing calls with error feedback")
    _say(f"helper outage: {self._run} consecutive failures (last: {error}); {then}")
    self._changed()

  def _end(self, now: float) -> None:
    took = now - self._since
    self.stats.add_seconds("outage_seconds", took)
    _say(f"helper outage over after {took:.1f}s ({self._paused_calls} calls paused)")
    self._since, self._degraded = None, False
    self._changed()

  def ongoing_seconds(self) -> float:
    """Seconds the current outage has lasted (0 when none); safe from any thread."""
    since = self._since
    return 0.0 if since is None else self.clock() - since

  def close(self) -> None:
    """At pool close: account for an outage that is still going on."""
    if self._since is not None:
      took = self.clock() - self._since
      self.stats.add_seconds("outage_seconds", took)
      _say(f"helper outage still on at close, after {took:.1f}s")
      self._since = None
