"""RL steps per hour on the embedded default: this tree against a git worktree of an older
commit, side by side, with each step's split (rollout, reference, update, helper wait,
compile).

    .venv/bin/python benchmarks/rl_steps_per_hour.py [--base 9461232[,a9d8e7f]] [--steps 8]
        [--set rl.group_size=4 ...] [--head_set sft.restate_reply=false ...] [--head_set_too a9d8e7f]
        [--head_cache DIR] [--sequential] [--out benchmarks/results/rl_steps_per_hour.json]

Both trees run the same command, `python -m seekjax.train` on
configs/smollm2_worldfacts.py with `rl.steps=STEPS` (the default's own cold start, so the
episodes ask and read feedback as the default's do), plus `--set` overrides (every run)
and `--head_set` overrides (this tree only: keys the older trees do not have, so that all
runs train the same settings when the default config has changed; `--head_set_too` gives
them to the named bases as well), each from its own tree (so each imports its own seekjax) with
the same venv, at the same time: they share the machine's load, so the ratio compares
like with like on a noisy box. Each run gets a fresh workdir and no persistent JAX
compilation cache, so the first steps pay their compiles as a first `make run` does.
At the same time is fair only while both runs last about as long: when one ends early,
the other's last steps get the box to themselves. `--sequential` runs the trees one after
the other instead (bases first), each alone on the box, and records the load before each.
With `--head_cache DIR`, this tree's run instead reads and writes jax's persistent cache
in DIR, and a run of this tree alone fills DIR first (same command, timed and reported as
`cache_fill`): the head then runs as a second `make run` of the same config does, against
bases that compile everything (the older mains have no persistent cache). jax itself
never keeps the decode loops (they hold a host callback) in that cache; on CPU the head's
`seekjax.compile_cache` does.

From each run's metrics.jsonl: seconds per step (the trainer's step_time), steps per
hour over all steps (compiles included) and over the steps after the first two (warm),
and the median split of a step. The worktree is made once under /tmp and reused.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("time_rollout", "time_reference", "time_update", "time_helper_wait")


def worktree(base: str) -> str:
  """A detached git worktree of `base` under /tmp (made once)."""
  sha = subprocess.run(["git", "rev-parse", "--short", base], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout.strip()
  path = os.path.join(tempfile.gettempdir(), f"seekjax-base-{sha}")
  if not os.path.isdir(path):
    subprocess.run(["git", "worktree", "add", "--detach", path, base], cwd=ROOT, check=True)
  return path


def command(steps: int, workdir: str, overrides=()) -> list[str]:
  return [sys.executable, "-m", "seekjax.train", "--config=configs/smollm2_worldfacts.py",
          f"--workdir={workdir}", f"--config.rl.steps={steps}"] + [
              f"--config.{o}" for o in overrides]


def read_steps(workdir: str) -> list[dict]:
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if "step_time" in row:
        rows.append(row)
  return sorted(rows, key=lambda r: r["step"])


def summarize(rows: list[dict]) -> dict:
  """Steps per hour (all steps; steps 3+) and the median split of the warm steps."""
  times = [r["step_time"] for r in rows]
  warm = rows[2:] or rows
  out = {
      "steps": len(rows),
      "step_times": times,
      "steps_per_hour_all": 3600 * len(times) / sum(times),
      "steps_per_hour_warm": 3600 * len(warm) / sum(r["step_time"] for r in warm),
      "median_step_warm": statistics.median(r["step_time"] for r in warm),
  }
  for k in PHASES:
    vals = [r[k] for r in warm if isinstance(r.get(k), (int, float))]
    out["median_" + k] = statistics.median(vals) if vals else None
  # per step: compiles, and the rollout's own phases (older trees log none of them)
  for key in ("compiles", "compile_cache_hits", "compile_time", "rollout/prefill",
              "rollout/warm_up", "rollout/decode", "rollout/append", "rollout/other"):
    vals = [r.get(key) for r in rows]
    out[key + "_per_step"] = vals if any(v is not None for v in vals) else None
  return out


def cache_env(path: str) -> dict:
  """The environment of a run that reads and writes jax's persistent cache in `path`."""
  env = {k: v for k, v in os.environ.items() if k != "SEEKJAX_COMPILE_CACHE"}
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(path)
  return env


def fill_cache(path: str, steps: int, scratch: str, overrides) -> dict:
  """Runs this tree alone once with the cache in `path`; returns its wall time and steps."""
  os.makedirs(path, exist_ok=True)
  if os.listdir(path):   # its first run must compile everything, as a first `make run` does
    raise SystemExit(f"--head_cache {path} is not empty; give an empty or new directory")
  workdir = os.path.join(scratch, "cache_fill")
  print(f"[rl_steps_per_hour] filling the compile cache {path} (this tree alone)",
        file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  with open(os.path.join(scratch, "cache_fill.log"), "w") as log:
    code = subprocess.run(command(steps, workdir, overrides), cwd=ROOT, env=cache_env(path),
                          stdout=log, stderr=subprocess.STDOUT).returncode
  if code:
    raise SystemExit(f"the cache-filling run failed; see {scratch}/cache_fill.log")
  return {"wall_s": time.perf_counter() - t0, "entries": len(os.listdir(path)),
          **summarize(read_steps(workdir))}


def finish(name: str, proc, scratch: str) -> None:
  if proc.wait():
    raise SystemExit(f"{name} run failed; see {scratch}/{name}.log")


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--base", default="9461232",
                  help="the older commit(s) to compare against, comma-separated")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for every run")
  ap.add_argument("--head_set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for this tree's run only")
  ap.add_argument("--head_set_too", default="",
                  help="base commit(s), comma-separated, new enough to take --head_set as well")
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--sequential", action="store_true",
                  help="run the trees one after the other, each alone, instead of at once")
  ap.add_argument("--head_cache", default="",
                  help="a persistent compile cache directory for this tree's run, filled "
                       "first by a run of this tree alone")
  ap.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "rl_steps_per_hour"))
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                "rl_steps_per_hour.json"))
  args = ap.parse_args()
  if args.steps < 3:
    ap.error("--steps must be >= 3 (the first two steps compile)")
  bases = [b for b in args.base.split(",") if b]
  trees = {("base" if len(bases) == 1 else f"base_{b}"): worktree(b) for b in bases}
  trees["head"] = ROOT
  newer = {"head"} | {("base" if len(bases) == 1 else f"base_{b}")
                      for b in args.head_set_too.split(",") if b}
  overrides = {name: args.set + (args.head_set if name in newer else []) for name in trees}
  shutil.rmtree(args.scratch, ignore_errors=True)
  os.makedirs(args.scratch, exist_ok=True)
  cache_fill = None
  if args.head_cache:
    cache_fill = fill_cache(args.head_cache, args.steps, args.scratch, overrides["head"])
  procs, logs, load, walls = {}, {}, {}, {}
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  for name, tree in trees.items():
    workdir = os.path.join(args.scratch, name)
    # no persistent compilation cache: every compile is paid, as in a first `make run`
    # (the model files under $SEEKJAX_CACHE are shared); with --head_cache this tree's
    # run reads the programs its cache-filling run wrote
    env = dict(os.environ, SEEKJAX_COMPILE_CACHE="0")
    if name == "head" and args.head_cache:
      env = cache_env(args.head_cache)
    logs[name] = open(os.path.join(args.scratch, f"{name}.log"), "w")
    print(f"[rl_steps_per_hour] {name}: {tree}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    load[name] = os.getloadavg()
    procs[name] = subprocess.Popen(command(args.steps, workdir, overrides[name]), cwd=tree,
                                   env=env,
                                   stdout=logs[name], stderr=subprocess.STDOUT)
    if args.sequential:
      finish(name, procs[name], args.scratch)
      walls[name] = time.perf_counter() - started
  for name, p in procs.items():
    finish(name, p, args.scratch)
  wall = time.perf_counter() - t0
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "base": args.base, "head": subprocess.run(
          ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
          text=True).stdout.strip(),
      "commands": {name: " ".join(command(args.steps, "WORKDIR", overrides[name])[1:])
                   for name in trees},
      "load_before": load_before, "load_after": os.getloadavg(), "wall_s": wall,
      "head_cache": bool(args.head_cache), "cache_fill": cache_fill,
      "sequential": args.sequential, "load_at_start": load, "wall_s_each": walls or None,
      "runs": {name: summarize(read_steps(os.path.join(args.scratch, name))) for name in trees},
  }
  h = result["runs"]["head"]
  for name in trees:
    if name == "head":
      continue
    b = result["runs"][name]
    tail = "" if name == "base" else "_" + name[len("base_"):]
    result["ratio_steps_per_hour_all" + tail] = h["steps_per_hour_all"] / b["steps_per_hour_all"]
    result["ratio_steps_per_hour_warm" + tail] = (h["steps_per_hour_warm"]
                                                  / b["steps_per_hour_warm"])
    if cache_fill is not None:   # this tree's first run (it compiled everything) as well
      result["ratio_steps_per_hour_all_first_run" + tail] = (
          cache_fill["steps_per_hour_all"] / b["steps_per_hour_all"])
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
  for name, r in ([("head, first run", cache_fill)] if cache_fill else []) + [
      (n, result["runs"][n]) for n in trees]:
    split = ", ".join(f"{k[5:]} {r['median_' + k]:.1f}" for k in PHASES
                      if r["median_" + k] is not None)
    print(f"{name}: {r['steps_per_hour_all']:.0f} steps/h all, {r['steps_per_hour_warm']:.0f} "
          f"warm; median warm step {r['median_step_warm']:.1f} s ({split})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
