"""Asking vs answering, recomputed from an episodes.jsonl (also for runs evaluated before
results.json carried it): per method, how often a helper reply held a gold answer, and
the EM on those episodes and on the others.

  python experiments/asking_split.py runs/default/eval/episodes.jsonl
"""
from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax.eval import metrics, report  # noqa: E402
from seekjax.tasks import exact_match  # noqa: E402


def split(rows: list[dict]) -> dict:
  """{method: {"overall": metrics.asking_stats + em + messages_per_episode}} of the rows."""
  by_method = collections.defaultdict(list)
  for r in rows:
    scoring = "containment" if r["method"] == "llm_only" else "answer"
    em = (metrics.contains_answer(r["answer"], r["answers"]) if scoring == "containment"
          else exact_match(r["answer"] or "", r["answers"]))
    by_method[r["method"]].append(dict(
        em=em, messages=len(r["messages"]),
        feedback_has_answer=metrics.feedback_has_answer(r["transcript"], scoring, r["messages"],
                                                        r["answers"])))
  return {m: {"overall": dict(metrics.asking_stats(recs), em=float(np.mean([r["em"] for r in recs])),
                              messages_per_episode=float(np.mean([r["messages"] for r in recs])))}
          for m, recs in by_method.items()}


def main(argv=None) -> int:
  args = sys.argv[1:] if argv is None else argv
  if len(args) != 1 or not os.path.isfile(args[0]):
    print(__doc__, file=sys.stderr)
    return 2
  with open(args[0]) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  print(report.asking_table(split(rows)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
