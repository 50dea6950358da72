"""float32 against bfloat16 compute on this machine: greedy decode and the PPO update of
SmolLM2-135M, side by side in one run.

bfloat16 here means the setting a run gets with `--config.model.dtype=bfloat16`: frozen
params and activations in bfloat16, the trained part kept in float32 (model.master_dtype)
and cast at use. For each dtype, alternating --reps times:
  decode   sj.generate_ids, greedy, --new tokens per row at batch 1 and 16 (EOS ignored)
  update   the real jitted PPO step (benchmarks/train_step.py's `bench_mode`, top_n 2) on
           16 rows of --width tokens
and a 2048^3 matmul in each dtype (the machine's peak for it). Reports medians, the
bfloat16 / float32 speed ratio, how many of the first 32 greedy tokens agree, and the load
average (another job on the box skews every figure; the ratio less than the times).

  .venv/bin/python benchmarks/precision.py [--reps 3] [--new 64] [--width 512]
      [--out benchmarks/results/precision.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

import seekjax as sj
import train_step
from seekjax.rl import trainable as trainable_lib

DTYPES = ("float32", "bfloat16")
PROMPT = "The capital of France is a city that"


def loadavg() -> float:
  return os.getloadavg()[0]


def matmul_gflops(dtype: str, n: int = 2048, reps: int = 5) -> float:
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a, a))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, a))
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times) / 1e9


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--new", type=int, default=64)
  ap.add_argument("--width", type=int, default=512)
  ap.add_argument("--out", default="benchmarks/results/precision.json")
  args = ap.parse_args(argv)
  load = [loadavg()]
  models = {d: sj.load_model("smollm2-135m", dtype=d) for d in DTYPES}
  prompt = models["float32"].tokenizer.encode(PROMPT)
  decode = {(d, b): [] for d in DTYPES for b in (1, 16)}
  first = {}
  for b in (1, 16):   # warm-up (compiles), and the greedy tokens to compare
    for d in DTYPES:
      first[d] = [int(t) for t in sj.generate_ids(models[d], [prompt] * b, max_new_tokens=args.new,
                                                  temperature=0.0, stop_ids=())[0][:32]]
  agree = int(np.cumprod(np.array(first["float32"]) == np.array(first["bfloat16"])).sum())
  update = {d: [] for d in DTYPES}
  step_args = types.SimpleNamespace(micro_batches=4, batch=16, width=args.width, reps=1)
  for rep in range(args.reps):
    for d in DTYPES:
      for b in (1, 16):
        t0 = time.perf_counter()
        sj.generate_ids(models[d], [prompt] * b, max_new_tokens=args.new, temperature=0.0,
                        stop_ids=())
        decode[(d, b)].append(b * args.new / (time.perf_counter() - t0))
      spec = trainable_lib.Trainable(mode="top_n", top_n=2, dtype=d, master_dtype="float32")
      update[d].append(train_step.bench_mode(models[d], spec, step_args)["step_median_s"])
      load.append(loadavg())
      print(f"[precision] rep {rep + 1}/{args.reps} {d}: decode b16 "
            f"{decode[(d, 16)][-1]:.1f} tok/s, update {update[d][-1]:.2f} s", file=sys.stderr,
            flush=True)
  peak = {d: matmul_gflops(d) for d in DTYPES}
  med = lambda xs: statistics.median(xs)  # noqa: E731
  rows = [
      ("decode batch 1 (tok/s)", med(decode[("float32", 1)]), med(decode[("bfloat16", 1)])),
      ("decode batch 16 (tok/s)", med(decode[("float32", 16)]), med(decode[("bfloat16", 16)])),
      ("update step (s)", med(update["float32"]), med(update["bfloat16"])),
      ("2048^3 matmul (GFLOP/s)", peak["float32"], peak["bfloat16"]),
  ]
  lines = ["| | float32 | bfloat16 | bfloat16 speed / float32 |", "|---|---:|---:|---:|"]
  for name, f32, bf in rows:
    speed = f32 / bf if name.startswith("update") else bf / f32
    lines.append(f"| {name} | {f32:.2f} | {bf:.2f} | {speed:.2f} |")
  table = "\n".join(lines)
  print(table)
  print(f"greedy: the first {agree} of 32 tokens agree; load average {min(load):.2f}-"
        f"{max(load):.2f}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), jax=jax.__version__,
                   args=vars(args), decode={f"{d}/b{b}": v for (d, b), v in decode.items()},
                   update_s=update, matmul_gflops=peak, greedy_agree_of_32=agree,
                   loadavg=load, table=table), f, indent=1)
  print(f"written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
