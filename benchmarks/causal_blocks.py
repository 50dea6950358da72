"""The update's full-width causal attention (`attention.attention` over all T x T scores with
a causal mask) against the same attention in query blocks that skip the key blocks the
mask hides entirely (block i of n attends to keys [0, (i + 1) T / n)), forward and
backward, side by side in one process, interleaved: the probe that chose the block
counts of `attention.causal_attention` (BENCHMARKS.md, "The LM head's own backward pass";
`attention.query_blocks` takes 4 blocks at 640 tokens). The forms here are the probe's own,
at the given block counts.

Shape: one micro-batch of the default's widest update through the lower trained layer,
4 rows x 640 tokens, SmolLM2-135M's 9 query heads over 3 key/value heads of 64, float32.
Checks that every form gives the full form's output and gradients.

  .venv/bin/python benchmarks/causal_blocks.py [--blocks 2,4,5] [--rounds 10]
      [--out benchmarks/results/causal_blocks.json]
"""
from __future__ import annotations

import argparse
import datetime
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

from seekjax.models import attention

ROWS, T, HEADS, KV_HEADS, HEAD_DIM = 4, 640, 9, 3, 64


def blocked_attention(q, k, v, blocks: int):
  """Causal attention in `blocks` query blocks, each over the keys up to its end."""
  t = q.shape[1]
  size = t // blocks
  outs = []
  for i in range(blocks):
    end = (i + 1) * size
    pos_q = jnp.arange(i * size, end)
    mask = jnp.broadcast_to(jnp.arange(end)[None, :] <= pos_q[:, None], (q.shape[0], size, end))
    outs.append(attention.attention(q[:, i * size:end], k[:, :end], v[:, :end], mask))
  return jnp.concatenate(outs, axis=1)


def full_attention(q, k, v):
  pos = jnp.arange(q.shape[1])
  mask = jnp.broadcast_to(pos[None, :] <= pos[:, None], (q.shape[0], q.shape[1], q.shape[1]))
  return attention.attention(q, k, v, mask)


def fwd_bwd(fn):
  """Forward and the gradient with respect to q, k, v of sum(out * g)."""
  def run(q, k, v, g):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out,) + vjp(g)
  return jax.jit(run)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--blocks", default="2,4,5")
  ap.add_argument("--rounds", type=int, default=10)
  ap.add_argument("--out", default="benchmarks/results/causal_blocks.json")
  args = ap.parse_args(argv)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((ROWS, T, n, HEAD_DIM)), jnp.float32)
             for n in (HEADS, KV_HEADS, KV_HEADS))
  g = jnp.asarray(rng.standard_normal((ROWS, T, HEADS * HEAD_DIM)), jnp.float32)
  forms = {"full": fwd_bwd(full_attention)}
  for n in (int(b) for b in args.blocks.split(",")):
    if T % n:
      raise SystemExit(f"--blocks {n} must divide {T}")
    forms[f"blocks_{n}"] = fwd_bwd(lambda q, k, v, n=n: blocked_attention(q, k, v, n))
  want = jax.block_until_ready(forms["full"](q, k, v, g))
  errors = {}
  for name, fn in forms.items():
    got = jax.block_until_ready(fn(q, k, v, g))
    errors[name] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(got, want))
  times = {name: [] for name in forms}
  names = list(forms)
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      t0 = time.perf_counter()
      jax.block_until_ready(forms[name](q, k, v, g))
      times[name].append(time.perf_counter() - t0)
  med = {n: statistics.median(t) for n, t in times.items()}
  res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "command": "python benchmarks/causal_blocks.py " + " ".join(argv or sys.argv[1:]),
         "loadavg": os.getloadavg(), "shape": [ROWS, T, HEADS, KV_HEADS, HEAD_DIM],
         "seconds": times, "median_s": med, "max_abs_error_vs_full": errors,
         "full_over_form": {n: med["full"] / m for n, m in med.items()}}
  for name in forms:
    print(f"{name}: median {med[name] * 1e3:.1f} ms (min {min(times[name]) * 1e3:.1f}), "
          f"full / this {res['full_over_form'][name]:.2f}x, max |error| {errors[name]:.1e}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=1)
  print(f"written: {args.out}")


if __name__ == "__main__":
  main()
