"""Peer worker: greedy decode with tunix's `Sampler` on its Llama3 model (run in the tunix venv).

Loads HF-named float32 weights (the .npz decode_peers.py exports from seekjax's params,
[out, in] Linear weights, HF's split-half rotary layout) into `tunix.models.llama3.model.Llama3`
and decodes with `tunix.generate.sampler.Sampler` (temperature 0 = its "greedy" mode), with an
EOS id that never occurs so every row gets exactly --new tokens.

tunix 0.1.7's Llama3 attention calls `apply_rope` without the config's `rope_theta` (it falls
back to 1e6); SmolLM2 needs 1e5, so this worker binds the config's theta into that module
function before building the model (reported as `patches` in the JSON).

  $SEEKJAX_CACHE/bench/venvs/tunix/bin/python benchmarks/peers/tunix_worker.py \
      --weights W.npz --config C.json --prompt-ids 1,2,3 --batch 1 --new 128 --threads 2
"""
from __future__ import annotations

import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _worker  # noqa: E402

_STATE = {}


class _IdTokenizer:
  """Prompts travel as comma-separated ids, so tunix sees exactly seekjax's prompt ids."""

  def __init__(self, pad_id):
    self._pad = pad_id

  def encode(self, text, **_):
    return [int(t) for t in text.split(",")]

  def decode(self, ids, **_):
    return ",".join(str(int(t)) for t in ids)

  def bos_id(self):
    return None

  def eos_id(self):
    return -1

  def pad_id(self):
    return self._pad


def setup(args):
  if args.threads < (os.cpu_count() or 1):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false"
                               f" intra_op_parallelism_threads={args.threads}").strip()
  import jax
  import numpy as np
  from flax import nnx
  from importlib.metadata import version
  from tunix.generate import sampler as sampler_lib
  from tunix.models.llama3 import model as llama

  with open(args.config) as f:
    c = json.load(f)
  cfg = llama.ModelConfig(
      num_layers=c["num_layers"], vocab_size=c["vocab_size"], embed_dim=c["hidden_size"],
      hidden_dim=c["intermediate_size"], num_heads=c["num_heads"], head_dim=c["head_dim"],
      num_kv_heads=c["num_kv_heads"], rope_theta=c["rope_theta"], norm_eps=c["rms_norm_eps"],
      weight_tying=c["tie_embeddings"])
  # Harmless if a later tunix passes rope_theta itself: call keywords override partial's.
  llama.apply_rope = functools.partial(llama.apply_rope, rope_theta=c["rope_theta"])
  patches = [f"llama3.model.apply_rope bound to rope_theta={c['rope_theta']}"]

  w = np.load(args.weights)
  d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  model = nnx.eval_shape(lambda: llama.Llama3(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  flat = dict(nnx.to_flat_state(state))
  new = {}

  def put(path, arr):
    key = tuple(path)
    if key not in flat:
      raise KeyError(f"tunix Llama3 has no param {key}")
    want = flat[key].get_value().shape
    if tuple(arr.shape) != tuple(want):
      raise ValueError(f"{key}: shape {arr.shape} != tunix's {want}")
    new[key] = np.ascontiguousarray(arr, dtype=np.float32)

  put(("embedder", "input_embedding"), w["model.embed_tokens.weight"])
  put(("final_norm", "w"), w["model.norm.weight"])
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    L = ("layers", i)
    put(L + ("input_layernorm", "w"), w[p + "input_layernorm.weight"])
    put(L + ("post_attention_layernorm", "w"), w[p + "post_attention_layernorm.weight"])
    put(L + ("attn", "q_proj", "w"), w[p + "self_attn.q_proj.weight"].T.reshape(d, n, h))
    put(L + ("attn", "k_proj", "w"), w[p + "self_attn.k_proj.weight"].T.reshape(d, k, h))
    put(L + ("attn", "v_proj", "w"), w[p + "self_attn.v_proj.weight"].T.reshape(d, k, h))
    put(L + ("attn", "o_proj", "w"), w[p + "self_attn.o_proj.weight"].T.reshape(n, h, d))
    for m in ("gate_proj", "up_proj", "down_proj"):
      put(L + ("mlp", m, "kernel"), w[p + f"mlp.{m}.weight"].T)
  missing = set(flat) - set(new)
  if missing:
    raise KeyError(f"no weights for tunix params {sorted(missing)[:5]}")
  for key, var in flat.items():
    var.set_value(jax.numpy.asarray(new[key]))
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))

  cache = sampler_lib.CacheConfig(cache_size=len(args.prompt_ids.split(",")) + args.max_new,
                                  num_layers=cfg.num_layers, num_kv_heads=k, head_dim=h)
  _STATE["sampler"] = sampler_lib.Sampler(model, _IdTokenizer(args.pad_id), cache)
  _STATE["prompt_len"] = len(args.prompt_ids.split(","))
  return dict(system="tunix", tunix=version("google-tunix"), jax=jax.__version__,
              flax=version("flax"), xla_flags=os.environ.get("XLA_FLAGS", ""),
              cache_size=cache.cache_size, pad_id=args.pad_id, patches=patches)


def generate(prompt, batch, new):
  s = _STATE["sampler"]
  text = ",".join(str(t) for t in prompt)
  out = s([text] * batch, max_generation_steps=new, max_prompt_length=_STATE["prompt_len"],
          temperature=0.0, eos_tokens=[-1], echo=False)
  return [[int(t) for t in row] for row in out.tokens]


def main(argv=None):
  ap = _worker.base_parser(__doc__)
  ap.add_argument("--weights", required=True, help="HF-named float32 .npz")
  ap.add_argument("--config", required=True, help="seekjax config.json of the model")
  ap.add_argument("--pad-id", type=int, default=0,
                  help="tunix masks this id out of attention: pick one absent from the prompt")
  ap.add_argument("--max-new", type=int, default=128, help="KV cache = prompt + this")
  args = ap.parse_args(argv)
  args.max_new = max(args.max_new, args.new)
  _worker.run(args, setup, generate)


if __name__ == "__main__":
  main()
