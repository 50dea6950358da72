"""Two forms of the update step side by side in one process, steps interleaved.

--compare head: the LM head's own backward pass (`losses.head_logprobs_and_entropy`,
  "own_vjp") against the same step differentiated by autodiff through
  `losses.logprobs_and_entropy` of the head's logits ("autodiff", the form it replaced).
--compare causal: the causal attention of the layers below the last in query blocks that
  skip later keys (`attention.causal_attention` at `attention.query_blocks`, "blocks") against
  one block over all T x T scores ("full", the form it replaced).

The batch is the default's widest update, as `benchmarks/train_step.py --pack` builds it:
16 rows x 640 tokens, K = 192 loss positions with each row's count drawn from K/8..5K/8,
4 micro-batches, the head on packed positions; SmolLM2-135M float32, top_n 2. Each round
times one step of each form, in alternating order; the report gives each form's median and
the ratio per round (replaced / new), and checks that both forms give the same loss and
gradient norm.

  .venv/bin/python benchmarks/update_ab.py [--compare head|causal] [--rounds 10]
      [--out benchmarks/results/update_ab_<compare>.json]
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

import seekjax as sj
from seekjax.models import attention
from seekjax.rl import losses
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rl import update
from seekjax.run import host_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step as bench  # pylint: disable=wrong-import-order  (make_batch, matmul_peak)


def autodiff_head(x, head, ids, temperature=1.0):
  """The replaced form: logits materialised, entropy from a second pass over them, the
  backward pass by autodiff."""
  logits = jnp.einsum("...d,dv->...v", x, head.astype(x.dtype),
                      preferred_element_type=jnp.float32)
  return losses.logprobs_and_entropy(logits, ids, temperature)


def full_mask_blocks(t: int) -> tuple[int, ...]:
  """The replaced attention: one query block over all T x T scores."""
  return (0, t)


# --compare -> (module, attribute, {form name: the attribute's value}, new form, replaced form)
COMPARES = {
    "head": (losses, "head_logprobs_and_entropy",
             {"own_vjp": losses.head_logprobs_and_entropy, "autodiff": autodiff_head},
             "own_vjp", "autodiff"),
    "causal": (attention, "query_blocks",
               {"blocks": attention.query_blocks, "full": full_mask_blocks}, "blocks", "full"),
}


def build(patch, model, spec, step_spec, batch, head):
  """A compiled step traced with `patch` = (module, attribute, value) set, and its fresh
  state."""
  module, attr, value = patch
  own = getattr(module, attr)
  setattr(module, attr, value)
  try:
    optimizer, _ = step_lib.make_optimizer(2e-5, 100, 2, 0.0, 1.0)
    trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(0))
    trainable = jax.tree.map(jnp.copy, trainable)
    opt_state = optimizer.init(trainable)
    fn = step_lib.make_train_step(step_spec, optimizer).lower(
        trainable, frozen, opt_state, batch, head_positions=head).compile()
  finally:
    setattr(module, attr, own)
  return fn, {"trainable": trainable, "frozen": frozen, "opt_state": opt_state}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--compare", choices=sorted(COMPARES), default="head")
  ap.add_argument("--rounds", type=int, default=10)
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  args.out = args.out or f"benchmarks/results/update_ab_{args.compare}.json"
  module, attr, forms, new, old = COMPARES[args.compare]
  model = sj.load_model("smollm2-135m")
  cfg = model.config
  spec = trainable_lib.Trainable(mode="top_n", top_n=2)
  step_spec = step_lib.StepSpec(model=cfg, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                                aggregation="token-mean", kl_method="k3", kl_beta=0.02,
                                micro_batches=4)
  batch = bench.make_batch(cfg, 16, 640, 0, 192, varied=True)
  order = step_lib.balance_rows(batch.loss_mask, 4)
  batch = jax.tree.map(lambda x: x[order], batch)
  head = step_lib.head_positions(batch.loss_mask, 4, update.head_minimum(4, 192, 192))
  _, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(0))
  batch = batch.replace(hidden=step_lib.bottom_hidden(frozen, batch.tokens, cfg=cfg))
  steps = {name: build((module, attr, form), model, spec, step_spec, batch, head)
           for name, form in forms.items()}

  def run(name):
    fn, st = steps[name]
    st["trainable"], st["opt_state"], metrics = fn(st["trainable"], st["frozen"],
                                                   st["opt_state"], batch)
    return jax.block_until_ready(metrics)

  first = {name: {k: float(v) for k, v in run(name).items()} for name in forms}
  times = {name: [] for name in forms}
  peak_before = bench.matmul_peak()["gflops"]
  for r in range(args.rounds):
    for name in (list(forms) if r % 2 == 0 else list(forms)[::-1]):
      t0 = time.perf_counter()
      run(name)
      times[name].append(time.perf_counter() - t0)
    print(f"[update_ab {args.compare}] round {r + 1}/{args.rounds}: " + ", ".join(
        f"{n} {times[n][-1]:.2f} s" for n in forms), file=sys.stderr, flush=True)
  ratios = [a / b for a, b in zip(times[old], times[new])]
  res = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": "python benchmarks/update_ab.py " + " ".join(argv or sys.argv[1:]),
      "loadavg": os.getloadavg(), "head_positions": head,
      "matmul_peak_gflops": [peak_before, bench.matmul_peak()["gflops"]],
      "step_s": times, "median_s": {n: statistics.median(t) for n, t in times.items()},
      "compare": args.compare, "new": new, "replaced": old,
      "replaced_over_new_per_round": ratios, "median_ratio": statistics.median(ratios),
      "first_step_metrics": first,
  }
  for key in ("loss", "kl", "grad_norm", "entropy"):
    print(f"first step {key}: " + ", ".join(f"{n} {first[n][key]:.6g}" for n in forms))
  print("median step s: " + ", ".join(f"{n} {res['median_s'][n]:.3f}" for n in forms)
        + f"; {old} / {new} per round, median {res['median_ratio']:.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=1)
  print(f"written: {args.out}")
  return res


if __name__ == "__main__":
  host_memory.restart_with_reused_memory()   # as seekjax.train runs the step
  main()
