"""Which reward term moves asking during RL: a table from a run's episodes.jsonl.

For each window of steps: the share of episodes that asked, EM and reward of the episodes
that asked against those that did not, and the asking push of each reward term
(`seekjax.rl.records.asking_push`, recomputed from the logged components and
advantages: positive pushes the policy toward asking, negative away from it).

  python experiments/trace_asking.py WORKDIR [--window 4] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax.rl.records import asking_push  # noqa: E402
from seekjax.run.metrics import episode_rows  # noqa: E402


def load(workdir: str) -> dict[int, list[dict]]:
  """{step: [episode records in row order]} of the run's episode log (`episodes.jsonl`, or
  the per-step files of a remote workdir)."""
  try:
    rows = episode_rows(workdir)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from None
  steps = defaultdict(list)
  for r in rows:
    steps[r["step"]].append(r)
  return dict(sorted(steps.items()))


def _mean(xs):
  return float(np.mean(xs)) if len(xs) else float("nan")


def window_row(records: list[dict], group_size: int) -> dict:
  """The table's columns over the episodes of a window (whole steps, groups intact)."""
  asked = np.array([r["num_messages"] > 0 for r in records], float)
  em = np.array([r["em"] for r in records])
  names = sorted({k for r in records for k in r["components"]})
  comps = {k: np.array([r["components"].get(k, 0.0) for r in records]) for k in names}
  push = asking_push(comps, np.array([r["advantage"] for r in records]), asked, group_size,
                     np.array([r["valid"] for r in records]))
  ask, alone = asked > 0, asked == 0
  return {"episodes": len(records), "asked": _mean(asked),
          "em_asked": _mean(em[ask]), "em_alone": _mean(em[alone]),
          "reply_held": _mean(np.array([r["reply_held"] for r in records])[ask]),
          "format_fail_asked": _mean(1 - np.array([r["format_ok"] for r in records])[ask]),
          "format_fail_alone": _mean(1 - np.array([r["format_ok"] for r in records])[alone]),
          "leak_asked": _mean(np.array([r["leak"] for r in records])[ask]),
          **push}


def group_size_of(records: list[dict]) -> int:
  groups = defaultdict(int)
  for r in records:
    groups[r["group"]] += 1
  sizes = set(groups.values())
  if len(sizes) != 1:
    raise SystemExit(f"error: unequal groups in one step: {sorted(sizes)}")
  return sizes.pop()


def table(steps: dict[int, list[dict]], window: int) -> str:
  keys = sorted(steps)
  chunks = [keys[i:i + window] for i in range(0, len(keys), window)]
  rows = []
  for chunk in chunks:
    recs = [r for s in chunk for r in steps[s]]
    rows.append((f"{chunk[0]}-{chunk[-1]}", window_row(recs, group_size_of(steps[chunk[0]]))))
  push_keys = sorted({k for _, r in rows for k in r if k.startswith("push/")},
                     key=lambda k: (k != "push/total", k))
  head = ["steps", "asked", "EM asked", "EM alone", "reply held gold", "format fail asked",
          "format fail alone", "leak asked"] + push_keys
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in rows:
    vals = [r["asked"], r["em_asked"], r["em_alone"], r["reply_held"], r["format_fail_asked"],
            r["format_fail_alone"], r["leak_asked"]] + [r.get(k, 0.0) for k in push_keys]
    lines.append("| " + " | ".join([name] + [f"{v:.3f}" for v in vals]) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  p.add_argument("--window", type=int, default=4, help="steps per row")
  p.add_argument("--out", default="", help="also write the table to this file")
  a = p.parse_args(argv)
  if a.window < 1:
    p.error("--window must be >= 1")
  text = table(load(a.workdir), a.window)
  print(text)
  if a.out:
    with open(a.out, "w") as f:
      f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
