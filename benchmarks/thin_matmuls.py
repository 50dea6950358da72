"""The decode step's thin matmuls on CPU: XLA's dots against the CPU matmul kernel.

One decode step of SmolLM2-135M multiplies each row's token by every weight: per layer
q, k, v, o, gate, up and down, then the tied LM head (576 x 49152), 211 matmuls over
538 MB of float32 weights. Timed side by side in one process (alternating, after a
warm-up), at each --rows:

  xla      x @ w per weight, as the decoder runs without the kernels (XLA:CPU's dots)
  kernel   `cpu_matmul.packed_matmul` on the weights packed by `cpu_matmul.pack`
  stream   the floor: one jitted sum over the same 538 MB

Each form chains the layers (the next input depends on the output), with a residual
add and SiLU where the model has them, so no matmul can be skipped or overlapped with
the next; the bytes read per step are the weights', reported as GB/s.

  .venv/bin/python benchmarks/thin_matmuls.py [--rows 1,16] [--reps 15]
      [--out benchmarks/results/thin_matmuls.json]
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

from seekjax.models import cpu_matmul, packing

D, F, KV_DIM, LAYERS, VOCAB = 576, 1536, 192, 30, 49152
SHAPES = {"q": (D, D), "k": (D, KV_DIM), "v": (D, KV_DIM), "o": (D, D), "gate": (D, F),
          "up": (D, F), "down": (F, D)}


def _chain(mm, head):
  """All layers' matmuls, chained, then the head: mm(x, layer, name) -> x @ weight,
  head(x, head_weight) -> logits."""
  def f(x, layers, head_weight):
    for lp in layers:
      qkv = jnp.concatenate([mm(x, lp, "q"), mm(x, lp, "k"), mm(x, lp, "v")], -1)
      x = x + mm(qkv[..., :D], lp, "o") + 1e-3 * qkv[..., D:].sum(-1, keepdims=True)
      x = x + 1e-2 * mm(jax.nn.silu(mm(x, lp, "gate")) * mm(x, lp, "up"), lp, "down")
    return head(x, head_weight).max(-1)
  return jax.jit(f)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rows", default="1,16")
  ap.add_argument("--reps", type=int, default=15)
  ap.add_argument("--out", default="benchmarks/results/thin_matmuls.json")
  args = ap.parse_args(argv)
  if not cpu_matmul.worthwhile():
    raise SystemExit("thin_matmuls: no vector form of the matmul kernel runs here "
                     "(no compiler, SEEKJAX_CPU_KERNELS=0, or neither AVX-512 nor AVX2 + FMA)")
  rng = np.random.default_rng(0)
  layers = [{k: jnp.asarray(rng.standard_normal(s).astype(np.float32) * 0.02)
             for k, s in SHAPES.items()} for _ in range(LAYERS)]
  embed = jnp.asarray(rng.standard_normal((VOCAB, D)).astype(np.float32) * 0.02)
  packed = packing.decode_params({"embed": embed, "final_norm": jnp.ones(D),
                                  "layers": tuple(layers)})
  nbytes = sum(w.size * 4 for lp in layers for w in lp.values()) + embed.size * 4
  xla = _chain(lambda x, lp, k: x @ lp[k], lambda x, e: jnp.einsum("btd,vd->btv", x, e))
  kernel = _chain(lambda x, lp, k: cpu_matmul.packed_matmul(x, lp["packed"][k]),
                  cpu_matmul.packed_matmul)
  stream = jax.jit(lambda ws: sum(jnp.sum(w) for w in ws))
  weights = [w for lp in layers for w in lp.values()] + [embed]
  load = [os.getloadavg()[0]]
  result = {}
  for rows in [int(r) for r in args.rows.split(",") if r]:
    x = jnp.asarray(rng.standard_normal((rows, 1, D)).astype(np.float32))
    out = {}
    calls = {
        "xla": lambda: xla(x, layers, embed),
        "kernel": lambda: kernel(x, packed["layers"], packed["head_packed"]),
        "stream": lambda: stream(weights)}
    for name, f in calls.items():
      out[name] = np.asarray(f())
    times = {k: [] for k in calls}
    for _ in range(args.reps):
      for k, f in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        times[k].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result[rows] = {k: dict(ms=v, gb_per_s=nbytes / v / 1e6) for k, v in ms.items()}
    result[rows]["kernel_vs_xla"] = ms["xla"] / ms["kernel"]
    result[rows]["max_rel_diff"] = float(np.max(np.abs(out["kernel"] - out["xla"]))
                                         / np.max(np.abs(out["xla"])))
    load.append(os.getloadavg()[0])
  print(f"| rows | XLA's dots ms (GB/s) | kernel ms (GB/s) | kernel vs XLA | stream ms (GB/s) |\n"
        "|---:|---|---|---:|---|")
  for rows, r in result.items():
    print(f"| {rows} | {r['xla']['ms']:.1f} ({r['xla']['gb_per_s']:.1f}) | "
          f"{r['kernel']['ms']:.1f} ({r['kernel']['gb_per_s']:.1f}) | "
          f"{r['kernel_vs_xla']:.2f}x | {r['stream']['ms']:.1f} ({r['stream']['gb_per_s']:.1f}) |")
  print(f"weights {nbytes / 1e6:.0f} MB; kernel form {cpu_matmul.isa()}; "
        f"load average {min(load):.2f}-{max(load):.2f}")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), jax=jax.__version__,
                   args=vars(args), weights_mb=nbytes / 1e6, kernel_form=cpu_matmul.isa(),
                   rows=result, loadavg=load), f,
              indent=1)
  print(f"written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
