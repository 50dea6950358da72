"""Driver shared by the peer workers (stdlib only: it runs inside each peer's own venv).

A worker module provides `setup(args) -> dict` (loads its model, returns version info) and
`generate(prompt_ids, batch, new) -> list[list[int]]` (greedy, exactly `new` tokens per row,
EOS ignored). Two modes:

  one-shot: --batch B --new N --reps R  -> warm-up, R timed runs, one JSON object on stdout
  --serve:  one JSON request per stdin line, {"batch": B, "new": N}, each answered by one JSON
            line {"seconds", "tok_s", "first_ids", "rows_identical"}; used by decode_peers.py
            to alternate repetitions across systems in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def base_parser(doc: str) -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=doc.splitlines()[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="\n".join(doc.splitlines()[1:]))
  ap.add_argument("--prompt-ids", required=True, help="comma-separated prompt token ids")
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--new", type=int, default=128)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--first", type=int, default=16, help="how many generated ids to report")
  ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
  return ap


def _once(generate, prompt, batch, new, first):
  t0 = time.perf_counter()
  out = generate(prompt, batch, new)
  dt = time.perf_counter() - t0
  if len(out) != batch or any(len(o) != new for o in out):
    raise RuntimeError(f"expected {batch} rows of {new} tokens, got {[len(o) for o in out]}")
  return dict(seconds=dt, tok_s=batch * new / dt, first_ids=[int(t) for t in out[0][:first]],
              rows_identical=all(list(o) == list(out[0]) for o in out))


def run(args, setup, generate):
  prompt = [int(t) for t in args.prompt_ids.split(",")]
  t0 = time.perf_counter()
  info = setup(args)
  info["setup_s"] = time.perf_counter() - t0
  out = sys.stdout
  sys.stdout = sys.stderr  # library chatter must not corrupt the JSON channel
  if args.serve:
    out.write(json.dumps(dict(ready=True, **info)) + "\n")
    out.flush()
    for line in sys.stdin:
      if not line.strip():
        continue
      req = json.loads(line)
      try:
        res = _once(generate, prompt, int(req["batch"]), int(req["new"]), args.first)
      except Exception as e:  # report, keep serving
        res = dict(error=f"{type(e).__name__}: {e}")
      out.write(json.dumps(res) + "\n")
      out.flush()
    return
  warm = _once(generate, prompt, args.batch, args.new, args.first)
  reps = [_once(generate, prompt, args.batch, args.new, args.first) for _ in range(args.reps)]
  times = [r["seconds"] for r in reps]
  med = statistics.median(times)
  out.write(json.dumps(dict(info, batch=args.batch, new=args.new, warmup_s=warm["seconds"],
                            seconds=times, tok_s=args.batch * args.new / med,
                            first_ids=reps[-1]["first_ids"],
                            rows_identical=reps[-1]["rows_identical"],
                            loadavg_1m=os.getloadavg()[0])) + "\n")
  out.flush()
