"""Where the decode step's cached attention goes on CPU, and whether another form of it
reads the cache faster (SmolLM2-135M shapes: 30 layers, 9 query heads over 3 kv heads of
64, float32).

Two parts, each timed side by side in one process (alternating, after a warm-up):

1. The rollout's decode step (`engine.decode_until_blocked`, 16 rows, a 640-slot cache,
   sampling at temperature 0.7, the residual after layer 28 kept) with the rows'
   positions at each --fills value: the step's cost as the attention window grows, with
   both CPU kernels (`packing.decode_params`: packed weights), with the attention kernel
   and XLA's dots, and with XLA alone (SEEKJAX_CPU_KERNELS=0).
2. One decode step's cached attention alone, over the 30 layers' caches (a write of the
   new key and value, then attention over window --window of 640 slots), in the forms:

     seekjax      the cache as [B, S, K, hd], the window sliced, two einsums
                  (`attention.cached_attention`)
     kv_major     the cache as [B, K, S, hd]: the slice keeps each head's slots together
                  and the dots need no transpose
     elementwise  kv_major with multiply-and-sum in place of the dots
     whole        kv_major over all 640 slots, masked (no slice, 2.5x the bytes)
     kernel       `seekjax.models.cpu_attention`: each row's slots 0..pos read in
                  place from the [B, S, K, hd] cache (what the decode step runs on CPU)
     stream       the floor: one jitted sum over the same bytes the window holds

   and the bytes each reads, as GB/s.

  .venv/bin/python benchmarks/attention_forms.py [--fills 100,200,300,450] [--window 256]
      [--reps 15] [--out benchmarks/results/attention_forms.json]
"""
from __future__ import annotations

import argparse
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
from seekjax.models import cpu_attention
from seekjax.models import attention, packing
from seekjax.rollout import engine

ROWS, HEADS, KV, HD, SLOTS, LAYERS = 16, 9, 3, 64, 640, 30
GROUP = HEADS // KV


def _alternate(fns: dict, reps: int) -> dict:
  """{name: [seconds]}: each fn() called once per rep, in turn (after one warm-up call)."""
  for f in fns.values():
    f()
  times = {k: [] for k in fns}
  for _ in range(reps):
    for k, f in fns.items():
      t0 = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t0)
  return times


# Decode-step forms: (params for the loop, SEEKJAX_CPU_KERNELS while tracing, turn window).
# The turn windows are never reached; they only make each form's spec (the jit's static
# key) differ, so each keeps its own compiled loop.
STEP_FORMS = {"both kernels": ("decode_params", "1", 10_000),
              "attention kernel, XLA's dots": ("unstack_layers", "1", 10_001),
              "XLA": ("unstack_layers", "0", 10_002)}


def decode_steps(fills, reps: int) -> dict:
  """ms per decode step of the rollout's loop, rows at each fill (median of reps), in each
  of STEP_FORMS: both CPU kernels (packed weights), the attention kernel with XLA's dots,
  and XLA alone; alternating."""
  model = sj.load_model("smollm2-135m")
  cfg = model.config
  never = jnp.zeros((1, cfg.vocab_size), jnp.int32)
  tables = engine.TagTables(never, never.astype(bool), never, never.astype(bool))
  specs, params = {}, {}
  saved = os.environ.get("SEEKJAX_CPU_KERNELS")
  for form, (fn, env, window) in STEP_FORMS.items():
    os.environ["SEEKJAX_CPU_KERNELS"] = env
    params[form] = getattr(packing, fn)(model.params)
    specs[form] = engine.EngineSpec(model=cfg, max_len=SLOTS, turn_window=window, max_steps=32,
                                    temperature=0.7, top_k=0, top_p=1.0, eos_ids=(),
                                    capture_layer=cfg.num_layers - 2)
  rng = np.random.default_rng(0)

  def step_ms(fill, form):
    prompts = jnp.asarray(rng.integers(100, cfg.vocab_size, (ROWS, fill)), jnp.int32)
    spec = specs[form]
    state = engine.prefill(params[form], prompts, jnp.full((ROWS,), fill, jnp.int32),
                           jax.random.PRNGKey(0), jnp.int32(0), jnp.int32(10_000), spec=spec,
                           group=1)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    out = engine.decode_until_blocked(params[form], tables, state, jnp.int32(-1), spec=spec)
    return (time.perf_counter() - t0) / int(out.steps) * 1e3

  for form, (_, env, _) in STEP_FORMS.items():   # compile each under its setting
    os.environ["SEEKJAX_CPU_KERNELS"] = env
    step_ms(fills[0], form)
  if saved is None:
    os.environ.pop("SEEKJAX_CPU_KERNELS")
  else:
    os.environ["SEEKJAX_CPU_KERNELS"] = saved
  times = {(f, form): [] for f in fills for form in specs}
  for _ in range(reps):
    for f in fills:
      for form in specs:
        times[f, form].append(step_ms(f, form))
  return {f"{form}, fill {f} (windows {_window(f + 1)}-{_window(f + 32)})": statistics.median(x)
          for (f, form), x in times.items()}


def _window(end: int) -> int:
  return next(w for w in attention.attention_windows(SLOTS) if w >= end)


def _attend(q, k, v, pos, kv_major, elementwise=False):
  """One layer's attention of q [B, H, hd] over k, v (already the window)."""
  w = k.shape[2] if kv_major else k.shape[1]
  qq = q.reshape(ROWS, KV, GROUP, HD)
  if not kv_major:
    s = jnp.einsum("bkgd,bskd->bkgs", qq, k)
  elif elementwise:
    s = jnp.sum(qq[:, :, :, None, :] * k[:, :, None, :, :], -1)
  else:
    s = jnp.einsum("bkgd,bksd->bkgs", qq, k)
  s = jnp.where((jnp.arange(w)[None, :] <= pos[:, None])[:, None, None], s / 8.0, -1e30)
  p = jax.nn.softmax(s, -1)
  if not kv_major:
    return jnp.einsum("bkgs,bskd->bkgd", p, v).reshape(ROWS, HEADS, HD)
  if elementwise:
    return jnp.sum(p[..., None] * v[:, :, None, :, :], 3).reshape(ROWS, HEADS, HD)
  return jnp.einsum("bkgs,bksd->bkgd", p, v).reshape(ROWS, HEADS, HD)


def _layers_fn(window, kv_major, elementwise=False, kernel=False):
  """All layers: write each layer's new key/value at `pos`, attend over the window."""
  rows = jnp.arange(ROWS)

  def f(q, ks, vs, new, pos):
    out_k, out_v = [], []
    for k_buf, v_buf in zip(ks, vs):
      if kernel:
        k_buf, v_buf = (b.at[rows, pos].set(new, mode="drop") for b in (k_buf, v_buf))
        out = cpu_attention.cached_attention(q[:, None], k_buf, v_buf, pos[:, None])
        q = q + 1e-3 * out.reshape(q.shape)
        out_k.append(k_buf)
        out_v.append(v_buf)
        continue
      if kv_major:
        k_buf, v_buf = (b.at[rows, :, pos].set(new, mode="drop") for b in (k_buf, v_buf))
        k, v = k_buf[:, :, :window], v_buf[:, :, :window]
      else:
        k_buf, v_buf = (b.at[rows, pos].set(new, mode="drop") for b in (k_buf, v_buf))
        k, v = k_buf[:, :window], v_buf[:, :window]
      q = q + 1e-3 * _attend(q, k, v, pos, kv_major, elementwise)
      out_k.append(k_buf)
      out_v.append(v_buf)
    return q, out_k, out_v
  return jax.jit(f, donate_argnums=(1, 2))


def attention_forms(window: int, reps: int) -> dict:
  """ms per step of each form at `window`, its bytes read and GB/s; max |diff| to seekjax."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((ROWS, HEADS, HD)), jnp.float32)
  new = jnp.asarray(rng.standard_normal((ROWS, KV, HD)), jnp.float32)
  pos = jnp.full((ROWS,), window - 20, jnp.int32)
  base = rng.standard_normal((2, LAYERS, ROWS, SLOTS, KV, HD)).astype(np.float32)
  forms = {"seekjax": (window, False, False), "kv_major": (window, True, False),
           "elementwise": (window, True, True), "whole": (SLOTS, True, False)}
  if cpu_attention.usable(q[:, None], base[0, 0]):
    forms["kernel"] = (window, False, False)
  state, fns, out = {}, {}, {}
  for name, (w, kv_major, ew) in forms.items():
    bufs = base.transpose(0, 1, 2, 4, 3, 5) if kv_major else base
    state[name] = [[jnp.asarray(b) for b in bufs[0]], [jnp.asarray(b) for b in bufs[1]]]
    fns[name] = _layers_fn(w, kv_major, ew, kernel=name == "kernel")

  def call(name):
    def run():
      o, state[name][0], state[name][1] = fns[name](q, *state[name], new, pos)
      out[name] = o.block_until_ready()
    return run

  window_bytes = 2 * LAYERS * ROWS * window * KV * HD * 4
  flat = jnp.asarray(rng.standard_normal(window_bytes // 4).astype(np.float32))
  stream = jax.jit(jnp.sum)
  calls = {k: call(k) for k in forms}
  calls["stream"] = lambda: stream(flat).block_until_ready()
  times = _alternate(calls, reps)
  result = {}
  for name, x in times.items():
    ms = statistics.median(x) * 1e3
    read = window_bytes * (SLOTS / window if name == "whole" else 1)
    result[name] = dict(ms=ms, mb_read=read / 1e6, gb_per_s=read / ms / 1e6,
                        max_abs_diff=(float(jnp.max(jnp.abs(out[name] - out["seekjax"])))
                                      if name in forms else None))
  return result


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--fills", default="100,200,300,450")
  ap.add_argument("--window", type=int, default=256)
  ap.add_argument("--reps", type=int, default=15)
  ap.add_argument("--out", default="benchmarks/results/attention_forms.json")
  args = ap.parse_args(argv)
  load = [os.getloadavg()[0]]
  fills = [int(f) for f in args.fills.split(",") if f]
  steps = decode_steps(fills, max(args.reps // 5, 3)) if fills else {}
  load.append(os.getloadavg()[0])
  forms = attention_forms(args.window, args.reps)
  load.append(os.getloadavg()[0])
  for k, ms in steps.items():
    print(f"decode step, {k}: {ms:.1f} ms")
  print(f"| attention over {LAYERS} layers, window {args.window} of {SLOTS} | ms / step | "
        "MB read | GB/s |\n|---|---:|---:|---:|")
  for k, r in forms.items():
    print(f"| {k} | {r['ms']:.1f} | {r['mb_read']:.0f} | {r['gb_per_s']:.1f} |")
  print(f"load average {min(load):.2f}-{max(load):.2f}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), jax=jax.__version__,
                   args=vars(args), decode_step_ms=steps, attention=forms, loadavg=load), f,
              indent=1)
  print(f"written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
