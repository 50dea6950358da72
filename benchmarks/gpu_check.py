"""One prepared GPU check: decode vs the HBM roofline, train-step MFU, peak memory (Qwen3 shapes).

Random weights (no download), bfloat16. `--dry-run` runs tiny shapes on any backend
(CI runs it on CPU). Prints a Markdown table and writes JSON to --out.

  python benchmarks/gpu_check.py --out gpu_check.json            # on the GPU machine (Qwen3-0.6B)
  python benchmarks/gpu_check.py --shape qwen3-1.7b --out x.json  # the pod config's SLM
  python benchmarks/gpu_check.py --dry-run                       # anywhere, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import seekjax as sj  # noqa: E402
from seekjax.models import decoder  # noqa: E402
from seekjax.rl import step as step_lib  # noqa: E402
from seekjax.rl import trainable as trainable_lib  # noqa: E402

QWEN3_1_7B = sj.ModelConfig(arch="qwen3", vocab_size=151936, hidden_size=2048, num_layers=28,
                            num_heads=16, num_kv_heads=8, head_dim=128, intermediate_size=6144,
                            rope_theta=1e6, rms_norm_eps=1e-6, tie_embeddings=True, qk_norm=True,
                            max_position_embeddings=40960, dtype="bfloat16")
QWEN3_0_6B = QWEN3_1_7B.replace(hidden_size=1024, intermediate_size=3072)
SHAPES = {"qwen3-0.6b": QWEN3_0_6B, "qwen3-1.7b": QWEN3_1_7B}
TINY = QWEN3_1_7B.replace(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=16, intermediate_size=128,
                          max_position_embeddings=1024)
# Published peaks (dense bf16 / HBM). The measured matmul peak is reported alongside.
DEVICE_PEAKS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12), "A100": (312e12, 2.0e12)}


def timed(fn, *args, reps=5):
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), out


def matmul_peak(n, dtype):
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  t, _ = timed(f, a, a)
  return 2 * n ** 3 / t


def decode_bench(model, batch, prompt_len, new_tokens):
  prompts = [list(range(1, prompt_len + 1))] * batch
  sj.generate_ids(model, prompts, max_new_tokens=new_tokens, stop_ids=())  # compile
  t = time.perf_counter()
  sj.generate_ids(model, prompts, max_new_tokens=new_tokens, stop_ids=())
  dt = time.perf_counter() - t
  return batch * new_tokens / dt


def param_bytes(params):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))


def train_flops(cfg, batch, seq):
  """Forward 2*N*T for every matmul weight + attention; backward twice forward (full training)."""
  n_matmul = cfg.num_params - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
  head = cfg.vocab_size * cfg.hidden_size
  tokens = batch * seq
  attn = 2 * 2 * cfg.num_layers * batch * seq * seq * cfg.num_heads * cfg.head_dim
  fwd = 2 * tokens * (n_matmul + head) + attn
  return 3 * fwd


def train_bench(model, batch, seq):
  cfg = model.config
  spec = trainable_lib.Trainable(mode="full")
  opt = optax.adamw(1e-5)
  sspec = step_lib.StepSpec(model=cfg, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                            aggregation="token-mean", kl_method="k3", kl_beta=0.0,
                            micro_batches=1, remat=True)
  train_step = step_lib.make_train_step(sspec, opt)
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(0))
  opt_state = opt.init(trainable)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (batch, seq)), jnp.int32)
  batch_ = step_lib.Batch(tokens=tokens, loss_mask=jnp.ones((batch, seq), jnp.float32),
                          old_logprobs=jnp.zeros((batch, seq)), ref_logprobs=jnp.zeros((batch, seq)),
                          advantages=jnp.ones((batch,)))
  trainable, opt_state, _ = train_step(trainable, frozen, opt_state, batch_)
  jax.block_until_ready(trainable)
  times = []
  for _ in range(3):
    t = time.perf_counter()
    trainable, opt_state, m = train_step(trainable, frozen, opt_state, batch_)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--dry-run", action="store_true", help="tiny shapes, any backend")
  ap.add_argument("--out", default="")
  ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
  args = ap.parse_args(argv)
  cfg = TINY if args.dry_run else SHAPES[args.shape]
  dev = jax.devices()[0]
  kind = getattr(dev, "device_kind", str(dev))
  peak_flops, peak_bw = next((v for k, v in DEVICE_PEAKS.items() if k in kind), (None, None))
  print(f"device: {kind} ({jax.default_backend()}), model: {'tiny' if args.dry_run else args.shape}"
        " random bf16", flush=True)
  n = 256 if args.dry_run else 8192
  measured_peak = matmul_peak(n, jnp.bfloat16)
  print(f"matmul peak (bf16 {n}^3): {measured_peak / 1e12:.2f} TFLOP/s", flush=True)
  model = sj.random_model(cfg, seed=0)
  pbytes = param_bytes(model.params)
  rows = {}
  for batch in ((1, 4) if args.dry_run else (1, 64)):
    new = 16 if args.dry_run else 256
    prompt = 32 if args.dry_run else 128
    tps = decode_bench(model, batch, prompt, new)
    # bytes a decode step reads: the weights once, and each row's whole KV cache (bf16)
    kv_bytes = 2 * cfg.num_layers * batch * (prompt + new) * cfg.num_kv_heads * cfg.head_dim * 2
    roofline = (peak_bw or 0) / (pbytes + kv_bytes) * batch if peak_bw else None
    rows[f"decode_b{batch}"] = dict(tokens_per_s=tps, roofline_tokens_per_s=roofline,
                                    fraction=tps / roofline if roofline else None)
    print(f"decode batch {batch}: {tps:.1f} tok/s"
          + (f" = {tps / roofline:.1%} of HBM roofline {roofline:.0f}" if roofline else ""),
          flush=True)
  batch, seq = (2, 64) if args.dry_run else (8, 2048)
  t = train_bench(model, batch, seq)
  flops = train_flops(cfg, batch, seq)
  mfu = flops / t / peak_flops if peak_flops else None
  rows["train_step"] = dict(seconds=t, tokens_per_s=batch * seq / t, flops_per_s=flops / t,
                            mfu=mfu, mfu_vs_measured_matmul=flops / t / measured_peak)
  print(f"train step {batch}x{seq}: {t:.3f}s, {flops / t / 1e12:.2f} TFLOP/s"
        + (f", MFU {mfu:.1%}" if mfu else "")
        + f", {flops / t / measured_peak:.1%} of measured matmul peak", flush=True)
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  peak_mem = (stats or {}).get("peak_bytes_in_use")
  rows["memory"] = dict(peak_bytes=peak_mem, param_bytes=pbytes)
  print(f"peak device memory: {peak_mem / 2**30:.2f} GiB" if peak_mem else
        "peak device memory: not reported by this backend", flush=True)
  result = dict(device=kind, dry_run=args.dry_run, shape="tiny" if args.dry_run else args.shape, matmul_peak_flops=measured_peak,
                published_peak_flops=peak_flops, hbm_bandwidth=peak_bw, **rows,
                date=time.strftime("%Y-%m-%d"))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
