"""Results on a slice of the held-out questions, from an evaluated workdir's results.json.

    .venv/bin/python experiments/subset_report.py runs/long2 --start 192 [--end 444]

Every method's episodes in `eval/results.json` are in the held-out split's order, so a
slice [start, end) picks the same questions for every method. For each method: EM with a
95% bootstrap interval, messages per episode and the leak rate over its private episodes;
then the paired EM differences `dynamic - cold_start` and `dynamic - static_interaction`
on those questions (the same bootstrap as `seekjax.evaluate`). What it is for: reading a
run whose held-out split grew on the questions no earlier run had answered.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from seekjax.eval import stats

PAIRS = (("dynamic", "cold_start"), ("dynamic", "static_interaction"))


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


def method_row(episodes: list[dict], seed: int = 0) -> dict:
  em = np.array([e["em"] for e in episodes], np.float64)
  ci = stats.bootstrap_ci(em, seed=seed)
  leaks = [e["leak"] for e in episodes if e.get("private") and e.get("leak") is not None]
  return {"n": len(em), "em": float(em.mean()), "low": ci["low"], "high": ci["high"],
          "messages": float(np.mean([e["messages"] for e in episodes])),
          "leak": float(np.mean(leaks)) if leaks else None, "n_private": len(leaks)}


def report(slices: dict[str, list[dict]], seed: int = 0) -> str:
  lines = ["| method | n | EM [95% CI] | messages/episode | leak rate (n private) |",
           "|---|---|---|---|---|"]
  for name, eps in slices.items():
    r = method_row(eps, seed)
    leak = "–" if r["leak"] is None else f"{r['leak']:.3f} ({r['n_private']})"
    lines.append(f"| {name} | {r['n']} | {r['em']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
                 f"{r['messages']:.2f} | {leak} |")
  lines += ["", "| paired EM difference | n | mean | 95% CI | excludes 0 |", "|---|---|---|---|---|"]
  for a, b in PAIRS:
    if a in slices and b in slices:
      d = stats.paired_difference_ci([e["em"] for e in slices[a]],
                                     [e["em"] for e in slices[b]], seed=seed)
      excl = "yes" if d["low"] > 0 or d["high"] < 0 else "no"
      lines.append(f"| {a} - {b} | {d['n']} | {d['mean']:+.3f} | [{d['low']:+.3f}, "
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
