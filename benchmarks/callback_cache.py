"""The first rollout of a second run: decode loops read from the persistent cache
(seekjax/compile_cache.py) against jax's own behaviour (compiled again), side by side.

    .venv/bin/python benchmarks/callback_cache.py [--reps 3] [--questions 2]
        [--out benchmarks/results/callback_cache.json]

Each measured run is a fresh process that does what an RL run's first step does on the
embedded default (configs/smollm2_worldfacts.py): build its parts, then roll out its
first `--questions` training questions (rl.group_size episodes each, the default's
rollout settings, the knowledge helper, the frozen bottom's states captured), then a
second rollout of the same questions, which compiles nothing. The first minus the
second is the cost of getting the rollout's programs. One run first fills a fresh
compile cache; the measured runs then alternate between the callback cache on (the
decode loops read back) and SEEKJAX_CALLBACK_CACHE=0 (jax's own cache for every other
program, the decode loops compiled), after one unmeasured run of each.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import jax
sys.path.insert(0, sys.argv[1])
from configs.smollm2_worldfacts import get_config
from seekjax import compiles
from seekjax.rl.cycle import frozen_layers
from seekjax.rollout import rollout
from seekjax.run import setup
compiles.install()
cfg = get_config()
parts = setup.build_parts(cfg, training=True)
questions = [e["question"] for e in parts.train_examples[:int(sys.argv[2])]]
capture = frozen_layers(parts.spec, parts.model.config.num_layers)
times = []
for i in range(2):
  before = compiles.snapshot()
  t0 = time.perf_counter()
  eps = rollout(parts.model, questions, parts.helper, parts.rollout_cfg, jax.random.PRNGKey(i),
                capture_layer=capture)
  jax.block_until_ready(eps.tokens)
  totals, names = compiles.since(before)
  times.append({"seconds": time.perf_counter() - t0, **totals, "names": names})
setup.close_helpers(parts.helper, parts.judge)
print("RESULT " + json.dumps(times))
"""


def child(cache: str, questions: int, callback_cache: bool) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("SEEKJAX_COMPILE_CACHE",)}
  env["JAX_COMPILATION_CACHE_DIR"] = cache
  env["SEEKJAX_CALLBACK_CACHE"] = "1" if callback_cache else "0"
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(questions)], cwd=ROOT, env=env,
                     capture_output=True, text=True)
  if r.returncode:
    raise SystemExit(f"run failed:\n{r.stderr[-3000:]}")
  line = next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))
  first, second = json.loads(line[len("RESULT "):])
  return {"wall_s": time.perf_counter() - t0, "first": first, "second": second,
          "acquire_s": first["seconds"] - second["seconds"]}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--questions", type=int, default=2)
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "callback_cache.json"))
  args = ap.parse_args()
  if args.reps < 1:
    ap.error("--reps must be >= 1")
  cache = tempfile.mkdtemp(prefix="seekjax-callback-cache-")
  log = lambda *a: print("[callback_cache]", *a, file=sys.stderr, flush=True)  # noqa: E731
  load_before = os.getloadavg()
  log(f"filling {cache}")
  fill = child(cache, args.questions, True)
  log(f"fill: first rollout {fill['first']['seconds']:.1f} s, "
      f"{fill['first']['compiles']} compiles")
  runs = {"on": [], "off": []}
  for rep in range(args.reps + 1):
    for name in ("on", "off"):
      r = child(cache, args.questions, name == "on")
      log(f"rep {rep} {name}: first rollout {r['first']['seconds']:.1f} s, second "
          f"{r['second']['seconds']:.1f} s, {r['first']['compiles']} compiles, "
          f"{r['first']['compile_cache_hits']} read back")
      if rep:   # rep 0 is unmeasured: the page cache and the OS settle
        runs[name].append(r)
  med = {name: {"first_s": statistics.median(r["first"]["seconds"] for r in rs),
                "acquire_s": statistics.median(r["acquire_s"] for r in rs)}
         for name, rs in runs.items()}
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip(),
      "questions": args.questions, "reps": args.reps, "load_before": load_before,
      "load_after": os.getloadavg(), "fill": fill, "runs": runs, "median": med,
      "ratio_first_rollout": med["off"]["first_s"] / med["on"]["first_s"],
      "ratio_acquire": med["off"]["acquire_s"] / max(med["on"]["acquire_s"], 1e-9),
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  for name, rs in runs.items():
    firsts = [r["first"]["seconds"] for r in rs]
    print(f"callback cache {name}: first rollout {med[name]['first_s']:.1f} s "
          f"({min(firsts):.1f}-{max(firsts):.1f}), of which getting the programs "
          f"{med[name]['acquire_s']:.1f} s")
  print(f"first rollout {result['ratio_first_rollout']:.2f}x faster with the decode loops "
        f"read back; getting the programs {result['ratio_acquire']:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
