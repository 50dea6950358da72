"""The RL levers of issue #16, each a short RL phase from one shared cold start, compared
on the validation curve (never on held-out).

    .venv/bin/python experiments/levers.py --out runs/levers [--steps 8] [--only a,b]
        [--schedule_steps 80] [--set sft.restate_reply=true ...]

One cold start (the default config with `task.val_size` questions set aside, trained to
RL step 0) is shared by every lever: each lever is a `--fork_from` of it with its own
config overrides, so the levers differ in their RL phase only. Each lever trains
`--steps` RL steps with `train.eval_every` validation rows and writes OUT/<lever>/
(metrics.jsonl, val_curve.png). A lever whose last step is logged is not run again, so a
killed sweep continues. OUT/levers.md and OUT/levers.json hold, per lever: the command,
the validation curve's start and end point (EM, messages/episode, leak, format failures),
the training diagnostics over its steps (share of zero-advantage groups, reward std per
group, KL to the reference at the end, messages per training episode), and its wall time.
`--set KEY=VALUE` (repeatable) overrides the config of the cold start and of every lever:
a sweep with another cold start goes in its own --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from train_report import read_rows   # experiments/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/smollm2_worldfacts.py"   # the subprocesses run in ROOT

# name -> overrides on top of the shared settings; each row adds one lever to a parent.
LEVERS = {
    "default": [],
    "gate": ["reward.cost_gate=any_correct"],
    "gate_lr1e-4": ["reward.cost_gate=any_correct", "optim.lr=1e-4"],
    # groups of 8 over 2 questions a step: the same 16 episodes a step as groups of 4
    "gate_g8": ["reward.cost_gate=any_correct", "rl.group_size=8", "rl.questions_per_step=2"],
    "gate_g8_lr1e-4": ["reward.cost_gate=any_correct", "rl.group_size=8",
                       "rl.questions_per_step=2", "optim.lr=1e-4"],
    "gate_g8_lr1e-4_temp0.7": ["reward.cost_gate=any_correct", "rl.group_size=8",
                               "rl.questions_per_step=2", "optim.lr=1e-4",
                               "rollout.temperature=0.7"],
    "gate_g8_lr1e-4_epochs2": ["reward.cost_gate=any_correct", "rl.group_size=8",
                               "rl.questions_per_step=2", "optim.lr=1e-4", "rl.num_epochs=2"],
    # the long config's settings (configs/smollm2_worldfacts_long.py), moved further: its
    # 80 steps ended at a KL of 0.01-0.03 with a flat validation curve
    "long_lr3e-4": ["reward.cost_gate=any_correct", "rl.group_size=8", "rl.questions_per_step=2",
                    "optim.lr=3e-4", "rollout.temperature=0.7"],
    "long_epochs2_mb2": ["reward.cost_gate=any_correct", "rl.group_size=8",
                         "rl.questions_per_step=2", "optim.lr=1e-4", "rollout.temperature=0.7",
                         "rl.num_epochs=2", "rl.mini_batches=2"],
    # partial credit for a wrong episode whose helper reply held the gold answer
    # (reward.reply_credit): the long run's RL gained least on asking
    "long_credit0.3": ["reward.cost_gate=any_correct", "rl.group_size=8",
                       "rl.questions_per_step=2", "optim.lr=1e-4", "rollout.temperature=0.7",
                       "reward.reply_credit=0.3"],
    "long_credit0.3_lr3e-4": ["reward.cost_gate=any_correct", "rl.group_size=8",
                              "rl.questions_per_step=2", "optim.lr=3e-4",
                              "rollout.temperature=0.7", "reward.reply_credit=0.3"],
    # diagnostics of why asking falls during RL: no message cost at all; and twice the
    # distinct questions a step (32 episodes, so each step costs about twice as much)
    "long_nocost": ["reward.cost_gate=any_correct", "rl.group_size=8", "rl.questions_per_step=2",
                    "optim.lr=1e-4", "rollout.temperature=0.7", "reward.lambda_message=0"],
    "long_q4": ["reward.cost_gate=any_correct", "rl.group_size=8", "rl.questions_per_step=4",
                "optim.lr=1e-4", "rollout.temperature=0.7"],
}
# The levers the sweep runs unless --only names others.
DEFAULT_LEVERS = ("default", "gate", "gate_lr1e-4", "gate_g8_lr1e-4", "gate_g8_lr1e-4_temp0.7")


# The settings the levers above are defined against: the default's before it took the
# long config's (the fixed-think cold start, no cost gate, groups of 4 over 4 questions,
# lr 2e-5, temperature 1.0), pinned so that each lever's name keeps its meaning and old
# sweeps rerun as they ran; --set comes after them (e.g. sft.restate_reply=true).
BASE_SETTINGS = ["sft.restate_reply=false", "reward.cost_gate=none", "rl.group_size=4",
                 "rl.questions_per_step=4", "optim.lr=2e-5", "rollout.temperature=1.0"]


def shared(val_size: int, eval_every: int) -> list[str]:
  return [f"task.val_size={val_size}", f"train.eval_every={eval_every}"] + BASE_SETTINGS


def train_command(workdir: str, overrides: list[str], fork_from: str | None = None) -> list[str]:
  cmd = [sys.executable, "-m", "seekjax.train", f"--config={CONFIG}", f"--workdir={workdir}"]
  if fork_from:
    cmd.append(f"--fork_from={fork_from}")
  return cmd + [f"--config.{o}" for o in overrides]


def lever_command(workdir: str, lever: str, common: list[str], steps: int, schedule_steps: int,
                  cold: str) -> list[str]:
  """The fork that runs `lever` for `steps` RL steps of a `schedule_steps`-step run.

  The optimizer's warmup + cosine schedule spans rl.steps, so a short fork of a long run
  must keep the long run's rl.steps and stop early (--stop_after); a fork with
  rl.steps=steps would decay its lr `schedule_steps / steps` times faster.
  """
  total = max(schedule_steps, steps)
  cmd = train_command(workdir, common + [f"rl.steps={total}"] + LEVERS[lever], cold)
  return cmd + ([f"--stop_after={steps}"] if total > steps else [])


def mean(rows: list[dict], key: str):
  vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
  return sum(vals) / len(vals) if vals else None


def summarize(name: str, workdir: str, cmd: list[str], wall: float | None) -> dict:
  """One lever's row, from its metrics.jsonl."""
  rows = read_rows(workdir)
  val = sorted((r for r in rows if "val/em" in r), key=lambda r: r["step"])
  train_rows = [r for r in rows if "reward" in r]
  end = val[-1] if val else {}
  start = val[0] if val else {}
  return {
      "lever": name,
      "command": " ".join(shlex.quote(c) for c in cmd[1:]),
      "val_curve": [(r["step"], r["val/em"]) for r in val],
      "val_em_start": start.get("val/em"),
      "val_em_end": end.get("val/em"),
      "val_messages_end": end.get("val/messages_per_episode"),
      "val_leak_end": end.get("val/leak_rate"),
      "val_format_failures_end": end.get("val/format_failure_rate"),
      "steps": max((r["step"] for r in train_rows), default=0),
      "train_reward": mean(train_rows, "reward"),
      "train_em": mean(train_rows, "em"),
      "train_messages": mean(train_rows, "messages_per_episode"),
      "groups_zero_advantage": mean(train_rows, "groups_zero_advantage"),
      "groups_without_correct": mean(train_rows, "groups_without_correct"),
      "group_reward_std": mean(train_rows, "group_reward_std"),
      "kl_end": train_rows[-1].get("kl") if train_rows else None,
      "step_time": mean(train_rows, "step_time"),
      "wall_seconds": wall,
  }


def fmt(v, digits=3):
  if v is None:
    return "–"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_report(out: str, rows: list[dict], note: str) -> str:
  cols = [("lever", "lever"), ("val_em_start", "val EM at 0"), ("val_em_end", "val EM at end"),
          ("val_messages_end", "val msgs/ep"), ("val_leak_end", "val leak"),
          ("val_format_failures_end", "val format fail"), ("steps", "steps"),
          ("train_em", "train EM"), ("train_messages", "train msgs/ep"),
          ("groups_zero_advantage", "zero-adv groups"), ("group_reward_std", "reward std/group"),
          ("kl_end", "KL at end"), ("step_time", "s/step"), ("wall_seconds", "wall s")]
  lines = ["# RL levers on the validation curve", "", note, "",
           "| " + " | ".join(c[1] for c in cols) + " |", "|---" * len(cols) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(fmt(r[k], 0 if k == "wall_seconds" else 3)
                                  for k, _ in cols) + " |")
  lines += ["", "Commands (from the repository root):", ""]
  lines += [f"- `{r['lever']}`: `python {r['command']}`" for r in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "levers.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "levers.json"), "w") as f:
    json.dump(rows, f, indent=2)
  return text


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--eval_every", type=int, default=4)
  ap.add_argument("--val_size", type=int, default=48)
  ap.add_argument("--schedule_steps", type=int, default=0,
                  help="the lr schedule's length (rl.steps) when it is longer than --steps: "
                       "each lever then runs the first --steps steps of that run")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for the cold start and every lever")
  ap.add_argument("--only", default="", help="comma-separated lever names (default: DEFAULT_LEVERS)")
  args = ap.parse_args()
  names = [n for n in args.only.split(",") if n] or list(DEFAULT_LEVERS)
  unknown = [n for n in names if n not in LEVERS]
  if unknown:
    ap.error(f"unknown levers {unknown}; known: {', '.join(LEVERS)}")
  bad = [o for o in args.set if "=" not in o]
  if bad:
    ap.error(f"--set takes KEY=VALUE, got {bad}")
  common = shared(args.val_size, args.eval_every) + args.set
  os.makedirs(args.out, exist_ok=True)
  cold = os.path.join(args.out, "cold")
  if not os.path.isdir(os.path.join(cold, "checkpoints")):
    print(f"[levers] cold start -> {cold}", file=sys.stderr, flush=True)
    subprocess.run(train_command(cold, common + ["rl.steps=0"]), check=True, cwd=ROOT)
  rows = []
  times_path = os.path.join(args.out, "wall_seconds.json")
  times = json.load(open(times_path)) if os.path.exists(times_path) else {}
  for i, name in enumerate(names):
    workdir = os.path.join(args.out, name)
    cmd = lever_command(workdir, name, common, args.steps, args.schedule_steps, cold)
    done = any(r.get("step") == args.steps and "reward" in r for r in read_rows(workdir))
    if not done:
      print(f"[levers] {i + 1}/{len(names)} {name}: {' '.join(LEVERS[name]) or '(defaults)'}",
            file=sys.stderr, flush=True)
      if os.path.isdir(workdir):   # resume a killed lever: same command without the fork
        cmd_run = [c for c in cmd if not c.startswith("--fork_from=")]
      else:
        cmd_run = cmd
      t0 = time.perf_counter()
      subprocess.run(cmd_run, check=True, cwd=ROOT)
      times[name] = times.get(name, 0.0) + time.perf_counter() - t0
      with open(times_path, "w") as f:
        json.dump(times, f)
    rows.append(summarize(name, workdir, cmd, times.get(name)))
    of = (f" (the first {args.steps} of a {args.schedule_steps}-step lr schedule)"
          if args.schedule_steps > args.steps else "")
    note = (f"Each lever: {args.steps} RL steps{of} forked from one cold start ({cold}), "
            f"validation = {args.val_size} questions set aside from the train split, greedy, "
            f"every {args.eval_every} steps. Diagnostics are means over the training steps.")
    print(write_report(args.out, rows, note), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
