"""The LM head's log-probs in the update step: seekjax's `losses.logprobs_and_entropy`
against the textbook form (gather from a materialised `jax.nn.log_softmax`, which
seekjax used before), side by side in one process, at the shape of one micro-batch of
the default's update (1024 positions x SmolLM2-135M's 576 x 49152 tied head, float32).

Each variant is timed as the update uses it: the head matmul, the log-probs and the
entropy, then the gradient of sum(g * logprob) with respect to the hidden states (the head
is frozen in top_n mode, as in the default). The share of the matmul peak counts the
textbook FLOPs of the two head matmuls (forward and input gradient: 4 x N x D x V); the
peak is a jitted 2048^3 float32 `jnp.dot`, measured before, between and after.

  .venv/bin/python benchmarks/head_softmax.py [--rows 1024] [--reps 5]
      [--out benchmarks/results/head_softmax.json]
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

from seekjax.rl import losses

HIDDEN, VOCAB = 576, 49152   # SmolLM2-135M


def textbook(logits, ids):
  """The peer: gather the target from a materialised log_softmax; entropy from it."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  lp = jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
  return lp, -jnp.sum(jnp.exp(logp) * logp, axis=-1)


VARIANTS = {"textbook log_softmax gather": textbook, "seekjax": losses.logprobs_and_entropy}


def timed(fn, args, reps: int) -> list[float]:
  jax.block_until_ready(fn(*args))   # compile
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    out.append(time.perf_counter() - t0)
  return out


def matmul_peak(reps: int) -> float:
  a = jnp.ones((2048, 2048), jnp.float32)
  t = statistics.median(timed(jax.jit(jnp.dot), (a, a), reps))
  return 2 * 2048 ** 3 / t / 1e9


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", type=int, default=1024, help="positions in one micro-batch")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.rows, HIDDEN)) * 0.1, jnp.float32)
  head = jnp.asarray(rng.standard_normal((HIDDEN, VOCAB)) * 0.05, jnp.float32)
  ids = jnp.asarray(rng.integers(0, VOCAB, args.rows), jnp.int32)
  g = jnp.asarray(rng.standard_normal(args.rows), jnp.float32)
  flops = 4.0 * args.rows * HIDDEN * VOCAB
  load_before = os.getloadavg()
  peaks = [matmul_peak(args.reps)]
  rows, values = {}, {}
  for name, fn in VARIANTS.items():
    def forward(x, head, fn=fn):
      return fn(x @ head, ids)

    def objective(x, head, fn=fn):
      lp, ent = fn(x @ head, ids)
      return jnp.sum(lp * g), ent

    values[name] = jax.jit(forward)(x, head)
    fwd = timed(jax.jit(forward), (x, head), args.reps)
    grad = timed(jax.jit(jax.grad(objective, has_aux=True)), (x, head), args.reps)
    rows[name] = dict(forward_s=statistics.median(fwd), forward_and_grad_s=statistics.median(grad),
                      forward_all=fwd, grad_all=grad)
    peaks.append(matmul_peak(args.reps))
    print(f"[head_softmax] {name}: forward {rows[name]['forward_s']:.3f} s, "
          f"forward + input gradient {rows[name]['forward_and_grad_s']:.3f} s", file=sys.stderr)
  peak = statistics.median(peaks)
  for r in rows.values():
    r["share_of_matmul_peak"] = flops / r["forward_and_grad_s"] / 1e9 / peak
  base, ours = rows["textbook log_softmax gather"], rows["seekjax"]
  (lp_a, ent_a), (lp_b, ent_b) = values["textbook log_softmax gather"], values["seekjax"]
  res = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command="python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
      rows=args.rows, hidden=HIDDEN, vocab=VOCAB, matmul_peak_gflops=peaks,
      load_before=load_before, load_after=os.getloadavg(), variants=rows,
      speedup_forward=base["forward_s"] / ours["forward_s"],
      speedup_forward_and_grad=base["forward_and_grad_s"] / ours["forward_and_grad_s"],
      max_abs_diff_logprob=float(jnp.max(jnp.abs(lp_a - lp_b))),
      max_abs_diff_entropy=float(jnp.max(jnp.abs(ent_a - ent_b))))
  print(json.dumps({k: v for k, v in res.items() if k != "variants"}, indent=1))
  for name, r in rows.items():
    print(f"| {name} | {r['forward_s']:.3f} | {r['forward_and_grad_s']:.3f} | "
          f"{100 * r['share_of_matmul_peak']:.0f}% |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
