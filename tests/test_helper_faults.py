"""Helper faults under load: fault counts, Retry-After, outage policies, per-row errors, memory.

The loopback server injects faults per request (HTTP 500, 429 with Retry-After, replies
slower than the client timeout, malformed bodies) and an outage window of HTTP 503.
Every request carries ``X-Seekjax-Call: <pool>:<key>:<n>/<attempt>``, so each server
record maps to its row and to its call.
"""
import asyncio
import collections
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import Behavior, FaultConfig, cancelling_loopback_server  # noqa: E402
from peak_rss import PeakRSS  # noqa: E402
from seekjax import protocol  # noqa: E402
from seekjax.helpers import Helper, HelperReply, OpenAIHelper  # noqa: E402
from seekjax.helpers import faults  # noqa: E402
from seekjax.rollout import rollout, rollout_config  # noqa: E402
from seekjax.rollout.pool import HelperPool  # noqa: E402

TIMEOUT = 1.0        # the helper's per-attempt timeout; "slow" faults take longer
# Far above TIMEOUT: on a loaded 2-core box the client's event loop can stall for a moment,
# and a reply that is already in the socket when it wakes counts as a success, not a
# timeout (a 1.6 s fault once came back "ok" in CI). The server drops the handler when
# the client hangs up, so a longer fault costs no test time.
SLOW = 4.0
RETRY_AFTER = 0.2


@pytest.fixture(scope="module")
def server_module():
  with cancelling_loopback_server() as server:
    yield server


@pytest.fixture
def server(server_module):
  server_module.reset()
  server_module.default = Behavior("ok")
  yield server_module
  server_module.reset()
  server_module.default = Behavior("ok")


def _faults(**kw):
  """The issue's mix: 15% HTTP 500, 5% 429, 5% timeouts, 5% malformed bodies."""
  return FaultConfig(**{"p_500": 0.15, "p_429": 0.05, "p_slow": 0.05, "p_malformed": 0.05,
                        "slow_delay": SLOW, "retry_after": RETRY_AFTER, **kw})


def _helper(server, **kw):
  kw = {"timeout": TIMEOUT, "max_retries": 3, "backoff_base": 0.02, "max_concurrency": 512,
        **kw}
  return OpenAIHelper(server.base_url, "fake-llm", api_key_env=None, **kw)


def _call_of(record) -> tuple[int, str, int]:
  """(pool key, call id, attempt) of a server record, from its X-Seekjax-Call header."""
  value = next(v for k, v in record.headers.items() if k.lower() == "x-seekjax-call")
  call_id, attempt = value.rsplit("/", 1)
  return int(call_id.split(":")[1]), call_id, int(attempt)


def _failed(b: Behavior) -> bool:
  return b.kind != "ok" and not (b.kind == "slow" and b.delay < TIMEOUT)


def _by_call(server) -> dict:
  """call id -> that call's server records, in arrival order."""
  calls = collections.defaultdict(list)
  for record in sorted(server.calls, key=lambda c: c.time):
    calls[_call_of(record)[1]].append(record)
  return calls


def _run_episodes(pool, n_episodes, turns, deadline):
  """Drive `n_episodes` multi-turn episodes through the pool the way the rollout does."""
  replies = {k: [] for k in range(n_episodes)}
  for k in range(n_episodes):
    pool.submit(k, f"episode {k} turn 0", [])
  while pool.pending():
    assert time.monotonic() < deadline, f"stuck: {len(pool.pending())} calls pending"
    for k in pool.wait_any(timeout=1.0):
      replies[k].append(pool.take(k))
      if len(replies[k]) < turns:
        history = [(f"episode {k} turn {t}", r) for t, r in enumerate(replies[k])]
        pool.submit(k, f"episode {k} turn {len(replies[k])}", history)
  return replies


def test_256_episodes_under_faults_and_an_outage(server, capfd):
  server.default = Behavior("slow", delay=0.03)   # a helper that takes a little time
  pool = HelperPool(_helper(server), timeout=60.0, max_concurrency=32, on_outage="wait",
                    outage_failures=8, outage_after=1.0, outage_probe_min=0.05,
                    outage_probe_max=0.2)
  try:
    with PeakRSS() as mem:
      server.set_faults(_faults(outage=(0.6, 2.6), seed=1))
      t0 = time.monotonic()
      replies = _run_episodes(pool, 256, turns=3, deadline=t0 + 120)
      elapsed = time.monotonic() - t0
    stats = pool.stats()
  finally:
    pool.close()
  err = capfd.readouterr().err

  # Every episode finished all its turns, within the concurrency limit, with bounded memory.
  assert all(len(r) == 3 for r in replies.values())
  assert server.max_in_flight <= 32 and stats["max_in_flight"] == 32, server.max_in_flight
  assert mem.growth < 256 * 2**20, f"peak RSS grew by {mem.growth / 2**20:.0f} MiB"
  assert elapsed > 2.6  # it really waited out the outage
  # Each fault kind the server injected is counted once per attempt.
  kinds = collections.Counter(
      "ok" if not _failed(c.behavior) else
      f"http_{c.behavior.status}" if c.behavior.kind == "status" else c.behavior.kind
      for c in server.calls)
  assert stats["calls"] == 256 * 3
  # An attempt the server never recorded can only be one the client gave up on early.
  unseen = stats["attempts"] - len(server.calls)
  assert 0 <= unseen <= stats["timeout"] + stats["connection"] - kinds["slow"], unseen
  assert stats["http_500"] == kinds["http_500"] > 0
  assert stats["http_503"] == kinds["http_503"] > 0
  assert stats["rate_limited"] == kinds["rate_limit"] > 0
  assert stats["malformed"] == kinds["malformed"] > 0
  assert stats["timeout"] >= kinds["slow"] > 0
  assert stats["retry_after"] >= kinds["rate_limit"]
  assert stats["retried"] == stats["attempts"] - 256 * 3
  # The outage: detected, waited out (no call failed for it), one stderr line at each end.
  assert stats["outages"] >= 1 and stats["outage_waits"] > 0
  assert stats.get("failed_outage", 0) == 0 and stats.get("failed_http_503", 0) == 0
  assert err.count("helper outage:") == stats["outages"]
  assert err.count("helper outage over") == stats["outages"]
  # While the endpoint was down, calls were held back instead of retried at full rate:
  # 32 calls with 4 tries each would have sent 128+ requests into the outage.
  assert kinds["http_503"] <= 32 + 8 + 2.0 / 0.05, kinds["http_503"]
  # No retry came earlier than the Retry-After of the 429 before it.
  for records in _by_call(server).values():
    for a, b in zip(records, records[1:]):
      if a.behavior.kind == "rate_limit":
        assert b.time - a.time >= RETRY_AFTER, (a.time, b.time)
  # What the rows were told matches what the server did: a call failed iff its last
  # attempt failed at the server.
  failed_calls = sum(_failed(records[-1].behavior) for records in _by_call(server).values())
  got = sum(r.error is not None for rs in replies.values() for r in rs)
  assert got == stats["failed"] == failed_calls
  assert stats["ok"] + stats["failed"] == 256 * 3


def test_feedback_error_fails_fast_and_wait_degrades_after_max_wait(server, capfd):
  server.set_faults(FaultConfig(outage=(0.0, 3600.0)))
  pool = HelperPool(_helper(server), timeout=30.0, max_concurrency=8,
                    on_outage="feedback_error", outage_failures=4, outage_probe_min=0.2)
  try:
    t0 = time.monotonic()
    replies = _run_episodes(pool, 64, turns=1, deadline=t0 + 30)
    took = time.monotonic() - t0
    stats = pool.stats()
  finally:
    pool.close()
  errors = collections.Counter(r[0].error for r in replies.values())
  assert set(errors) <= {"outage", "http_503"} and errors["outage"] >= 48, errors
  assert took < 5.0 and len(server.calls) < 8 * 4 + 4 + 5.0 / 0.2, (took, len(server.calls))
  assert stats["outages"] == 1 and stats["outage_refused"] >= errors["outage"]
  assert "failing calls with error feedback" in capfd.readouterr().err

  server.reset()
  server.set_faults(FaultConfig(outage=(0.0, 3600.0)))
  pool = HelperPool(_helper(server), timeout=30.0, max_concurrency=8, on_outage="wait",
                    outage_failures=4, max_outage_wait=1.0, outage_probe_min=0.1,
                    outage_probe_max=0.2)
  try:
    t0 = time.monotonic()
    replies = _run_episodes(pool, 16, turns=1, deadline=t0 + 30)
    took = time.monotonic() - t0
    assert all(r[0].error in ("outage", "http_503") for r in replies.values())
    assert 1.0 <= took < 5.0, took
    err = capfd.readouterr().err
    assert "max_outage_wait" in err and err.count("helper outage:") == 1
    server.set_faults(None)   # the endpoint is back: the next probe ends the outage
    time.sleep(0.25)          # > outage_probe_max: this call will be the probe
    pool.submit(0, "back?", [])
    assert pool.wait(0).error is None
    assert "helper outage over" in capfd.readouterr().err
  finally:
    pool.close()


class _FlakyHelper(Helper):
  """A helper that reports connection errors until `until` (monotonic time), then answers."""

  def __init__(self, until):
    self.until, self.tries = until, 0

  async def respond(self, message, history):
    self.tries += 1
    await asyncio.sleep(0.01)
    if time.monotonic() < self.until:
      return HelperReply("info", "", error="connection")
    return HelperReply("info", "up")


def test_pool_retries_a_plain_helper_through_an_outage(capfd):
  helper = _FlakyHelper(time.monotonic() + 1.0)
  pool = HelperPool(helper, timeout=0.5, max_concurrency=4, outage_failures=3,
                    outage_probe_min=0.05, outage_probe_max=0.1)
  try:
    replies = _run_episodes(pool, 12, turns=1, deadline=time.monotonic() + 20)
    stats = pool.stats()
  finally:
    pool.close()
  # The first few calls fail before the outage is recognised; everyone after waits it out,
  # and the paused seconds do not count against the 0.5 s call timeout.
  errors = [r[0].error for r in replies.values()]
  assert errors.count(None) >= 12 - 3 and set(errors) <= {None, "connection"}
  assert stats["outages"] == 1 and stats["connection"] >= 3 and stats["probes"] >= 1
  assert helper.tries < 12 + 3 + 1.0 / 0.05
  assert "helper outage over" in capfd.readouterr().err


def test_gate_rules():
  stats = faults.FaultStats()
  gate = faults.OutageGate(faults.OutagePolicy(failures=3, after=5.0), stats,
                           clock=lambda: now)
  call = faults.CallContext("1:0:0", 0, gate)
  now = 0.0
  assert faults.is_outage_error("http_502") and faults.is_outage_error("connection")
  assert not faults.is_outage_error("http_429") and not faults.is_outage_error("timeout")
  assert not faults.is_outage_error("exception:ConnectionError")   # a helper bug
  gate.after_attempt(call, "http_500")
  gate.after_attempt(call, "rate_limited")   # the endpoint answered: the run restarts
  gate.after_attempt(call, "http_500")
  gate.after_attempt(call, "timeout")        # neutral
  assert not gate.in_outage
  now = 6.0
  assert gate.after_attempt(call, "connection") is True   # two failures over > 5 s
  assert gate.in_outage and stats.snapshot()["outages"] == 1
  call.attempt_start = 5.0                  # started before the outage: proves nothing
  gate.after_attempt(call, None)
  assert gate.in_outage
  call.attempt_start = 6.5
  gate.after_attempt(call, None)
  assert not gate.in_outage and stats.snapshot()["outage_seconds"] == 0.0
  with pytest.raises(ValueError, match="on_outage"):
    faults.OutagePolicy(on_outage="retry")
  cfg = rollout_config(on_outage="feedback_error", outage_failures=5)
  pool = HelperPool.from_config(_FlakyHelper(0), cfg)
  assert pool.policy.on_outage == "feedback_error" and pool.policy.failures == 5
  pool.close()


def test_last_failure_waits_while_an_outage_forms():
  """A call out of retries on a 5xx waits while a run of failures forms: it retries if
  the run becomes an outage, and gives up once a fresh answer ends the run (a stale answer,
  to an attempt sent before the run began, does not)."""
  stats = faults.FaultStats()
  gate = faults.OutageGate(faults.OutagePolicy(failures=3, after=2.0), stats)
  last, other = (faults.CallContext(f"1:{k}:0", k, gate) for k in (0, 1))
  for _ in range(3):
    stats.enter()   # calls in flight besides the one that holds

  async def scenario(end_run):
    other.attempt_start = time.monotonic() - 60.0     # sent long before the run
    last.attempt_start = time.monotonic()
    gate.after_attempt(last, "http_503")               # run 1 of 3: no outage yet
    held = asyncio.ensure_future(last.hold_last_failure("http_503"))
    await asyncio.sleep(0.05)
    gate.after_attempt(other, None)                     # stale answer: the run stays open
    await asyncio.sleep(0.05)
    assert not held.done()
    other.attempt_start = time.monotonic()
    if end_run:
      gate.after_attempt(other, None)                   # fresh answer: endpoint is up
    else:
      gate.after_attempt(other, "http_503")
      gate.after_attempt(other, "connection")          # run 3 of 3: an outage starts
    return await asyncio.wait_for(held, 1.0)

  assert asyncio.run(scenario(end_run=False)) is True and gate.in_outage
  other.attempt_start = time.monotonic()
  gate.after_attempt(other, None)                       # the outage ends
  assert not gate.in_outage
  assert asyncio.run(scenario(end_run=True)) is False
  # Not an outage-type error, or nothing else in flight: give up at once.
  assert asyncio.run(last.hold_last_failure("timeout")) is False
  for _ in range(3):
    stats.leave()
  gate.after_attempt(last, "http_500")
  assert asyncio.run(last.hold_last_failure("http_500")) is False


def test_rollout_rows_count_every_failed_call(tiny_model, server, capfd):
  """Each row's helper_errors equals the failed calls the server saw for that row.

  Forced turns make a random tiny model send real messages through `rollout` (the
  same pool path as sampled messages), without the cost of overfitting a model.
  """
  n_q = 8
  questions = [f"question {i}?" for i in range(n_q)]
  turn = "<think>ask</think><message>{}</message>"
  forced = [[(turn.format(f"q{q} m{t}"), f"q{q} m{t}") for t in range(3)] for q in range(n_q)]
  cfg = rollout_config(max_turns=3, max_new_tokens=8, max_feedback_tokens=32,
                       temperature=1.0, max_steps_per_call=8, helper_timeout=60.0,
                       on_outage="wait", outage_failures=5, outage_probe_min=0.05,
                       outage_probe_max=0.2)
  server.default = Behavior("slow", delay=0.02)
  # Scripted first, so that timing cannot move them: a malformed body; a call out of
  # retries (4 failures < 5 do not make an outage); then an outage of 8 HTTP 503s that
  # starts at the next call, which waits it out. Then the random mix.
  server.script(Behavior("malformed"), *[Behavior("status", status=500)] * 4,
                *[Behavior("status", status=503)] * 8)
  server.set_faults(_faults(seed=3))
  eps = rollout(tiny_model, questions, _helper(server), cfg, 0, forced=forced)
  per_row = collections.Counter()
  for records in _by_call(server).values():
    key = _call_of(records[0])[0]   # forced calls use key -1 - row, sampled ones the row
    per_row[key if key >= 0 else -1 - key] += _failed(records[-1].behavior)
  assert (eps.num_messages == 3).all()
  assert [int(e) for e in eps.helper_errors] == [per_row[r] for r in range(n_q)]
  assert eps.helper_errors.sum() >= 2
  for r in range(n_q):   # and each failure reached the row as error feedback
    shown = (eps.transcripts[r].count(protocol.HELPER_UNAVAILABLE_TEXT)
             + eps.transcripts[r].count(protocol.MALFORMED_REPLY_TEXT))
    assert shown == eps.helper_errors[r] == sum(x.error is not None for x in eps.replies[r])
  err = capfd.readouterr().err
  assert err.count("helper outage:") == err.count("helper outage over") >= 1
