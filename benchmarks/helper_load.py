"""Helper faults under load: 256 episodes through the helper pool, with faults and a 30 s outage.

Runs the helper pool (`seekjax.rollout.pool.HelperPool`) with the real `OpenAIHelper`
against the loopback OpenAI-compatible server of tests/loopback_server.py. No model is
involved. Each episode sends `--turns` messages in sequence, and the episodes are driven
the way the rollout driver drives them (submit / wait_any / take). Scenarios, side by
side:

  clean           no faults (the baseline wall time)
  wait            per-attempt faults (15% HTTP 500, 5% HTTP 429 with Retry-After, 5%
                  replies slower than the client timeout, 5% malformed bodies), plus an
                  outage of HTTP 503 for --outage seconds; on_outage="wait"
  feedback_error  the same faults and outage; on_outage="feedback_error"
  no_gate         the same faults and outage, with outage detection off
                  (outage_failures=10**9): each call just retries with backoff

The table reports, per scenario: wall and CPU time, calls and how they ended, attempts by fault
kind (from `pool.stats()`), the server's most requests in flight (the limit is
--concurrency), the requests sent while the server was down, how long after the outage
ended the first call got through, the shortest gap from a 429 to that call's retry
(never below Retry-After), and the growth of the process's peak RSS.

  .venv/bin/python benchmarks/helper_load.py [--episodes 256] [--turns 3]
      [--concurrency 32] [--outage 30] [--scenarios clean,wait,feedback_error,no_gate]
      [--out benchmarks/results/helper_load.json]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import functools
import json
import logging
import os
import statistics
import sys
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from aiohttp import web  # noqa: E402

from loopback_server import Behavior, FaultConfig, LoopbackServer  # noqa: E402
from peak_rss import PeakRSS  # noqa: E402
from seekjax.helpers import OpenAIHelper  # noqa: E402
from seekjax.rollout.pool import HelperPool  # noqa: E402

SCENARIOS = ("clean", "wait", "feedback_error", "no_gate")


def start_server() -> LoopbackServer:
  """The loopback server, cancelling a handler when its client hangs up (as vLLM does)."""
  runner = functools.partial(web.AppRunner, handler_cancellation=True)
  with mock.patch.object(web, "AppRunner", runner):
    return LoopbackServer().start()


def run_episodes(pool, n_episodes: int, turns: int) -> dict:
  """Episodes of `turns` messages each, driven like the rollout driver drives the pool."""
  replies = {k: [] for k in range(n_episodes)}
  for k in range(n_episodes):
    pool.submit(k, f"episode {k} turn 0", [])
  while pool.pending():
    for k in pool.wait_any(timeout=1.0):
      replies[k].append(pool.take(k))
      if len(replies[k]) < turns:
        history = [(f"episode {k} turn {t}", r) for t, r in enumerate(replies[k])]
        pool.submit(k, f"episode {k} turn {len(replies[k])}", history)
  return replies


def _call_id(record) -> str:
  value = next(v for k, v in record.headers.items() if k.lower() == "x-seekjax-call")
  return value.rsplit("/", 1)[0]


def run_scenario(server, name: str, args) -> dict:
  server.reset()
  server.default = Behavior("slow", delay=args.latency)
  helper = OpenAIHelper(server.base_url, "fake-llm", api_key_env=None, timeout=args.timeout,
                        max_retries=3, backoff_base=0.25, max_concurrency=1024)
  policy = {"on_outage": "feedback_error" if name == "feedback_error" else "wait"}
  if name == "no_gate":
    policy["outage_failures"], policy["outage_after"] = 10**9, 1e9
  pool = HelperPool(helper, timeout=args.call_timeout, max_concurrency=args.concurrency,
                    **policy)
  window = (args.outage_start, args.outage_start + args.outage)
  if name != "clean":
    server.set_faults(FaultConfig(p_500=0.15, p_429=0.05, p_slow=0.05, p_malformed=0.05,
                                  slow_delay=args.timeout * 1.5, retry_after=args.retry_after,
                                  outage=window, seed=args.seed))
  else:
    server.set_faults(FaultConfig(seed=args.seed))   # starts the clock; no faults
  t0_server = time.monotonic()
  try:
    with PeakRSS() as mem:
      t0, c0 = time.monotonic(), time.process_time()
      replies = run_episodes(pool, args.episodes, args.turns)
      wall, cpu = time.monotonic() - t0, time.process_time() - c0
    stats = pool.stats()
  finally:
    pool.close()

  calls = sorted(server.calls, key=lambda c: c.time)
  down = [c for c in calls if c.behavior.kind == "status" and c.behavior.status == 503]
  outage_end = t0_server + window[1]
  after = [c.time - outage_end for c in calls
           if c.time >= outage_end and c.behavior.kind in ("ok", "slow")
           and c.behavior.delay < args.timeout]
  gaps, by_call = [], collections.defaultdict(list)
  for c in calls:
    by_call[_call_id(c)].append(c)
  for records in by_call.values():
    gaps += [b.time - a.time for a, b in zip(records, records[1:])
             if a.behavior.kind == "rate_limit"]
  latencies = sorted(r.latency for rs in replies.values() for r in rs)
  errors = collections.Counter(r.error for rs in replies.values() for r in rs if r.error)
  return {
      "scenario": name, "wall_s": wall, "cpu_s": cpu, "stats": stats, "errors": dict(errors),
      "server_requests": len(calls), "server_max_in_flight": server.max_in_flight,
      "requests_during_outage": len(down) if name != "clean" else 0,
      "first_ok_after_outage_s": min(after) if name != "clean" and after else None,
      "min_retry_after_gap_s": min(gaps) if gaps else None,
      "latency_p50_s": statistics.median(latencies),
      "latency_p99_s": latencies[int(0.99 * (len(latencies) - 1))],
      "rss_growth_mib": mem.growth / 2**20, "rss_start_mib": mem.start / 2**20,
  }


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.2f}"
  return str(v)


def _split_failures(r: dict) -> str:
  outage, down = r["errors"].get("outage", 0), r["errors"].get("http_503", 0)
  return f"{outage} / {down} / {r['stats']['failed'] - outage - down}"


def table(results: list[dict]) -> str:
  rows = [
      ("wall time (s)", lambda r: r["wall_s"]),
      ("CPU time, client + server (s)", lambda r: r["cpu_s"]),
      ("calls", lambda r: r["stats"]["calls"]),
      ("ok / failed calls", lambda r: f"{r['stats']['ok']} / {r['stats']['failed']}"),
      ("failed: outage / http_503 / other", lambda r: _split_failures(r)),
      ("attempts (retried)", lambda r: f"{r['stats']['attempts']} ({r['stats']['retried']})"),
      ("http_500 / 429 / timeout / malformed", lambda r: (
          f"{r['stats']['http_500']} / {r['stats']['rate_limited']} / "
          f"{r['stats']['timeout']} / {r['stats']['malformed']}")),
      ("http_503 (outage) attempts", lambda r: r["stats"].get("http_503", 0)),
      ("requests sent while down", lambda r: r["requests_during_outage"]),
      ("outages detected / seconds", lambda r: (
          f"{r['stats']['outages']} / {r['stats']['outage_seconds']:.1f}")),
      ("calls paused / refused / probes", lambda r: (
          f"{r['stats']['outage_waits']} / {r['stats']['outage_refused']} / "
          f"{r['stats']['probes']}")),
      ("first ok after outage end (s)", lambda r: r["first_ok_after_outage_s"]),
      ("min 429 -> retry gap (s)", lambda r: r["min_retry_after_gap_s"]),
      ("max in flight: pool / server", lambda r: (
          f"{r['stats']['max_in_flight']} / {r['server_max_in_flight']}")),
      ("call latency p50 / p99 (s)", lambda r: (
          f"{r['latency_p50_s']:.2f} / {r['latency_p99_s']:.2f}")),
      ("peak RSS growth (MiB)", lambda r: r["rss_growth_mib"]),
  ]
  head = "| | " + " | ".join(r["scenario"] for r in results) + " |"
  sep = "|---" * (len(results) + 1) + "|"
  lines = [head, sep]
  for label, get in rows:
    lines.append(f"| {label} | " + " | ".join(_fmt(get(r)) for r in results) + " |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--episodes", type=int, default=256)
  p.add_argument("--turns", type=int, default=3)
  p.add_argument("--concurrency", type=int, default=32)
  p.add_argument("--latency", type=float, default=0.2, help="seconds per ok reply")
  p.add_argument("--timeout", type=float, default=2.0, help="per-attempt client timeout")
  p.add_argument("--call-timeout", type=float, default=60.0, help="pool timeout per call")
  p.add_argument("--retry-after", type=float, default=1.0)
  p.add_argument("--outage", type=float, default=30.0, help="outage length, seconds")
  p.add_argument("--outage-start", type=float, default=3.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--scenarios", default=",".join(SCENARIOS))
  p.add_argument("--out", default=None, help="write the results as JSON here")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.ERROR)   # the helper warns on every failed call
  server = start_server()
  results = []
  try:
    warm = argparse.Namespace(**{**vars(args), "episodes": 4, "turns": 1})
    run_scenario(server, "clean", warm)   # first-use imports and connections, not timed
    for name in args.scenarios.split(","):
      if name not in SCENARIOS:
        raise SystemExit(f"unknown scenario {name!r}; choose from {SCENARIOS}")
      print(f"[helper_load] {name} ...", file=sys.stderr, flush=True)
      results.append(run_scenario(server, name, args))
  finally:
    server.stop()
  print(f"{args.episodes} episodes x {args.turns} turns, concurrency {args.concurrency}, "
        f"ok latency {args.latency}s, attempt timeout {args.timeout}s, "
        f"Retry-After {args.retry_after}s, outage {args.outage}s from t={args.outage_start}s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
  print(table(results))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
