"""How often the helper's reply holds a gold answer when asked the question verbatim.

An upper bound on what one well-formed message can fetch: each non-private training
question of the config's task goes to the config's helper as it is, and the reply counts
when it contains a gold alias (case-insensitive), per question type.

  python experiments/helper_recall.py [--config configs/smollm2_worldfacts.py]
      [--set task.max_train=544]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax import configlib  # noqa: E402
from seekjax.run import setup  # noqa: E402


def recall_by_type(examples, helper) -> dict[str, tuple[int, int]]:
  """{question type: (replies holding a gold alias, questions)} over non-private examples."""
  counts = collections.defaultdict(lambda: [0, 0])
  for ex in examples:
    if ex.get("private_facts"):
      continue
    text = helper.reply(ex["question"]).text.lower()
    qtype = ex.get("qtype") or ex.get("meta", {}).get("qtype") or "?"
    counts[qtype][0] += any(a.lower() in text for a in ex["answers"])
    counts[qtype][1] += 1
  return {k: tuple(v) for k, v in sorted(counts.items())}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/smollm2_worldfacts.py")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = ap.parse_args(argv)
  cfg = configlib.apply_overrides(configlib.load_config(args.config), args.set)
  train, _ = setup.build_task(cfg, cfg.seed, None, lambda: None)
  helper = setup.build_helper(cfg.helper, None)
  rows = recall_by_type(train, helper)
  print("| question type | reply holds gold | questions | share |")
  print("|---|---:|---:|---:|")
  for qtype, (hit, n) in rows.items():
    print(f"| {qtype} | {hit} | {n} | {hit / n:.2f} |")
  hit, n = sum(h for h, _ in rows.values()), sum(m for _, m in rows.values())
  print(f"| all | {hit} | {n} | {hit / max(n, 1):.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
