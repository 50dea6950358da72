"""Greedy decode throughput: seekjax `generate_ids` vs transformers (PyTorch) `generate`.

Both run SmolLM2-135M-Instruct in float32 on CPU, from the same weights (the HF model is
built from our params by `seekjax.models.export`), on the same ~32-token prompt repeated in
every row, producing exactly --new tokens per row (EOS ignored on both sides). Each
configuration is warmed up once (JAX compile, torch first-call costs), then the two sides
alternate --reps times and the median is reported.

  .venv/bin/python benchmarks/decode_vs_hf.py [--batches 1,16] [--new 128] [--reps 3]
      [--out benchmarks/results/decode_vs_hf.json] [--breakdown]

--breakdown also times the prefill and one decode step of each side separately.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes "
          "Gutenberg combined movable metal type, oil-based ink and a wooden screw press into "
          "a system that could produce books far faster than any scribe.")


def log(msg):
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg():
  try:
    return os.getloadavg()[0]
  except OSError:
    return float("nan")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="smollm2-135m")
  ap.add_argument("--batches", default="1,16")
  ap.add_argument("--new", type=int, default=128, help="new tokens per row")
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--agree", type=int, default=16, help="compare the first N greedy tokens")
  ap.add_argument("--threads", type=int, default=os.cpu_count(),
                  help="torch threads; below the core count, XLA's CPU intra-op threads too")
  ap.add_argument("--breakdown", action="store_true")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                "decode_vs_hf.json"))
  args = ap.parse_args(argv)
  batches = [int(b) for b in args.batches.split(",")]
  if args.threads < (os.cpu_count() or 1):
    # Must be set before jax is imported. Keeps both sides on the same thread budget.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false"
                               f" intra_op_parallelism_threads={args.threads}").strip()

  import jax
  import torch
  import transformers
  import seekjax as sj
  from seekjax.models import export

  torch.set_num_threads(args.threads)
  log(f"cpus={os.cpu_count()} torch threads={torch.get_num_threads()} jax={jax.__version__} "
      f"torch={torch.__version__} transformers={transformers.__version__} "
      f"loadavg(1m)={loadavg():.2f}")

  log(f"loading {args.model} (seekjax, float32)")
  model = sj.load_model(args.model, dtype="float32")
  tok = model.tokenizer
  prompt = tok.encode(PROMPT)[:args.prompt_len]
  if len(prompt) < args.prompt_len:
    raise SystemExit(f"prompt has only {len(prompt)} tokens")
  log("building the transformers model from the same weights (seekjax.models.export)")
  hf = export.to_hf_model(model, bos_token_id=None, eos_token_id=None, pad_token_id=tok.pad_id)
  hf.generation_config.eos_token_id = None
  hf.generation_config.bos_token_id = None
  hf.generation_config.pad_token_id = tok.pad_id if tok.pad_id is not None else 0

  def run_sj(b, new):
    t0 = time.perf_counter()
    out = sj.generate_ids(model, [prompt] * b, max_new_tokens=new, temperature=0.0, stop_ids=())
    dt = time.perf_counter() - t0
    assert all(len(o) == new for o in out), [len(o) for o in out]
    return dt, np.asarray(out)

  def run_hf(b, new):
    ids = torch.tensor([prompt] * b)
    mask = torch.ones_like(ids)
    t0 = time.perf_counter()
    with torch.inference_mode():
      out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                        min_new_tokens=new, do_sample=False, use_cache=True, eos_token_id=None,
                        pad_token_id=hf.generation_config.pad_token_id)
    dt = time.perf_counter() - t0
    out = out[:, ids.shape[1]:].numpy()
    assert out.shape == (b, new), out.shape
    return dt, out

  rows = []
  for b in batches:
    log(f"batch {b}: warm-up (compile) seekjax")
    t, sj_out = run_sj(b, args.new)
    log(f"  seekjax warm-up {t:.2f}s")
    log(f"batch {b}: warm-up transformers")
    t, hf_out = run_hf(b, args.new)
    log(f"  transformers warm-up {t:.2f}s")
    n = args.agree
    n = min(n, args.new)
    agree_n = int(np.sum(np.cumprod(sj_out[0, :n] == hf_out[0, :n])))
    first_div = np.nonzero(sj_out[0] != hf_out[0])[0]
    rows_same = bool((sj_out == sj_out[0]).all() and (hf_out == hf_out[0]).all())
    sj_times, hf_times, loads = [], [], []
    for r in range(args.reps):
      loads.append(loadavg())
      t, _ = run_sj(b, args.new)
      sj_times.append(t)
      t, _ = run_hf(b, args.new)
      hf_times.append(t)
      log(f"batch {b} rep {r + 1}/{args.reps}: seekjax {sj_times[-1]:.2f}s "
          f"({b * args.new / sj_times[-1]:.1f} tok/s)  transformers {hf_times[-1]:.2f}s "
          f"({b * args.new / hf_times[-1]:.1f} tok/s)  loadavg {loads[-1]:.2f}")
    sj_med, hf_med = statistics.median(sj_times), statistics.median(hf_times)
    row = dict(
        batch=b, prompt_tokens=len(prompt), new_tokens=args.new,
        seekjax_s=sj_times, transformers_s=hf_times,
        seekjax_tok_s=b * args.new / sj_med, transformers_tok_s=b * args.new / hf_med,
        seekjax_tok_s_range=[b * args.new / max(sj_times), b * args.new / min(sj_times)],
        transformers_tok_s_range=[b * args.new / max(hf_times), b * args.new / min(hf_times)],
        ratio=hf_med / sj_med, agree_first=f"{agree_n}/{n}",
        first_divergence=int(first_div[0]) if len(first_div) else None,
        rows_identical=rows_same, loadavg_1m=loads,
        seekjax_text=tok.decode(sj_out[0, :n].tolist()),
        transformers_text=tok.decode(hf_out[0, :n].tolist()))
    rows.append(row)
    log(f"batch {b}: seekjax {row['seekjax_tok_s']:.1f} tok/s, transformers "
        f"{row['transformers_tok_s']:.1f} tok/s, ratio {row['ratio']:.2f}, "
        f"greedy agreement {row['agree_first']}")

  breakdown = None
  if args.breakdown:
    breakdown = _breakdown(model, hf, prompt, batches, args)

  res = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command="python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
      model=args.model, dtype="float32", host=platform.node(), cpus=os.cpu_count(),
      torch_threads=torch.get_num_threads(), xla_flags=os.environ.get("XLA_FLAGS", ""),
      loadavg_1m_end=loadavg(), jax=jax.__version__, torch=torch.__version__,
      transformers=transformers.__version__, reps=args.reps, rows=rows, breakdown=breakdown)
  table = ["| batch | new tokens | seekjax tok/s (min-max) | transformers tok/s (min-max) | "
           "seekjax / HF | greedy agreement |",
           "|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    table.append(
        f"| {r['batch']} | {r['new_tokens']} | {r['seekjax_tok_s']:.1f} "
        f"({r['seekjax_tok_s_range'][0]:.1f}-{r['seekjax_tok_s_range'][1]:.1f}) | "
        f"{r['transformers_tok_s']:.1f} ({r['transformers_tok_s_range'][0]:.1f}-"
        f"{r['transformers_tok_s_range'][1]:.1f}) | {r['ratio']:.2f} | "
        f"first {r['agree_first']} identical |")
  res["markdown"] = "\n".join(table)
  print()
  print(res["markdown"])
  if breakdown:
    print()
    for line in breakdown["markdown"]:
      print(line)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  log(f"wrote {args.out}")


def _breakdown(model, hf, prompt, batches, args, reps=5):
  """Prefill time and the cost of one decode step (mid-generation) on each side."""
  import jax
  import jax.numpy as jnp
  import torch
  from seekjax.models import decoder, packing
  from seekjax.models.generate import decode_step, prefill_chunk
  from seekjax.shapes import bucket
  cfg = model.config
  out = {"rows": [], "markdown": [
      "| batch | seekjax prefill ms | HF prefill ms | seekjax decode step ms | "
      "HF decode step ms |", "|---:|---:|---:|---:|---:|"]}
  cache_size = bucket(bucket(len(prompt)) + args.new, 64)
  pf = jax.jit(lambda p, c, x, n, s: prefill_chunk(p, cfg, c, x, n, s))
  ds = jax.jit(lambda p, c, t, pos: decode_step(p, cfg, c, t, pos))

  def best(fn):
    fn()
    ts = []
    for _ in range(reps):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)

  for b in batches:
    x = jnp.asarray([prompt] * b, jnp.int32)
    n = jnp.full((b,), len(prompt), jnp.int32)
    zero = jnp.zeros((b,), jnp.int32)
    cache0 = decoder.init_cache(cfg, b, cache_size)
    params = packing.unstack_layers(model.params)  # as generate_ids decodes
    sj_pf = best(lambda: jax.block_until_ready(pf(params, cache0, x, n, zero)))
    _, cache = pf(params, cache0, x, n, zero)
    pos = jnp.full((b,), len(prompt) + args.new // 2, jnp.int32)
    sj_ds = best(lambda: jax.block_until_ready(ds(params, cache, zero, pos)))

    ids = torch.tensor([prompt] * b)
    with torch.inference_mode():
      hf_pf = best(lambda: hf(input_ids=ids, use_cache=True))
      o = hf(input_ids=ids, use_cache=True)
      # grow the cache to mid-generation length, then time one more step
      past, nxt = o.cache, o.logits[:, -1:].argmax(-1)
      for _ in range(args.new // 2):
        o = hf(input_ids=nxt, cache=past, use_cache=True)
        past, nxt = o.cache, o.logits[:, -1:].argmax(-1)
      seq = past.get_seq_length()

      def hf_step():
        o = hf(input_ids=nxt, cache=past, use_cache=True)
        past.crop(-1)  # undo the append so every timed step sees the same length
        return o
      hf_ds = best(hf_step)
    row = dict(batch=b, seekjax_prefill_ms=sj_pf, transformers_prefill_ms=hf_pf,
               seekjax_decode_step_ms=sj_ds, transformers_decode_step_ms=hf_ds,
               seekjax_cache_slots=cache_size, transformers_cache_len=seq)
    out["rows"].append(row)
    out["markdown"].append(f"| {b} | {sj_pf:.1f} | {hf_pf:.1f} | {sj_ds:.1f} | {hf_ds:.1f} |")
    log(f"breakdown batch {b}: {row}")
  return out


if __name__ == "__main__":
  main()
