"""Results on a slice of the held-out questions, from an evaluated workdir's results.json.

    .venv/bin/python experiments/subset_report.py runs/long2 --start 192 [--end 444]

Every method's episodes in `eval/results.json` are in the held-out split's order, so a
slice [start, end) picks the same questions for every method. For each method: EM with a
95% bootstrap interval, messages per episode and the leak rate over its private episodes;
then the paired EM differences `dynamic - cold_start` and `dynamic - static_interaction`
on those questions (`seekjax.evaluate`'s own statistics, recomputed on the slice). What
it is for: reading a
run whose held-out split grew on the questions no earlier run had answered.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from seekjax.eval import metrics, results


def load_slices(path: str, start: int, end: int | None) -> dict[str, list[dict]]:
  """{method: its episodes[start:end]}; one-line errors for a missing file, a slice that
  is empty, or methods whose questions differ."""
  if not os.path.exists(path):
    raise SystemExit(f"subset_report: {path} does not exist (evaluate the workdir first)")
  with open(path) as f:
    methods = json.load(f)["methods"]
  out = {name: m["episodes"][start:end] for name, m in methods.items()}
  ids = {name: [e["id"] for e in eps] for name, eps in out.items()}
  first = next(iter(ids.values()), [])
  if not first:
    raise SystemExit(f"subset_report: no questions in [{start}, {end}) of {path}")
  for name, these in ids.items():
    if these != first:
      raise SystemExit(f"subset_report: {name} answered other questions than "
                       f"{next(iter(ids))} in this slice")
  return out


def report(slices: dict[str, list[dict]], seed: int = 0) -> str:
  lines = ["| method | n | EM [95% CI] | messages/episode | leak rate (n private) |",
           "|---|---|---|---|---|"]
  for name, eps in slices.items():
    r = metrics.group_stats(eps, ci=True, seed=seed)
    leak = "–" if r["leak_rate"] is None else f"{r['leak_rate']:.3f} ({r['n_private']})"
    low, high = r["em_ci"]
    lines.append(f"| {name} | {r['n']} | {r['em']:.3f} [{low:.3f}, {high:.3f}] | "
                 f"{r['messages_per_episode']:.2f} | {leak} |")
  lines += ["", "| paired EM difference | n | mean | 95% CI | excludes 0 |", "|---|---|---|---|---|"]
  pairs = results.paired_comparisons({name: {"episodes": eps} for name, eps in slices.items()},
                                     seed=seed)
  for name, d in pairs.items():
    excl = "yes" if d["low"] > 0 or d["high"] < 0 else "no"
    lines.append(f"| {name} | {d['n']} | {d['mean']:+.3f} | [{d['low']:+.3f}, "
                 f"{d['high']:+.3f}] | {excl} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("workdir")
  ap.add_argument("--start", type=int, default=0)
  ap.add_argument("--end", type=int, default=None)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  if args.start < 0 or (args.end is not None and args.end <= args.start):
    ap.error("--start must be >= 0 and --end > --start")
  slices = load_slices(os.path.join(args.workdir, "eval", "results.json"), args.start, args.end)
  print(f"questions [{args.start}, {args.end if args.end is not None else 'end'}) of "
        f"{args.workdir}/eval/results.json\n")
  print(report(slices, args.seed))
  return 0


if __name__ == "__main__":
  sys.exit(main())
