"""Device mesh and partition rules for params, KV cache and batches (axes: data, fsdp, tensor)."""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # rows are split over every non-tensor axis

# Leaf path -> one mesh-axis entry per array dim. Stacked layer leaves lead with L (None).
PARAM_RULES = {
    "embed": ("tensor", "fsdp"),
    "lm_head": ("fsdp", "tensor"),
    "final_norm": (None,),
    "layers/q": (None, "fsdp", "tensor"),
    "layers/k": (None, "fsdp", "tensor"),
    "layers/v": (None, "fsdp", "tensor"),
    "layers/o": (None, "tensor", "fsdp"),
    "layers/gate": (None, "fsdp", "tensor"),
    "layers/up": (None, "fsdp", "tensor"),
    "layers/down": (None, "tensor", "fsdp"),
    "layers/q_bias": (None, "tensor"),
    "layers/k_bias": (None, "tensor"),
    "layers/v_bias": (None, "tensor"),
    "layers/attn_norm": (None, None),
    "layers/mlp_norm": (None, None),
    "layers/q_norm": (None, None),
    "layers/k_norm": (None, None),
}
# One layer's KV cache buffer [B, S, K, hd]: rows over the batch axes, kv heads over tensor.
CACHE_RULE = (BATCH_AXES, None, "tensor", None)


class MeshError(ValueError):
  """A mesh shape that does not fit the devices, or a batch that does not fit the mesh."""


def make_mesh(shape=(1, -1, 1), axes=AXES, devices=None) -> Mesh:
  """A mesh over all (or the given) devices. One entry of `shape` may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  shape = list(shape)
  if len(shape) != len(axes):
    raise MeshError(f"mesh_shape {tuple(shape)} must have one entry per axis {axes}")
  if shape.count(-1) > 1:
    raise MeshError(f"mesh_shape {tuple(shape)} may contain at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n % known:
      raise MeshError(f"mesh_shape {tuple(shape)} does not divide the {n} devices")
    shape[shape.index(-1)] = n // known
  if math.prod(shape) != n:
    raise MeshError(f"mesh_shape {tuple(shape)} needs {math.prod(shape)} devices, have {n}")
  return Mesh(np.asarray(devices).reshape(shape), axes)


def _axis_size(mesh: Mesh, entry) -> int:
  if entry is None:
    return 1
  names = entry if isinstance(entry, tuple) else (entry,)
  return math.prod(mesh.shape[a] for a in names)


def fit_spec(mesh: Mesh, shape, rule) -> P:
  """The rule's PartitionSpec, replicating any dim the mesh axes do not divide."""
  entries = []
  for dim, entry in zip(shape, rule):
    entries.append(entry if entry is not None and dim % _axis_size(mesh, entry) == 0 else None)
  return P(*entries)


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def param_specs(mesh: Mesh, params):
  """A PartitionSpec pytree matching `params` (arrays or ShapeDtypeStructs)."""
  def spec(path, leaf):
    rule = PARAM_RULES.get(_path_str(path))
    if rule is None:  # e.g. LoRA adapters or optimizer extras: replicate, stay correct
      return P()
    return fit_spec(mesh, leaf.shape, rule)
  return jax.tree_util.tree_map_with_path(spec, params)


def param_shardings(mesh: Mesh, params):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(mesh, params))


def shard_params(mesh: Mesh, params):
  """Put every (host numpy or device) leaf straight onto its NamedSharding."""
  return jax.tree.map(lambda x, s: jax.device_put(x, s), params, param_shardings(mesh, params))


def cache_sharding(mesh: Mesh, cache_shape) -> NamedSharding:
  return NamedSharding(mesh, fit_spec(mesh, cache_shape, CACHE_RULE))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows over the batch axes, everything else replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def batch_divisor(mesh: Mesh | None) -> int:
  return 1 if mesh is None else _axis_size(mesh, BATCH_AXES)


def check_batch(mesh: Mesh | None, batch: int, what: str = "batch") -> None:
  d = batch_divisor(mesh)
  if batch % d:
    raise MeshError(f"{what} size {batch} does not divide the mesh's data axes "
                    f"(data*fsdp = {d})")
