"""What an RL run did over training, from its metrics.jsonl: a table in windows of steps.

    .venv/bin/python experiments/train_report.py RUN_WORKDIR [--window 10] [--out FILE.md]

Per window of `--window` RL steps: the training episodes' EM, messages per episode and
leak rate (sampled at the rollout temperature), the share of GRPO groups with zero
advantage (every episode of the group got the same reward: no signal), the mean reward
standard deviation within a group, the share of groups with no correct episode, the KL
to the reference at the window's last step, and the seconds per step; plus the
validation rows (greedy, `train.eval_every`) that fall in the window. These are the
numbers that say why a run did or did not move: a policy that learns nothing has mostly
zero-advantage groups or a KL that stays near 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

TRAIN_KEYS = (("em", "train EM"), ("messages_per_episode", "train msgs/ep"),
              ("leak_rate", "train leak"), ("groups_zero_advantage", "zero-adv groups"),
              ("group_reward_std", "reward std/group"),
              ("groups_without_correct", "groups w/o correct"), ("step_time", "s/step"))


def read_rows(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl ([] when there is none); a killed run's partial
  last line is skipped."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:
          pass
  return rows


def read_metrics(workdir: str) -> list[dict]:
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise SystemExit(f"train_report: no metrics.jsonl in {workdir}")
  return read_rows(workdir)


def windows(rows: list[dict], size: int) -> list[dict]:
  """One summary per window of `size` training steps (steps 1..size, size+1..2*size, ...)."""
  if size < 1:
    raise ValueError(f"--window must be >= 1, got {size}")
  train = [r for r in rows if "reward" in r]
  val = {r["step"]: r for r in rows if "val/em" in r}
  out = []
  for lo in range(1, max((r["step"] for r in train), default=0) + 1, size):
    hi = lo + size - 1
    part = [r for r in train if lo <= r["step"] <= hi]
    if not part:
      continue
    summary = {"steps": f"{lo}-{part[-1]['step']}"}
    for key, _ in TRAIN_KEYS:
      vals = [r[key] for r in part if isinstance(r.get(key), (int, float))]
      summary[key] = sum(vals) / len(vals) if vals else None
    summary["kl"] = part[-1].get("kl")
    in_window = [val[s] for s in sorted(val) if lo <= s <= hi]
    summary["val"] = ", ".join(
        f"{v['val/em']:.3f} @ {v['step']}" for v in in_window) or "–"
    out.append(summary)
  return out


def table(summaries: list[dict], start_val: dict | None) -> str:
  cols = [("steps", "steps")] + list(TRAIN_KEYS) + [("kl", "KL at end"), ("val", "val EM @ step")]
  lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|---" * len(cols) + "|"]
  for s in summaries:
    cells = []
    for key, _ in cols:
      v = s.get(key)
      cells.append("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  head = (f"Validation EM before RL (step 0): {start_val['val/em']:.3f}, messages/episode "
          f"{start_val.get('val/messages_per_episode', float('nan')):.2f}.\n\n"
          if start_val else "")
  return head + "\n".join(lines) + "\n"


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdir")
  ap.add_argument("--window", type=int, default=10)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  rows = read_metrics(args.workdir)
  start = next((r for r in rows if r.get("step") == 0 and "val/em" in r), None)
  text = table(windows(rows, args.window), start)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
