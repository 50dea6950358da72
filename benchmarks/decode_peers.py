"""Greedy decode throughput of seekjax next to its peers, on the same SmolLM2-135M weights.

Run from the project venv. Every system decodes the same 32-token prompt (decode_vs_hf's),
repeated in every row, to exactly --new tokens per row with EOS ignored, on CPU:

  seekjax       sj.generate_ids, float32 (this venv)
  transformers  HF `generate` on a model built from our params by seekjax.models.export
  tunix         google-tunix 0.1.7: `Sampler` (greedy) on its Llama3 model, loaded with our
                params (exported to an .npz); own venv, benchmarks/peers/tunix_worker.py
  llama-f32     llama.cpp via llama-cpp-python, on an F32 GGUF: the embedded Q4_1 GGUF
                dequantized (the numbers seekjax loads); own venv, peers/llama_worker.py
  llama-q8_0    llama.cpp on that F32 GGUF quantized to Q8_0 by llama.cpp itself (other
                numbers than seekjax's, so greedy text may drift)

Each configuration is warmed up once per system (compiles, first-call costs), then the
systems alternate --reps times in that order (peers are long-lived worker processes that
answer one JSON request per run, so alternation costs no reload) and medians are reported.
tok/s = batch * new / median wall seconds; `speed_vs_seekjax` = system tok/s / seekjax tok/s
(above 1: faster than seekjax); `agree_first` = how many of the first --agree greedy tokens
of row 0 equal seekjax's before the first difference.

On a loaded machine the numbers say more about scheduling than about decoders: llama.cpp
(and torch) synchronise their --threads with spinning barriers at every op, so when another
process holds the cores a 2-thread run can be 10-100x slower from one rep to the next (see
the per-rep `seconds` and `loadavg_1m` in the JSON before trusting a median).

Build the peer venvs once (outside the repo; they are not project dependencies):

  python3 -m venv $SEEKJAX_CACHE/bench/venvs/tunix && $SEEKJAX_CACHE/bench/venvs/tunix/bin/pip install -U pip
  nice -n 19 $SEEKJAX_CACHE/bench/venvs/tunix/bin/pip install google-tunix==0.1.7 \\
      jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 numpy==2.4.6
  python3 -m venv $SEEKJAX_CACHE/bench/venvs/llama && $SEEKJAX_CACHE/bench/venvs/llama/bin/pip install -U pip
  CMAKE_ARGS="-DGGML_NATIVE=ON" nice -n 19 $SEEKJAX_CACHE/bench/venvs/llama/bin/pip install \\
      --no-binary llama-cpp-python "llama-cpp-python>=0.3,<0.4" numpy   # compiles: ~20 min on 2 cores

Then:

  nice -n 10 .venv/bin/python benchmarks/decode_peers.py --batches 1,16 --threads 2 --reps 3

Derived inputs are made on first use in --cache (default $SEEKJAX_CACHE/bench/cache, never the repo):
<model>-hf-f32.npz + <model>-config.json (tunix), <model>-f32.gguf (peers/gguf_f32.py) and
<model>-q8_0.gguf (llama_worker.py quantize). Worker logs go to --cache/decode_peers_*.log.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# peer venvs and derived weights live beside the model cache, outside the repo
BENCH_DIR = os.path.join(os.environ.get("SEEKJAX_CACHE")
                         or os.path.join(os.path.expanduser("~"), ".cache", "seekjax"), "bench")
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "peers"))

from benchmarks.decode_vs_hf import PROMPT, loadavg, log  # noqa: E402  (same prompt)

ALL = ("seekjax", "transformers", "tunix", "llama-f32", "llama-q8_0")
BUILD = {
    "tunix": ("python3 -m venv {v} && {v}/bin/pip install -U pip && nice -n 19 {v}/bin/pip "
              "install google-tunix==0.1.7 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 numpy==2.4.6"),
    "llama": ("python3 -m venv {v} && {v}/bin/pip install -U pip && CMAKE_ARGS=\"-DGGML_NATIVE=ON\" "
              "nice -n 19 {v}/bin/pip install --no-binary llama-cpp-python "
              "\"llama-cpp-python>=0.3,<0.4\" numpy"),
}


def _cpu_model():
  """The CPU's model name (Linux), else the architecture."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.machine()


def _matmul_form():
  """Which form of seekjax's CPU matmul kernel the decoder uses here (None: XLA's dots)."""
  from seekjax.models import cpu_matmul  # pylint: disable=import-outside-toplevel
  return cpu_matmul.isa() if cpu_matmul.worthwhile() else None


def _check_venv(kind, venv, module):
  py = os.path.join(venv, "bin", "python")
  hint = BUILD[kind].format(v=venv)
  if not os.path.exists(py):
    raise SystemExit(f"decode_peers: the {kind} peer venv is missing ({py} does not exist).\n"
                     f"Build it with:\n  {hint}\nor leave it out with --systems.")
  r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True, check=False)
  if r.returncode:
    raise SystemExit(f"decode_peers: {py} cannot import {module}: "
                     f"{r.stderr.strip().splitlines()[-1:]}\nRebuild it with:\n  {hint}")
  return py


class Worker:
  """A peer worker process in --serve mode: one JSON request line in, one JSON line out."""

  def __init__(self, name, cmd, logpath):
    self.name, self.cmd, self.logpath = name, cmd, logpath
    self.logf = open(logpath, "w")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                 stderr=self.logf, text=True, bufsize=1)
    self.info = self._read()
    if not self.info.get("ready"):
      raise RuntimeError(f"{name}: unexpected first line {self.info}")

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      self.logf.flush()
      with open(self.logpath) as f:
        tail = f.read()[-3000:]
      raise SystemExit(f"decode_peers: worker {self.name} exited (rc={self.proc.poll()}); "
                       f"log {self.logpath}:\n{tail}")
    return json.loads(line)

  def run(self, batch, new):
    self.proc.stdin.write(json.dumps(dict(batch=batch, new=new)) + "\n")
    self.proc.stdin.flush()
    res = self._read()
    if "error" in res:
      raise SystemExit(f"decode_peers: {self.name} failed at batch {batch}: {res['error']} "
                       f"(log {self.logpath})")
    return res

  def close(self):
    try:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired):
      self.proc.kill()
    self.logf.close()


def _derived_inputs(args, model, systems):
  """Export what the peers load (once, into --cache)."""
  from seekjax.models import embedded, export
  os.makedirs(args.cache, exist_ok=True)
  paths = {}
  if "tunix" in systems:
    npz = os.path.join(args.cache, f"{args.model}-hf-f32.npz")
    cfg = os.path.join(args.cache, f"{args.model}-config.json")
    if not os.path.exists(npz):
      log(f"exporting HF-named float32 params to {npz}")
      np.savez(npz + ".part.npz", **export.to_hf_state_dict(model))
      os.replace(npz + ".part.npz", npz)
    with open(cfg, "w") as f:
      json.dump(model.config.__dict__, f)
    paths.update(npz=npz, config=cfg)
  if any(s.startswith("llama") for s in systems):
    if args.model not in embedded.EMBEDDED:
      raise SystemExit(f"decode_peers: llama.cpp peers need the model's GGUF; {args.model} "
                       "is not an embedded GGUF model")
    import gguf_f32  # benchmarks/peers
    f32 = os.path.join(args.cache, f"{args.model}-f32.gguf")
    if not os.path.exists(f32):
      src = embedded.embedded_gguf(args.model)
      log(f"writing {f32} (dequantized {os.path.basename(src)})")
      log(f"  {gguf_f32.convert(src, f32 + '.part')}")
      os.replace(f32 + ".part", f32)
    paths["f32"] = f32
    q8 = os.path.join(args.cache, f"{args.model}-q8_0.gguf")
    if "llama-q8_0" in systems and not os.path.exists(q8):
      log(f"writing {q8} (llama_model_quantize, Q8_0)")
      cmd = [args.llama_py, os.path.join(HERE, "peers", "llama_worker.py"), "quantize", f32,
             q8 + ".part", "Q8_0"]
      r = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if r.returncode:
        raise SystemExit(f"decode_peers: quantize failed: {r.stderr[-2000:]}")
      os.replace(q8 + ".part", q8)
    paths["q8_0"] = q8
  return paths


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split(
      "\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="smollm2-135m")
  ap.add_argument("--systems", default=",".join(ALL), help=f"any of {','.join(ALL)}")
  ap.add_argument("--batches", default="1,16")
  ap.add_argument("--new", type=int, default=128, help="new tokens per row")
  ap.add_argument("--prompt-len", type=int, default=32)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--agree", type=int, default=16, help="compare the first N greedy tokens")
  ap.add_argument("--threads", type=int, default=os.cpu_count(),
                  help="threads for every system (torch, llama.cpp; XLA below the core count)")
  ap.add_argument("--tunix-venv", default=os.path.join(BENCH_DIR, "venvs", "tunix"))
  ap.add_argument("--llama-venv", default=os.path.join(BENCH_DIR, "venvs", "llama"))
  ap.add_argument("--cache", default=os.path.join(BENCH_DIR, "cache"),
                  help="derived weights, worker logs")
  ap.add_argument("--out", default=os.path.join(HERE, "results", "decode_peers.json"))
  args = ap.parse_args(argv)
  batches = [int(b) for b in args.batches.split(",")]
  systems = [s for s in args.systems.split(",") if s]
  bad = [s for s in systems if s not in ALL]
  if bad or "seekjax" not in systems:
    raise SystemExit(f"decode_peers: --systems must include seekjax and be among {ALL}")
  # Fail on a missing venv before spending minutes loading anything.
  if "tunix" in systems:
    args.tunix_py = _check_venv("tunix", args.tunix_venv, "tunix.generate.sampler")
  if any(s.startswith("llama") for s in systems):
    args.llama_py = _check_venv("llama", args.llama_venv, "llama_cpp")
  if args.threads < (os.cpu_count() or 1):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false"
                               f" intra_op_parallelism_threads={args.threads}").strip()

  import jax
  import seekjax as sj
  log(f"cpus={os.cpu_count()} threads={args.threads} jax={jax.__version__} "
      f"loadavg(1m)={loadavg():.2f}")
  log(f"loading {args.model} (seekjax, float32)")
  model = sj.load_model(args.model, dtype="float32")
  tok = model.tokenizer
  prompt = tok.encode(PROMPT)[:args.prompt_len]
  if len(prompt) < args.prompt_len:
    raise SystemExit(f"prompt has only {len(prompt)} tokens")
  paths = _derived_inputs(args, model, systems)

  runners, versions, commands = {}, dict(jax=jax.__version__), {}

  def run_sj(b, new):
    t0 = time.perf_counter()
    out = sj.generate_ids(model, [prompt] * b, max_new_tokens=new, temperature=0.0, stop_ids=())
    dt = time.perf_counter() - t0
    assert all(len(o) == new for o in out), [len(o) for o in out]
    return dict(seconds=dt, first_ids=[int(t) for t in out[0][:args.agree]],
                rows_identical=all(list(o) == list(out[0]) for o in out))
  runners["seekjax"] = run_sj

  if "transformers" in systems:
    import torch
    import transformers
    from seekjax.models import export
    torch.set_num_threads(args.threads)
    versions.update(torch=torch.__version__, transformers=transformers.__version__)
    hf = export.to_hf_model(model, bos_token_id=None, eos_token_id=None, pad_token_id=tok.pad_id)
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = tok.pad_id if tok.pad_id is not None else 0

    def run_hf(b, new):
      ids = torch.tensor([prompt] * b)
      t0 = time.perf_counter()
      with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                          min_new_tokens=new, do_sample=False, use_cache=True, eos_token_id=None,
                          pad_token_id=hf.generation_config.pad_token_id)
      dt = time.perf_counter() - t0
      out = out[:, ids.shape[1]:].numpy()
      assert out.shape == (b, new), out.shape
      return dict(seconds=dt, first_ids=out[0, :args.agree].tolist(),
                  rows_identical=bool((out == out[0]).all()))
    runners["transformers"] = run_hf

  ids_arg = ",".join(str(t) for t in prompt)
  common = ["--prompt-ids", ids_arg, "--threads", str(args.threads), "--new", str(args.new),
            "--first", str(args.agree), "--serve"]
  specs = {}
  if "tunix" in systems:
    pad = next(t for t in range(model.config.vocab_size) if t not in prompt)
    specs["tunix"] = [args.tunix_py, os.path.join(HERE, "peers", "tunix_worker.py"),
                      "--weights", paths["npz"], "--config", paths["config"],
                      "--pad-id", str(pad), "--max-new", str(args.new)] + common
  for s, key in (("llama-f32", "f32"), ("llama-q8_0", "q8_0")):
    if s in systems:
      specs[s] = [args.llama_py, os.path.join(HERE, "peers", "llama_worker.py"),
                  "--gguf", paths[key]] + common
  workers = {}
  try:
    for name, cmd in specs.items():
      log(f"starting {name} worker")
      w = Worker(name, cmd, os.path.join(args.cache, f"decode_peers_{name}.log"))
      workers[name] = w
      info = dict(w.info)
      info.pop("ready", None)
      versions[name] = info
      commands[name] = " ".join(shlex.quote(c) for c in cmd)
      runners[name] = lambda b, new, w=w: w.run(b, new)
      log(f"  {name}: {info}")

    order = [s for s in ALL if s in runners]
    rows = []
    for b in batches:
      ref, res = None, {}
      for s in order:
        log(f"batch {b}: warm-up {s}")
        warm = runners[s](b, args.new)
        res[s] = dict(warmup_s=warm["seconds"], first_ids=warm["first_ids"],
                      rows_identical=warm["rows_identical"], seconds=[])
        ref = ref or warm["first_ids"]
        log(f"  {s} warm-up {warm['seconds']:.2f}s")
      loads = []
      for r in range(args.reps):
        loads.append(loadavg())
        msg = []
        for s in order:
          out = runners[s](b, args.new)
          res[s]["seconds"].append(out["seconds"])
          msg.append(f"{s} {b * args.new / out['seconds']:.1f}")
        log(f"batch {b} rep {r + 1}/{args.reps} tok/s: {', '.join(msg)}  loadavg {loads[-1]:.2f}")
      sj_tps = b * args.new / statistics.median(res["seekjax"]["seconds"])
      for s in order:
        ts = res[s]["seconds"]
        ids = res[s]["first_ids"]
        same = np.cumprod(np.asarray(ids[:args.agree]) == np.asarray(ref[:args.agree]))
        tps = b * args.new / statistics.median(ts)
        res[s].update(tok_s=tps, tok_s_range=[b * args.new / max(ts), b * args.new / min(ts)],
                      speed_vs_seekjax=tps / sj_tps,
                      agree_first=f"{int(same.sum())}/{min(args.agree, len(ref))}",
                      text=tok.decode(ids))
      rows.append(dict(batch=b, prompt_tokens=len(prompt), new_tokens=args.new,
                       loadavg_1m=loads, systems=res))
      log(f"batch {b}: " + ", ".join(
          f"{s} {res[s]['tok_s']:.1f} tok/s (x{res[s]['speed_vs_seekjax']:.2f}, "
          f"agree {res[s]['agree_first']})" for s in order))
  finally:
    for w in workers.values():
      w.close()

  me = "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))
  res = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      command=me, worker_commands=commands, model=args.model, host=platform.node(),
      cpus=os.cpu_count(), cpu=_cpu_model(),
      matmul_form=_matmul_form(), threads=args.threads, xla_flags=os.environ.get("XLA_FLAGS", ""),
      nice=os.nice(0), loadavg_1m_end=loadavg(), versions=versions, reps=args.reps,
      inputs=paths, rows=rows)
  table = ["| batch | system | tok/s (min-max) | vs seekjax | greedy agreement |",
           "|---:|---|---:|---:|---|"]
  for r in rows:
    for s, v in r["systems"].items():
      table.append(f"| {r['batch']} | {s} | {v['tok_s']:.1f} ({v['tok_s_range'][0]:.1f}-"
                   f"{v['tok_s_range'][1]:.1f}) | {v['speed_vs_seekjax']:.2f} | "
                   f"first {v['agree_first']} identical |")
  res["markdown"] = "\n".join(table)
  print()
  print(res["markdown"])
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
