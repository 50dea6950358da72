"""Where a sampled decode step of the RL rollout goes, on SmolLM2-135M (float32, CPU).

The rollout's decode loop (`engine.decode_until_blocked`) at the default config's RL
shape: 16 rows, a 640-slot cache, the residual after layer 28 kept for the update
(`capture_layer`, top_n=2), temperature 0.7, rows that never close a tag and never stop,
so that every step decodes all 16 rows. Variants, each switching one thing off, timed
side by side (alternating, after a warm-up of each):

  rl             the rollout as configured (sampling by inverting the CDF, one uniform a row)
  gumbel         the same with Gumbel-max sampling (`jax.random.categorical`: one uniform
                 per vocabulary entry), the sampler before the CDF change
  greedy         temperature 0 (argmax; the decode peers' setting)
  no_capture     no residual kept (capture_layer None)
  short          the rows' positions 64 slots in, not --fill (a narrower attention window)

The fill sets the rows' positions (prompt + earlier turns); the loop's attention covers
the smallest window that holds every row. Reports ms per decode step (median of --reps)
and each variant's difference from `rl`: what that part costs a step.

  .venv/bin/python benchmarks/decode_profile.py [--reps 5] [--steps 32] [--fill 200]
      [--out benchmarks/results/decode_profile.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

import seekjax as sj
from seekjax.models import packing
from seekjax.rollout import engine


def gumbel_rows(logits, keys, temperature, top_k=0, top_p=1.0):
  """Gumbel-max sampling a row at a time (the sampler before the inverse CDF)."""
  del top_k, top_p

  def one(row, key):
    scaled = row.astype(jnp.float32) / temperature
    i = jax.random.categorical(key, scaled).astype(jnp.int32)
    return i, jax.nn.log_softmax(scaled)[i]
  return jax.vmap(one)(logits, keys)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--steps", type=int, default=32)
  ap.add_argument("--fill", type=int, default=200)
  ap.add_argument("--rows", type=int, default=16)
  ap.add_argument("--out", default="benchmarks/results/decode_profile.json")
  args = ap.parse_args(argv)
  load = [os.getloadavg()[0]]
  model = sj.load_model("smollm2-135m")
  cfg = model.config
  params = packing.unstack_layers(model.params)
  v = cfg.vocab_size
  never = jnp.zeros((1, v), jnp.int32)
  tables = engine.TagTables(never, never.astype(bool), never, never.astype(bool))
  base = engine.EngineSpec(model=cfg, max_len=640, turn_window=10_000,
                           max_steps=args.steps, temperature=0.7, top_k=0, top_p=1.0,
                           eos_ids=(), capture_layer=cfg.num_layers - 2)
  variants = {
      "rl": (base, args.fill),
      "gumbel": (base, args.fill),
      "greedy": (dataclasses.replace(base, temperature=0.0), args.fill),
      "no_capture": (dataclasses.replace(base, capture_layer=None), args.fill),
      "short": (base, 64),
  }
  rng = np.random.default_rng(0)

  def run(name):
    spec, fill = variants[name]
    prompts = jnp.asarray(rng.integers(100, v, (args.rows, fill)), jnp.int32)
    state = engine.prefill(params, prompts, jnp.full((args.rows,), fill, jnp.int32),
                           jax.random.PRNGKey(0), jnp.int32(0), jnp.int32(10_000), spec=spec,
                           group=1)
    jax.block_until_ready(state)
    # the Gumbel variant traces the loop with the old sampler; jit keys its cache on the
    # spec, so it gets a spec of its own (one more step a call, then one step less)
    if name == "gumbel":
      engine.sample_token_rows, saved = gumbel_rows, engine.sample_token_rows
      spec = dataclasses.replace(spec, max_steps=spec.max_steps + 1)
    try:
      t0 = time.perf_counter()
      out = engine.decode_until_blocked(params, tables, state, jnp.int32(-1), spec=spec)
      steps = int(out.steps)
      dt = time.perf_counter() - t0
    finally:
      if name == "gumbel":
        engine.sample_token_rows = saved
    assert np.all(np.asarray(out.status) == engine.RUNNING), "a row stopped"
    return dt / steps * 1e3

  compile_s = {}
  for name in variants:   # compile (the first call of each variant)
    t0 = time.perf_counter()
    run(name)
    compile_s[name] = time.perf_counter() - t0
  print("[decode_profile] first call (compile + prefill + decode) s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items()), file=sys.stderr, flush=True)
  times = {name: [] for name in variants}
  for rep in range(args.reps):
    for name in variants:
      times[name].append(run(name))
    load.append(os.getloadavg()[0])
    print(f"[decode_profile] rep {rep + 1}/{args.reps}: "
          + ", ".join(f"{k} {v[-1]:.1f}" for k, v in times.items()), file=sys.stderr, flush=True)
  med = {k: statistics.median(x) for k, x in times.items()}
  weights = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model.params)) * 4
  lines = [f"| variant | ms / step (min-max) | rl minus variant (ms) | tok/s at {args.rows} rows |",
           "|---|---:|---:|---:|"]
  for k, x in times.items():
    lines.append(f"| {k} | {med[k]:.1f} ({min(x):.1f}-{max(x):.1f}) | "
                 f"{med['rl'] - med[k]:+.1f} | {args.rows * 1e3 / med[k]:.0f} |")
  table = "\n".join(lines)
  print(table)
  print(f"gumbel / rl: {med['gumbel'] / med['rl']:.2f}x the step time; weights "
        f"{weights / 1e6:.0f} MB; load average {min(load):.2f}-{max(load):.2f}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), jax=jax.__version__,
                   args=vars(args), first_call_s=compile_s, ms_per_step=times, median=med,
                   loadavg=load, table=table), f, indent=1)
  print(f"written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
