"""Peer worker: greedy decode with llama.cpp through llama-cpp-python's C API (llama venv).

Drives `llama_decode` directly: one batch holds every row's prompt (row r is sequence id r,
logits only at each row's last prompt token), then one batch per step with one token per
row; the next token is the argmax of that row's logits, so EOS is never special and every
row gets exactly --new tokens. Batch 1 is the same loop with one sequence. The context has
n_seq_max = batch and a per-sequence KV cache of 256 cells (n_ctx = 256 * batch, not unified);
the KV memory is cleared before every run.

  $SEEKJAX_CACHE/bench/venvs/llama/bin/python benchmarks/peers/llama_worker.py \
      --gguf M.gguf --prompt-ids 1,2,3 --batch 16 --new 128 --threads 2
  $SEEKJAX_CACHE/bench/venvs/llama/bin/python benchmarks/peers/llama_worker.py quantize SRC DST [Q8_0]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _worker  # noqa: E402

_STATE = {}


def setup(args):
  import llama_cpp as L
  L.llama_backend_init()
  mp = L.llama_model_default_params()
  mp.n_gpu_layers = 0
  model = L.llama_model_load_from_file(args.gguf.encode(), mp)
  if not model:
    raise SystemExit(f"llama.cpp could not load {args.gguf}")
  vocab = L.llama_model_get_vocab(model)
  desc = __import__("ctypes").create_string_buffer(256)
  L.llama_model_desc(model, desc, 256)
  _STATE.update(L=L, model=model, n_vocab=L.llama_vocab_n_tokens(vocab), ctx={},
                threads=args.threads, n_prompt=len(args.prompt_ids.split(",")))
  return dict(system="llama.cpp", llama_cpp_python=L.__version__, gguf=args.gguf,
              gguf_bytes=os.path.getsize(args.gguf), model_desc=desc.value.decode(),
              threads=args.threads,
              system_info=L.llama_print_system_info().decode(errors="replace").strip())


def _context(batch):
  L = _STATE["L"]
  if batch not in _STATE["ctx"]:
    n_tok = max(batch * _STATE["n_prompt"], batch)
    cp = L.llama_context_default_params()
    cp.n_ctx = 256 * batch
    cp.n_seq_max = batch
    cp.n_batch = max(512, n_tok)
    cp.n_ubatch = max(512, n_tok)
    cp.n_threads = cp.n_threads_batch = _STATE["threads"]
    cp.kv_unified = False
    ctx = L.llama_init_from_model(_STATE["model"], cp)
    if not ctx:
      raise RuntimeError(f"llama_init_from_model failed at batch {batch}")
    _STATE["ctx"][batch] = (ctx, L.llama_batch_init(n_tok, 0, 1))
  return _STATE["ctx"][batch]


def generate(prompt, batch, new):
  import numpy as np
  L = _STATE["L"]
  ctx, b = _context(batch)
  n_vocab = _STATE["n_vocab"]
  L.llama_memory_clear(L.llama_get_memory(ctx), True)

  def put(i, tok, pos, seq, want_logits):
    b.token[i] = int(tok)
    b.pos[i] = pos
    b.n_seq_id[i] = 1
    b.seq_id[i][0] = seq
    b.logits[i] = 1 if want_logits else 0

  def step(n):
    b.n_tokens = n
    rc = L.llama_decode(ctx, b)
    if rc != 0:
      raise RuntimeError(f"llama_decode returned {rc}")
    logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(batch, n_vocab))
    return logits.argmax(axis=-1)

  n = 0
  for s in range(batch):
    for j, t in enumerate(prompt):
      put(n, t, j, s, j == len(prompt) - 1)
      n += 1
  nxt = step(n)
  out = [[int(t)] for t in nxt]
  for k in range(1, new):
    for s in range(batch):
      put(s, nxt[s], len(prompt) + k - 1, s, True)
    nxt = step(batch)
    for s in range(batch):
      out[s].append(int(nxt[s]))
  return out


def quantize(src, dst, kind="Q8_0", threads=None):
  import ctypes
  import llama_cpp as L
  L.llama_backend_init()
  qp = L.llama_model_quantize_default_params()
  qp.ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{kind}")
  qp.nthread = threads or os.cpu_count()
  rc = L.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(qp))
  if rc != 0:
    raise SystemExit(f"llama_model_quantize returned {rc}")
  print(dst)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "quantize":
    quantize(*argv[1:4])
    return
  ap = _worker.base_parser(__doc__)
  ap.add_argument("--gguf", required=True)
  args = ap.parse_args(argv)
  _worker.run(args, setup, generate)


if __name__ == "__main__":
  main()
