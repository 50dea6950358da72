"""Decode-time layouts of a params pytree: layers unstacked, dense weights packed.

The decoder's cached loop (prefill and decode, `decoder.forward` with a cache) is unrolled
over layers, and reads each layer's weights best from a tuple of per-layer dicts
(`unstack_layers`): slicing a layer out of the stacked [L, ...] layout copies it at every
decode step, which on CPU cost a third of the step (BENCHMARKS.md, "Decode step").
`decode_params` does that and, on a CPU where the matmul kernel pays, adds each dense
weight packed for `cpu_matmul` ("packed" in each layer, "head_packed"), so that a
single-token step runs its matmuls there. Training and teacher forcing use the stacked
layout as it is.
"""
from __future__ import annotations

import jax

from seekjax.models import cpu_matmul


def unstack_layers(params):
  """The params with `layers` as a tuple of per-layer dicts (for the cached, unrolled loop).

  Decode reads each layer's weights in place from these; from the stacked layout it
  would copy them out at every step. Cheap to build once per rollout or generate call.
  """
  if isinstance(params["layers"], (list, tuple)):
    return params
  return _unstack(params)


@jax.jit
def _unstack(params):
  return dict(params, layers=tuple(layer_list(params)))


DENSE = ("q", "k", "v", "o", "gate", "up", "down")


def decode_params(params):
  """`unstack_layers`, plus each dense weight packed for `cpu_matmul` where that pays.

  Packing happens on the CPU backend, for float32 weights on one device, where the
  matmul runs a vector form (AVX-512 or AVX2 + FMA, `cpu_matmul.worthwhile`); elsewhere
  this is `unstack_layers`. Cheap next to a rollout (one pass over the weights), and the
  packed copies live only as long as the returned pytree.
  """
  params = unstack_layers(params)
  if not pack_pays(params):
    return params
  return _pack(params)


def pack_pays(params) -> bool:
  """Whether `decode_params` packs these params' dense weights (module docstring)."""
  if jax.default_backend() != "cpu" or "head_packed" in params or not cpu_matmul.worthwhile():
    return False
  embed = params["embed"]
  head = params.get("lm_head", jax.ShapeDtypeStruct(embed.shape[::-1], embed.dtype))
  layers = params["layers"]
  if isinstance(layers, (list, tuple)):
    weights = [lp[k] for lp in layers for k in DENSE] + [head]
  else:   # stacked [L, ...]: one layer's shape stands for all
    weights = [jax.ShapeDtypeStruct(layers[k].shape[1:], layers[k].dtype) for k in DENSE] + [head]
  one_device = all(len(w.sharding.device_set) == 1 for w in jax.tree_util.tree_leaves(params)
                   if isinstance(w, jax.Array))
  return one_device and all(cpu_matmul.packable(w) for w in weights)


@jax.jit
def _pack(params):
  head = params["lm_head"] if "lm_head" in params else params["embed"].T
  return dict(params, layers=_pack_layers(params["layers"]), head_packed=cpu_matmul.pack(head))


@jax.jit
def _pack_layers(layers):
  return tuple(dict(lp, packed={k: cpu_matmul.pack(lp[k]) for k in DENSE}) for lp in layers)


def extend_decode_params(decoded, layers, **replace):
  """`decode_params` of a model whose bottom layers are those of `decoded` (a
  `decode_params` result) and whose top layers are `layers` (stacked or a tuple), with
  other entries replaced by `replace` (for example the final norm). Only the new layers
  are unstacked, and packed when `decoded` is, so an RL rollout whose frozen bottom
  layers do not change reuses their packed copies instead of repacking the whole model.
  """
  top = unstack_layers({"layers": layers})["layers"]
  if "head_packed" in decoded and all(cpu_matmul.packable(lp[k]) for lp in top for k in DENSE):
    top = _pack_layers(top)
  return dict(decoded, layers=tuple(decoded["layers"]) + tuple(top), **replace)


def layer_list(params):
  """Per-layer param dicts (static slices of the stacked layout, or the unstacked tuple)."""
  layers = params["layers"]
  if isinstance(layers, (list, tuple)):
    return list(layers)
  n = next(iter(layers.values())).shape[0]
  return [{k: v[i] for k, v in layers.items()} for i in range(n)]
