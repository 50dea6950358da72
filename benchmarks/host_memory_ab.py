"""The update step under settings of glibc's malloc, processes interleaved.

XLA:CPU allocates a program's temporaries afresh on each call, from a worker thread, and
glibc serves any request above 32 MiB there with a new mmap, which the kernel faults in and
zeroes 4 KiB at a time. The arms, each a `benchmarks/train_step.py` child (the default's
widest update, as in BENCHMARKS.md's item-6 rows):
  plain: glibc's defaults (`SEEKJAX_REUSE_MEMORY=0`, so the child does not restart);
  huge:  `glibc.malloc.hugetlb=1`, the same fresh mappings in 2 MiB pages;
  reuse_4k: one arena, no mmap, no trimming, so a freed block is reused by the next call,
         in 4 KiB pages;
  reuse: what `seekjax.train` restarts with (`seekjax/run/host_memory.py`): reuse_4k with
         the heap in transparent huge pages (`glibc.malloc.hugetlb=1`).
glibc reads GLIBC_TUNABLES once, at process start, so the arms cannot share a process: each
round runs each arm once, in rotating order. Each child measures the 2048^3 matmul peak
itself; the report gives each arm's median step and reference-pass times, its share of its
own runs' peak and of the peak pooled over every child, and the minor page faults per child.

  .venv/bin/python benchmarks/host_memory_ab.py [--arms plain,huge,reuse_4k,reuse] [--rounds 2] [--out FILE]
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
sys.path.insert(0, os.path.dirname(HERE))
from seekjax.run import host_memory  # pylint: disable=wrong-import-position
STEP_ARGS = ["--modes", "top_n", "--width", "640", "--loss-positions", "192", "--varied",
             "--batch", "16", "--micro-batches", "4", "--reps", "5", "--pack"]
ARMS = {
    "plain": {"SEEKJAX_REUSE_MEMORY": "0"},
    "huge": {"SEEKJAX_REUSE_MEMORY": "0", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "reuse_4k": {"GLIBC_TUNABLES": ":".join(
        s for s in host_memory.SETTINGS if not s.startswith("glibc.malloc.hugetlb="))},
    "reuse": {"GLIBC_TUNABLES": host_memory.tunables_for_reuse({}, glibc=True, accelerator=False)},
}


def run_arm(arm: str, out: str) -> dict:
  """One train_step.py child under `arm`'s environment; its JSON plus wall time and faults."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "SEEKJAX_REUSE_MEMORY")}
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


def summary(runs: list[dict], arms: list[str]) -> dict:
  pooled = statistics.median(r["peak_gflops"] for r in runs)
  out = {"pooled_peak_gflops": pooled, "arms": {}}
  for arm in arms:
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
  base = out["arms"][arms[0]]
  for arm in arms[1:]:
    out[f"{arm}_step_speedup"] = base["step_median_s"] / out["arms"][arm]["step_median_s"]
    out[f"{arm}_reference_speedup"] = (base["reference_median_s"]
                                       / out["arms"][arm]["reference_median_s"])
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--arms", default="plain,huge,reuse_4k,reuse",
                  help=f"comma-separated, the first is the one the others are compared with; "
                       f"of {','.join(ARMS)}")
  ap.add_argument("--out", default="benchmarks/results/host_memory_ab.json")
  args = ap.parse_args(argv)
  arms = args.arms.split(",")
  unknown = [a for a in arms if a not in ARMS]
  if unknown or len(arms) < 2:
    ap.error(f"--arms: two or more of {','.join(ARMS)}, got {args.arms!r}")
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      order = arms[r % len(arms):] + arms[:r % len(arms)]
      for arm in order:
        runs.append(run_arm(arm, os.path.join(tmp, f"{arm}_{r}.json")))
        x = runs[-1]
        print(f"[host_memory_ab] round {r + 1}/{args.rounds} {arm}: step {x['step_median_s']:.3f} s, "
              f"reference {x['reference_median_s']:.3f} s, peak {x['peak_gflops']:.0f} GFLOP/s, "
              f"{x['minor_faults']} faults", file=sys.stderr, flush=True)
  res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "command": "python benchmarks/host_memory_ab.py " + " ".join(argv or sys.argv[1:]),
         "train_step_args": STEP_ARGS, "runs": runs, **summary(runs, arms)}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=1)
  print("| arm | step s (median) | reference s | GFLOP/s | % of own peak | % of pooled peak | faults/run |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for arm, s in res["arms"].items():
    print(f"| {arm} | {s['step_median_s']:.3f} | {s['reference_median_s']:.3f} | "
          f"{s['gflops_per_s']:.0f} | {100 * s['share_of_own_peak']:.0f}% | "
          f"{100 * s['share_of_pooled_peak']:.0f}% | {s['minor_faults_per_run']:.0f} |")
  for arm in arms[1:]:
    print(f"{arms[0]} / {arm}: step {res[arm + '_step_speedup']:.3f}x, "
          f"reference {res[arm + '_reference_speedup']:.3f}x")
  print(f"written: {args.out}")
  return res


if __name__ == "__main__":
  main()
