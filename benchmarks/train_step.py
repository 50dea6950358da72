"""Train-step throughput and achieved FLOP/s of SmolLM2-135M on CPU, against the measured
float32 matmul peak of the same machine, in the same run.

For each trainable mode (full; top_n as in the embedded default config) it builds the
real jitted PPO step (`seekjax.rl.step.make_train_step`, AdamW + clipping, micro-batch
accumulation), feeds it a batch shaped like the default config's (16 episodes, width
256, the default micro-batches) with random tokens and half the positions in the loss,
and times it after a warm-up (compile). FLOPs per step are the textbook count: 6 x the
matmul params on the trained path x tokens, with the LM head and the last layer at K
positions when --loss-positions K, and the attention products beside it (`textbook_flops`).
XLA's own count
(`cost_analysis()["flops"]`) is kept in the JSON but not used: it counts a while loop's
body once, not once per trip, so with the layer scan and the micro-batch scan it
undercounts. The peak is the median rate of a 2048^3 float32 matmul (jnp.dot, jitted),
measured before, between and after the modes.

Also records, per mode: peak RSS of the process (ru_maxrss, so the largest so far) and
XLA's memory analysis of the compiled step (arguments, outputs, temporaries).

The step-time split of a real RL iteration (rollout, reference forward, update, helper
wait) comes from the trainer's own metrics: pass --metrics WORKDIR/metrics.jsonl of a
`make run` (or `python -m seekjax.train`) to add its medians to the report.

With `--profile N`, each mode's step also runs N times under `jax.profiler` and the report
lists the ops that took the most time (summed over the N steps, divided by N), each with
the jax op XLA recorded for it (`op_profile`).

  .venv/bin/python benchmarks/train_step.py [--reps 5] [--batch 16] [--width 256]
      [--loss-positions K] [--profile 2] [--metrics runs/default/train/metrics.jsonl]
      [--out benchmarks/results/train_step.json]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

import seekjax as sj
from seekjax.models import attention
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.run import host_memory


def log(msg: str) -> None:
  print(f"[train_step] {msg}", file=sys.stderr, flush=True)


def timed_median(fn, reps: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def matmul_peak(n: int = 2048, reps: int = 10) -> dict:
  """float32 GFLOP/s of an n^3 matmul (median over reps, after a warm-up)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, a))
  med, times = timed_median(lambda: f(a, a), reps)
  return {"n": n, "seconds": times, "gflops": 2 * n ** 3 / med / 1e9}


def make_batch(cfg, batch: int, width: int, seed: int, loss_positions: int = 0,
               varied: bool = False) -> step_lib.Batch:
  """Random tokens; the second half of each row in the loss, or with `loss_positions` K
  that many positions of each row's last three quarters (with `varied`, a count drawn
  uniformly from K/8..5K/8 a row, as the default's episodes sample: 52-81 of K = 192 on
  average in a step), compacted to K as the trainer does (`compact_positions`: the batch
  carries targets [B, K])."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, (batch, width), dtype=np.int32)
  mask = np.zeros((batch, width), np.float32)
  if loss_positions:
    for row in mask:
      n = int(rng.integers(loss_positions // 8, 5 * loss_positions // 8 + 1)) if varied \
          else loss_positions
      row[rng.choice(np.arange(width // 4, width), n, replace=False)] = 1.0
  else:
    mask[:, width // 2:] = 1.0  # the prompt half is not in the loss, the episode half is
  lp = -rng.uniform(0.1, 3.0, (batch, width)).astype(np.float32) * mask
  targets = None
  if loss_positions:
    targets, mask = step_lib.compact_positions(mask, minimum=loss_positions)
    lp = step_lib.gather_positions(lp, targets)
    targets = jnp.asarray(targets)
  return step_lib.Batch(tokens=jnp.asarray(tokens), loss_mask=jnp.asarray(mask),
                        old_logprobs=jnp.asarray(lp), ref_logprobs=jnp.asarray(lp),
                        advantages=jnp.asarray(rng.standard_normal(batch), jnp.float32),
                        targets=targets)


def textbook_flops(cfg, spec: trainable_lib.Trainable, rows: int, width: int,
                   loss_positions: int = 0, head_rows: int | None = None) -> dict:
  """The step's forward + backward FLOPs over the layers that train, counted by hand.

  "weights": 6 N T, N the matmul weights of the trained layers plus the LM head (the
  embedding lookup is free). With `loss_positions` K (the trainer's compacted layout,
  `step._states_for`) the LM head and the last layer's query, output and MLP run at K
  positions a row, its keys and values and every lower trained layer at all T.
  "attention": the score and value products (2 x 2 x heads x head_dim a query-key pair,
  x3 for the backward), counted as computed: the layers below the last run in query blocks
  (`attention.query_blocks`), block i over the keys before its end, the (n + 1) / 2n of the
  T x T pairs at n blocks; the last layer's K queries over all T keys.
  top_n: the frozen bottom runs once per batch outside the step (`bottom_hidden`) and is
  not counted; the frozen head costs forward + grad w.r.t. its input (4 N, not 6 N).
  head_rows: the positions the LM head runs on, when packed (`--pack`: micro-batches x
  the packed length), instead of rows x K.
  """
  d, f = cfg.hidden_size, cfg.intermediate_size
  q_o = 2 * d * cfg.num_heads * cfg.head_dim
  k_v = 2 * d * cfg.num_kv_heads * cfg.head_dim
  mlp = 3 * d * f
  head = d * cfg.vocab_size
  trained = cfg.num_layers if spec.mode == "full" else spec.top_n
  head_factor = 6 if spec.mode == "full" else 4
  t = width
  k = loss_positions or width
  head_positions = rows * k if head_rows is None else head_rows
  weights = (rows * (6 * (trained - 1) * (q_o + k_v + mlp) * t + 6 * ((q_o + mlp) * k + k_v * t))
             + head_factor * head * head_positions)
  bounds = attention.query_blocks(t)
  pairs = sum((e - s) * e for s, e in zip(bounds[:-1], bounds[1:]))
  attn_fwd = 4 * cfg.num_heads * cfg.head_dim * ((trained - 1) * pairs + k * t)
  return {"weights": float(weights), "attention": float(rows * 3 * attn_fwd)}


def op_profile(run, hlo_text: str, steps: int, top: int = 400) -> list[dict]:
  """Run `run` `steps` times under jax.profiler; the `top` HLO ops by time a step (summed
  over every call, loop trips included), each with its op kind and the jax op from the HLO
  metadata of the compiled step (`hlo_text`)."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  meta = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\w[\w\-]*)\(", line)
    if m:
      op = re.search(r'op_name="([^"]*)"', line)
      meta[m.group(1)] = (m.group(2), op.group(1) if op else "")
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        jax.block_until_ready(run())
    data = ProfileData.from_file(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                                           recursive=True)[0])
  total, calls = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" in stats and "train_step" in str(stats.get("hlo_module", "")):
          total[stats["hlo_op"]] += event.duration_ns / 1e9 / steps
          calls[stats["hlo_op"]] += 1
  return [{"hlo_op": name, "kind": meta.get(name, ("?", ""))[0], "s_per_step": secs,
           "calls_per_step": calls[name] / steps, "jax_op": meta.get(name, ("?", ""))[1]}
          for name, secs in total.most_common(top)]


def bench_mode(model, spec: trainable_lib.Trainable, args) -> dict:
  cfg = model.config
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(0))
  trainable = jax.tree.map(jnp.copy, trainable)  # the step donates it; keep model.params
  step_spec = step_lib.StepSpec(model=cfg, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                                aggregation="token-mean", kl_method="k3", kl_beta=0.02,
                                micro_batches=args.micro_batches)
  optimizer, _ = step_lib.make_optimizer(2e-5, 100, 2, 0.0, 1.0)
  opt_state = optimizer.init(trainable)
  train_step = step_lib.make_train_step(step_spec, optimizer)
  batch = make_batch(cfg, args.batch, args.width, 0, args.loss_positions, args.varied)
  head = None
  if args.pack:   # as the trainer packs (`rl.update`): balanced rows, the head's length
    if not args.loss_positions:
      raise SystemExit("--pack needs --loss-positions")
    from seekjax.rl import update  # pylint: disable=import-outside-toplevel  (older trees)
    order = step_lib.balance_rows(batch.loss_mask, args.micro_batches)
    batch = jax.tree.map(lambda x: x[order], batch)
    rows = args.batch // args.micro_batches
    head = step_lib.head_positions(batch.loss_mask, args.micro_batches, update.head_minimum(
        rows, args.loss_positions, args.loss_positions))
  if spec.mode == "top_n":
    t0 = time.perf_counter()
    hidden = step_lib.bottom_hidden(frozen, batch.tokens, cfg=cfg)
    jax.block_until_ready(hidden)
    bottom_s = time.perf_counter() - t0
    batch = batch.replace(hidden=hidden)
  else:
    bottom_s = 0.0
  log(f"{spec.mode}: compiling")
  t0 = time.perf_counter()
  packed = {} if head is None else dict(head_positions=head)   # older trees: no such argument
  compiled = train_step.lower(trainable, frozen, opt_state, batch, **packed).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan")))
  mem = compiled.memory_analysis()
  memory = {k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                "temp_size_in_bytes", "alias_size_in_bytes")
            if mem is not None and hasattr(mem, k)}
  state = {"trainable": trainable, "opt_state": opt_state}

  def run():
    state["trainable"], state["opt_state"], m = train_step(
        state["trainable"], frozen, state["opt_state"], batch, **packed)
    return m

  def reference():
    return step_lib.reference_logprobs(state["trainable"], frozen, batch.tokens, batch.hidden,
                                       spec_trainable=spec, cfg=cfg, targets=batch.targets,
                                       micro_batches=args.micro_batches,
                                       **({} if head is None else dict(mask=batch.loss_mask,
                                                                       **packed)))

  jax.block_until_ready(run())  # warm-up on the real (donating) path
  jax.block_until_ready(reference())
  log(f"{spec.mode}: timing {args.reps} steps and reference passes")
  med, times = timed_median(run, args.reps)
  ref_med, ref_times = timed_median(reference, args.reps)
  profile = []
  if args.profile:
    log(f"{spec.mode}: profiling {args.profile} steps")
    profile = op_profile(run, compiled.as_text(), args.profile)
    for p in profile[:25]:
      log(f"  {p['s_per_step']:.3f} s  x{p['calls_per_step']:.0f}  {p['kind']:<12} {p['hlo_op']:<28} "
          f"{p['jax_op'][-70:]}")
    dots = sum(p["s_per_step"] for p in profile if p["jax_op"].endswith("dot_general"))
    log(f"  ops in all {sum(p['s_per_step'] for p in profile):.3f} s a step, of which "
        f"dot_general {dots:.3f} s")
  tokens = args.batch * args.width
  flops = textbook_flops(cfg, spec, args.batch, args.width, args.loss_positions,
                         None if head is None else head * args.micro_batches)
  book = flops["weights"]
  return {
      "mode": spec.mode, "top_n": spec.top_n if spec.mode == "top_n" else None,
      "trainable_params": trainable_lib.count(trainable), "batch": args.batch,
      "width": args.width, "micro_batches": args.micro_batches, "tokens_per_step": tokens,
      "loss_tokens_per_step": int(np.asarray(batch.loss_mask).sum()),
      "loss_positions": args.loss_positions, "varied": args.varied,
      "head_positions": head, "compile_s": compile_s, "step_s": times,
      "step_median_s": med, "reference_s": ref_times, "reference_median_s": ref_med,
      "bottom_hidden_s": bottom_s,
      "tokens_per_s": tokens / med, "xla_flops_per_step": xla_flops,
      "xla_gflops_per_s": xla_flops / med / 1e9, "textbook_flops_per_step": book,
      "textbook_gflops_per_s": book / med / 1e9,
      "attention_flops_per_step": flops["attention"],
      "with_attention_gflops_per_s": (book + flops["attention"]) / med / 1e9,
      "xla_memory_bytes": memory, "op_profile": profile,
      "peak_rss_gib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
  }


def step_split(path: str) -> dict:
  """Medians of the trainer's per-iteration timings from a metrics.jsonl."""
  keys = ("time_rollout", "time_helper_wait", "time_reference", "time_update", "step_time")
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      rec = json.loads(line)
      if all(k in rec for k in keys):
        rows.append(rec)
  if not rows:
    raise SystemExit(f"{path}: no RL iterations with timings ({', '.join(keys)})")
  return {"file": path, "iterations": len(rows),
          **{k: statistics.median(r[k] for r in rows) for k in keys}}


def markdown(res: dict) -> str:
  peak = res["peak_gflops"]
  lines = ["| mode | trainable params | tokens/step | step s (min-max) | reference s | tokens/s | "
           "GFLOP/step | GFLOP/s | % of matmul peak | with attention | XLA temp MiB | "
           "peak RSS GiB |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for m in res["modes"]:
    t = m["step_s"]
    lines.append(
        f"| {m['mode']}{'' if m['top_n'] is None else ' ' + str(m['top_n'])}"
        f"{'' if m.get('head_positions') is None else ', head ' + str(m['head_positions'])} | "
        f"{m['trainable_params'] / 1e6:.2f}M | {m['tokens_per_step']} | "
        f"{m['step_median_s']:.2f} ({min(t):.2f}-{max(t):.2f}) | "
        f"{m.get('reference_median_s', float('nan')):.2f} | {m['tokens_per_s']:.0f} | "
        f"{m['textbook_flops_per_step'] / 1e9:.0f} | {m['textbook_gflops_per_s']:.1f} | "
        f"{100 * m['textbook_gflops_per_s'] / peak:.0f}% | "
        f"{100 * m.get('with_attention_gflops_per_s', float('nan')) / peak:.0f}% | "
        f"{m['xla_memory_bytes'].get('temp_size_in_bytes', 0) / 2 ** 20:.0f} | "
        f"{m['peak_rss_gib_so_far']:.2f} |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--width", type=int, default=256)
  ap.add_argument("--micro-batches", type=int, default=4)
  ap.add_argument("--top-n", type=int, default=2)
  ap.add_argument("--modes", default="top_n,full")
  ap.add_argument("--loss-positions", type=int, default=0,
                  help="K loss positions a row, compacted as the trainer does (0: half the row)")
  ap.add_argument("--varied", action="store_true",
                  help="each row's loss count drawn from K/8..5K/8 (as episodes vary), not K")
  ap.add_argument("--pack", action="store_true",
                  help="pack the LM head's positions as the trainer does (balanced rows)")
  ap.add_argument("--profile", type=int, default=0,
                  help="also profile this many steps per mode and list the costliest ops")
  ap.add_argument("--model", default="smollm2-135m")
  ap.add_argument("--metrics", default=None, help="a trainer metrics.jsonl for the step split")
  ap.add_argument("--out", default="benchmarks/results/train_step.json")
  args = ap.parse_args(argv)
  if args.batch % args.micro_batches:
    ap.error(f"--batch {args.batch} must be a multiple of --micro-batches {args.micro_batches}")

  model = sj.load_model(args.model)  # an embedded name ("smollm2-135m", "tiny-random") or a path
  peaks, modes = [], []
  for name in args.modes.split(","):
    peaks.append(matmul_peak())
    log(f"matmul peak {peaks[-1]['gflops']:.1f} GFLOP/s")
    modes.append(bench_mode(model, trainable_lib.Trainable(mode=name, top_n=args.top_n), args))
  peaks.append(matmul_peak())
  res = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": "python benchmarks/train_step.py " + " ".join(argv or sys.argv[1:]),
      "model": args.model, "jax": jax.__version__, "cpus": os.cpu_count(),
      "loadavg": os.getloadavg(), "matmul_peaks": peaks,
      "peak_gflops": statistics.median(p["gflops"] for p in peaks), "modes": modes,
  }
  if args.metrics:
    res["rl_step_split"] = step_split(args.metrics)
  res["markdown"] = markdown(res)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=1)
  print(res["markdown"])
  if "rl_step_split" in res:
    print(json.dumps(res["rl_step_split"], indent=1))
  print(f"written: {args.out}")
  return res


if __name__ == "__main__":
  host_memory.restart_with_reused_memory()   # as seekjax.train runs the step
  main()
