"""Rollout time against rollout.max_steps_per_call (and against another tree), side by side.

The decode loop hands closed messages to the helper as they close, but a row's feedback
is appended only when the loop returns to the host: after max_steps_per_call decode steps,
or once no row is running. Fewer steps per call let a parked row resume sooner; more
save host round trips. Each setting runs the trainer for a few RL steps from one cold
start (a `--fork_from`), one after another, in rounds (A B C, A B C, ...); a row's
samples depend only on its own history, so every setting must sample the same episodes,
which the benchmark checks on the runs' episodes.jsonl. Reported: median rollout seconds
per step over the steps after the first (which compiles), its phases
(`Episodes.phase_times`), and the ratio to the config's own setting.

With --base DIR (a git worktree of another commit, e.g. `git worktree add DIR COMMIT`),
every setting also runs from that tree's code, alternating with this one's; the ratio
column is then this tree against the base at the same setting.

  .venv/bin/python benchmarks/steps_per_call.py --cold WORKDIR [--values 8,16,32]
      [--steps 4] [--rounds 1] [--base DIR] [--set KEY=VALUE ...] [--out FILE.json]

WORKDIR: a cold start to fork from (a workdir with a step-0 checkpoint, e.g. made with
`python -m seekjax.train --workdir=W --config.rl.steps=0`).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("prefill", "decode", "append", "compact", "host", "warm_up", "other")


def run_once(tree: str, workdir: str, cold: str, value: int, steps: int, sets: list[str]) -> None:
  cmd = [sys.executable, "-m", "seekjax.train", "--config=configs/smollm2_worldfacts.py",
         f"--workdir={workdir}", f"--fork_from={cold}", f"--config.rl.steps={steps}",
         f"--config.rollout.max_steps_per_call={value}", "--config.train.eval_every=0",
         "--config.train.checkpoint_every=1000"] + [f"--config.{s}" for s in sets]
  env = dict(os.environ, PYTHONPATH=tree)
  subprocess.run(cmd, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)


def rows_of(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def episodes_of(workdir: str) -> list[tuple]:
  """What each episode sampled, for the same-episodes check."""
  with open(os.path.join(workdir, "episodes.jsonl")) as f:
    return [(r["step"], r["row"], tuple(r["messages"]), r["answer"]) for r in map(json.loads, f)]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cold", required=True, help="cold-start workdir to fork from")
  ap.add_argument("--values", default="8,16,32")
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--rounds", type=int, default=1)
  ap.add_argument("--base", default="", help="another tree to run every setting from too")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)
  values = [int(v) for v in args.values.split(",") if v]
  if not os.path.isdir(os.path.join(args.cold, "checkpoints")):
    ap.error(f"--cold {args.cold}: no checkpoints/ there")
  if args.steps < 2:
    ap.error("--steps must be >= 2 (the first step compiles)")
  if args.base and not os.path.isdir(os.path.join(args.base, "seekjax")):
    ap.error(f"--base {args.base}: not a seekjax tree")
  trees = [("head", ROOT)] + ([("base", os.path.abspath(args.base))] if args.base else [])
  load_before = os.getloadavg()
  scratch = tempfile.mkdtemp(prefix="steps_per_call_")
  per_run = {(t, v): [] for t, _ in trees for v in values}
  reference, same = None, True
  try:
    for r in range(args.rounds):
      for v in values:
        for label, tree in trees:
          wd = os.path.join(scratch, f"{label}_{v}_{r}")
          print(f"[steps_per_call] round {r + 1}/{args.rounds}: {label}, "
                f"max_steps_per_call={v}", file=sys.stderr, flush=True)
          run_once(tree, wd, os.path.abspath(args.cold), v, args.steps, args.set)
          eps = episodes_of(wd)
          if reference is None:
            reference = eps
          elif eps != reference:
            same = False
            print(f"[steps_per_call] warning: {label} at {v} sampled other episodes than the "
                  "first run", file=sys.stderr, flush=True)
          per_run[(label, v)] += [row for row in rows_of(wd) if row["step"] > 1]
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  out = {}
  for (label, v), rows in per_run.items():
    out[f"{label}@{v}"] = {"rollout_s": statistics.median(r["time_rollout"] for r in rows),
              "step_s": statistics.median(r["step_time"] for r in rows),
              "decode_calls": statistics.median(r["rollout/decode_calls"] for r in rows),
              "decode_row_steps": statistics.median(r["rollout/decode_row_steps"] for r in rows),
              **{p: statistics.median(r[f"rollout/{p}"] for r in rows) for p in PHASES}}
  def peer(label, v):   # the base at the same setting, or this tree at the last value
    return out[f"base@{v}"] if args.base else out[f"head@{values[-1]}"]

  print("| tree | max_steps_per_call | rollout s | speed-up | step s | decode s | append s | "
        "host s | decode calls | decode row-steps |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for key, o in out.items():
    label, v = key.split("@")
    print(f"| {label} | {v} | {o['rollout_s']:.1f} | "
          f"{peer(label, v)['rollout_s'] / o['rollout_s']:.2f} | {o['step_s']:.1f} | "
          f"{o['decode']:.1f} | {o['append']:.1f} | {o['host']:.2f} | "
          f"{o['decode_calls']:.0f} | {o['decode_row_steps']:.0f} |")
  res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             command="python " + " ".join([os.path.relpath(__file__, ROOT)] +
                                          (argv if argv is not None else sys.argv[1:])),
             load_before=load_before, load_after=os.getloadavg(), same_episodes=same,
             medians_over_steps_after_the_first=out)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
