"""The update step with and without glibc's huge-page tunable, processes interleaved.

XLA:CPU allocates a program's large buffers afresh on each call, and glibc serves any
allocation above 32 MiB with a new mmap, which the kernel faults in 4 KiB at a time.
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35, transparent huge pages in "madvise"
or "always" mode) has malloc advise those mappings for 2 MiB pages. glibc reads the variable
once, at process start, so the two arms cannot share a process: each round runs
`benchmarks/train_step.py` (the default's widest update, as in BENCHMARKS.md's item-6 rows)
once without the variable ("4k") and once with it ("huge"), in alternating order. Each
child measures the 2048^3 matmul peak itself; the report gives each arm's median step and
reference-pass times, its share of its own runs' peak and of the peak pooled over every
child, and the minor page faults per child. (A whole RL run is the other half of the
story: BENCHMARKS.md, "Fresh buffers and huge pages".)

  .venv/bin/python benchmarks/hugepages_ab.py [--rounds 3] [--out benchmarks/results/hugepages_ab.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEP_ARGS = ["--modes", "top_n", "--width", "640", "--loss-positions", "192", "--varied",
             "--batch", "16", "--micro-batches", "4", "--reps", "5", "--pack"]
ARMS = {"4k": {}, "huge": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}


def run_arm(arm: str, out: str) -> dict:
  """One train_step.py child under `arm`'s environment; its JSON plus wall time and faults."""
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env.update(ARMS[arm])
  before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
  t0 = time.perf_counter()
  subprocess.run([sys.executable, os.path.join(HERE, "train_step.py"), *STEP_ARGS, "--out", out],
                 env=env, check=True, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - t0
  with open(out, encoding="utf-8") as f:
    res = json.load(f)
  mode = res["modes"][0]
  return {"arm": arm, "wall_s": wall, "peak_gflops": res["peak_gflops"],
          "step_median_s": mode["step_median_s"], "reference_median_s": mode["reference_median_s"],
          "step_s": mode["step_s"], "reference_s": mode["reference_s"],
          "flops_per_step": mode["textbook_flops_per_step"],
          "minor_faults": resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before,
          "loadavg": res["loadavg"]}


def summary(runs: list[dict]) -> dict:
  pooled = statistics.median(r["peak_gflops"] for r in runs)
  out = {"pooled_peak_gflops": pooled, "arms": {}}
  for arm in ARMS:
    mine = [r for r in runs if r["arm"] == arm]
    step = statistics.median(s for r in mine for s in r["step_s"])
    gflops = mine[0]["flops_per_step"] / step / 1e9
    own = statistics.median(r["peak_gflops"] for r in mine)
    out["arms"][arm] = {
        "step_median_s": step,
        "reference_median_s": statistics.median(s for r in mine for s in r["reference_s"]),
        "gflops_per_s": gflops, "own_peak_gflops": own,
        "share_of_own_peak": gflops / own, "share_of_pooled_peak": gflops / pooled,
        "minor_faults_per_run": statistics.median(r["minor_faults"] for r in mine),
        "wall_s_per_run": statistics.median(r["wall_s"] for r in mine)}
  a, b = out["arms"]["4k"], out["arms"]["huge"]
  out["step_speedup"] = a["step_median_s"] / b["step_median_s"]
  out["reference_speedup"] = a["reference_median_s"] / b["reference_median_s"]
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--out", default="benchmarks/results/hugepages_ab.json")
  args = ap.parse_args(argv)
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      order = ("4k", "huge") if r % 2 == 0 else ("huge", "4k")
      for arm in order:
        runs.append(run_arm(arm, os.path.join(tmp, f"{arm}_{r}.json")))
        x = runs[-1]
        print(f"[hugepages_ab] round {r + 1}/{args.rounds} {arm}: step {x['step_median_s']:.3f} s, "
              f"reference {x['reference_median_s']:.3f} s, peak {x['peak_gflops']:.0f} GFLOP/s, "
              f"{x['minor_faults']} faults", file=sys.stderr, flush=True)
  res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "command": "python benchmarks/hugepages_ab.py " + " ".join(argv or sys.argv[1:]),
         "train_step_args": STEP_ARGS, "runs": runs, **summary(runs)}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=1)
  print("| arm | step s (median) | reference s | GFLOP/s | % of own peak | % of pooled peak | faults/run |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for arm, s in res["arms"].items():
    print(f"| {arm} | {s['step_median_s']:.3f} | {s['reference_median_s']:.3f} | "
          f"{s['gflops_per_s']:.0f} | {100 * s['share_of_own_peak']:.0f}% | "
          f"{100 * s['share_of_pooled_peak']:.0f}% | {s['minor_faults_per_run']:.0f} |")
  print(f"step 4k / huge: {res['step_speedup']:.3f}x, reference: {res['reference_speedup']:.3f}x")
  print(f"written: {args.out}")
  return res


if __name__ == "__main__":
  main()
