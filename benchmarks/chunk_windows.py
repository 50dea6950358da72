"""Multi-token cached calls on CPU: the attention kernel, attention windows and the whole
cache, side by side.

A prompt's prefill and a feedback append run T > 1 tokens a row through the model with a
KV cache. On a CPU with the kernels, `attention.cached_attention` calls
`cpu_attention.cached_attention` in every layer (queries in blocks, each row's live slots
read in place). Without them it switches, in every layer, between the windows of
`attention.attention_windows` (reading only the slots the batch's furthest position
needs); the third form attends over the whole buffer, masked (one branch a layer). This
times the three forms of the rollout's own programs on SmolLM2-135M (float32, a 640-slot
cache as on the default):

  prefill   `engine.prefill`: 4 prompts of 150 tokens in a 192-wide batch, each repeated
            for a group of 4 rows
  append N  `engine.append_chunk` on N rows at position 150: a 64-wide chunk of 50 tokens

For each: the seconds to trace and lower, to compile (no persistent cache), the compiled
program's size (its HLO text, characters), and the median run over --reps alternating
repetitions (min-max), and the largest difference of the logits from the windows form.

  .venv/bin/python benchmarks/chunk_windows.py [--reps 5] [--forms kernel,windows,whole] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax.models import attention, packing  # noqa: E402
from seekjax.models.api import load_model  # noqa: E402
from seekjax.rollout import engine  # noqa: E402

# form -> (the windows it traces with, whether the CPU kernels are on while tracing)
FORMS = {"kernel": (attention.attention_windows, True),
         "windows": (attention.attention_windows, False),
         "whole": (lambda size: (size,), False)}


def build(form, fn, *args):
  """`fn` jitted afresh and compiled in `form`; (compiled, trace s, compile s)."""
  windows, kernels = FORMS[form]
  saved, saved_env = attention.attention_windows, os.environ.get("SEEKJAX_CPU_KERNELS")
  attention.attention_windows = lambda size, smallest=64: windows(size)
  os.environ["SEEKJAX_CPU_KERNELS"] = "1" if kernels else "0"   # read while tracing
  try:
    t0 = time.perf_counter()
    lowered = jax.jit(lambda *a: fn(*a)).lower(*args)   # a new function: traced afresh
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1
  finally:
    attention.attention_windows = saved
    if saved_env is None:
      os.environ.pop("SEEKJAX_CPU_KERNELS", None)
    else:
      os.environ["SEEKJAX_CPU_KERNELS"] = saved_env


def prefilled(model, rs):
  """SmolLM2-135M's decode params, an engine spec (a 640-slot cache) and a batch of 16 rows
  prefilled to position 150 (4 prompts drawn from `rs`, a numpy RandomState, x group 4):
  (params, spec, prefill args, state). Shared with `append_pieces.py`."""
  tok = model.tokenizer
  params = packing.decode_params(model.params)
  spec = engine.EngineSpec(model=model.config, max_len=640, turn_window=64, max_steps=8,
                           temperature=1.0, top_k=0, top_p=1.0, eos_ids=tuple(tok.eos_ids),
                           mesh=None, rows_mesh=None, capture_layer=None)
  prompts = np.full((4, 192), tok.pad_id, np.int32)
  prompts[:, :150] = rs.randint(100, 40000, (4, 150))
  prompt_len = np.full((4,), 150, np.int32)
  pre_args = (params, jnp.asarray(prompts), jnp.asarray(prompt_len), jax.random.PRNGKey(0),
              jnp.int32(0), jnp.int32(256))
  return params, spec, pre_args, jax.block_until_ready(
      engine.prefill(*pre_args, spec=spec, group=4))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--forms", default="kernel,windows,whole",
                  help="comma-separated, of: " + ", ".join(FORMS))
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  forms = [f for f in args.forms.split(",") if f]
  unknown = sorted(set(forms) - set(FORMS))
  if unknown or "windows" not in forms or len(forms) < 2:
    ap.error(f"--forms: at least two of {', '.join(FORMS)}, windows among them "
             f"(unknown: {', '.join(unknown) or 'none'})")
  jax.config.update("jax_compilation_cache_dir", None)
  model = load_model("smollm2-135m")
  rs = np.random.RandomState(0)
  params, spec, pre_args, state = prefilled(model, rs)
  cases = {"prefill": (lambda *a: engine.prefill.__wrapped__(*a, spec=spec, group=4),
                       pre_args, None)}
  for n in (16, 4, 1):
    rows = engine.take_rows(state, jnp.arange(n, dtype=jnp.int32), spec=spec)
    chunk = jnp.asarray(rs.randint(100, 40000, (n, 64)), jnp.int32)
    cases[f"append {n}"] = (lambda p, s, c, cl: engine._append(p, s, c, cl, spec),  # pylint: disable=protected-access
                            (params, rows, chunk, jnp.full((n,), 50, jnp.int32)), 1)
  results = {}
  for name, (fn, call_args, donated) in cases.items():
    built = {form: build(form, fn, *call_args) for form in forms}
    times = {form: [] for form in forms}
    logits = {}
    for _ in range(args.reps + 1):   # the first round warms up
      for form, (compiled, _, _) in built.items():
        a = list(call_args)
        if donated is not None:   # a fresh copy: the append writes its state's buffers
          a[donated] = jax.tree.map(jnp.copy, a[donated])
        jax.block_until_ready(a)
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(*a))
        times[form].append(time.perf_counter() - t)
        logits[form] = np.asarray(out.logits)
    results[name] = {form: {"trace_lower_s": built[form][1], "compile_s": built[form][2],
                            "hlo_chars": len(built[form][0].as_text()),
                            "run_s": statistics.median(times[form][1:]),
                            "run_min_s": min(times[form][1:]), "run_max_s": max(times[form][1:]),
                            "logits_max_abs_diff_from_windows": float(
                                np.abs(logits[form] - logits["windows"]).max())}
                     for form in forms}
    r = results[name]
    print(f"{name:10s} " + "  ".join(
        f"{form}: trace {v['trace_lower_s']:.2f} s, compile {v['compile_s']:.2f} s, "
        f"{v['hlo_chars'] / 1e6:.2f} M chars, run {v['run_s'] * 1e3:.0f} ms "
        f"[{v['run_min_s'] * 1e3:.0f}-{v['run_max_s'] * 1e3:.0f}], "
        f"logits {v['logits_max_abs_diff_from_windows']:.1e} from windows"
        for form, v in r.items()) + "  run / windows: " + ", ".join(
            f"{form} {r[form]['run_s'] / r['windows']['run_s']:.2f}" for form in forms),
        flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"date": datetime.date.today().isoformat(), "reps": args.reps,
                 "load_average": os.getloadavg(), "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
