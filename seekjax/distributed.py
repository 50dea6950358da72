"""Multi-host helpers: host-local rollouts, globally sharded updates.

Design: each process generates its own episodes (its share of the questions) with a
copy of the policy on its own devices (`local_mesh`, `rollout_params`), rows split over
them, with no collective across hosts inside the decode loop; the reference pass and the
update are SPMD steps over the global mesh, whose batch is assembled from every
process's local episodes. On one process the local mesh is the global mesh, and every
function here is the identity (or a plain device_put), so single-host runs pay nothing.
"""
from __future__ import annotations

import json

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from seekjax.models import sharding


def multiprocess() -> bool:
  return jax.process_count() > 1


def local_copy(tree):
  """Host-local, single-device copies of (possibly globally sharded) arrays."""
  if not multiprocess():
    return tree
  host = multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x), jax.local_devices()[0]), host)


def local_mesh(mesh):
  """The mesh this process rolls out on: its own devices, with the global mesh's tensor
  axis (when it divides them) and rows over the rest. The global mesh itself on one
  process; None without a mesh."""
  if mesh is None or not multiprocess():
    return mesh
  local = jax.local_devices()
  tensor = mesh.shape["tensor"] if len(local) % mesh.shape["tensor"] == 0 else 1
  return sharding.make_mesh((1, -1, tensor), devices=local)


def rollout_params(tree, mesh, replicate: bool):
  """`tree` (possibly globally sharded params) placed for the decode on `mesh` (a local
  mesh, or None: this process's first device): whole on every device when `replicate`
  (per-shard decode gathers them once, not once per decode call), else split by
  `sharding.PARAM_RULES`."""
  if multiprocess():
    tree = multihost_utils.process_allgather(tree, tiled=True)
  if mesh is None:
    return jax.device_put(tree, jax.local_devices()[0])
  if replicate:
    return jax.device_put(tree, NamedSharding(mesh, P()))
  return sharding.shard_params(mesh, tree)


def local_rows(mesh, x) -> np.ndarray:
  """This process's rows of a global array sharded over the batch axes (`global_batch`'s
  inverse), as numpy; np.asarray on one process or without a mesh."""
  if mesh is None or not multiprocess():
    return np.asarray(x)
  spec = P(sharding.BATCH_AXES, *([None] * (x.ndim - 1)))
  return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec))


def global_batch(mesh, tree):
  """Assemble per-process row blocks into global arrays sharded over the batch axes."""
  if mesh is None:
    return tree

  def one(x):
    x = np.asarray(x)
    spec = NamedSharding(mesh, P(sharding.BATCH_AXES, *([None] * (x.ndim - 1))))
    if multiprocess():
      return jax.make_array_from_process_local_data(spec, x)
    return jax.device_put(x, spec)
  return jax.tree.map(one, tree)


def mean_over_processes(metrics: dict) -> dict:
  """Average host-side float metrics over processes (identity on one process)."""
  if not multiprocess():
    return metrics
  keys = sorted(metrics)
  vals = np.asarray([float(metrics[k]) for k in keys], np.float64)
  allv = multihost_utils.process_allgather(vals)
  return dict(zip(keys, np.asarray(allv).mean(axis=0).tolist()))


def max_over_processes(value: int) -> int:
  if not multiprocess():
    return int(value)
  return int(np.max(multihost_utils.process_allgather(np.asarray([value], np.int64))))


def gather_json(obj) -> list:
  """Every process's JSON-able `obj`, indexed by process (a one-element list on one host)."""
  if not multiprocess():
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  size = max_over_processes(len(data))
  padded = np.zeros((size + 8,), np.uint8)
  padded[:8] = np.frombuffer(np.int64(len(data)).tobytes(), np.uint8)
  padded[8:8 + len(data)] = data
  rows = np.asarray(multihost_utils.process_allgather(padded))
  out = []
  for row in rows:
    n = int(np.frombuffer(row[:8].tobytes(), np.int64)[0])
    out.append(json.loads(row[8:8 + n].tobytes().decode()))
  return out


def on_mesh(mesh, tree):
  """Leaves not yet placed on `mesh` (a fresh optimizer count on one device), replicated
  on it, as a jitted step's outputs are: the step's first call then compiles the same
  program as every later one. Identity without a mesh."""
  if mesh is None:
    return tree
  rep = NamedSharding(mesh, P())

  def one(x):
    if not isinstance(x, jax.Array) or (isinstance(x.sharding, NamedSharding)
                                        and x.sharding.mesh == mesh):
      return x
    return jax.device_put(x, rep) if x.is_fully_addressable else x
  return jax.tree.map(one, tree)


def to_global(mesh, tree):
  """Make host-local leaves (e.g. a fresh optimizer count) global, replicated arrays.

  Leaves that already span the mesh are kept. Every process must hold the same values.
  Identity on one process.
  """
  if not multiprocess() or mesh is None:
    return tree

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct) or (isinstance(x, jax.Array)
                                               and not x.is_fully_addressable):
      return x   # a restore template's abstract leaf, or already global
    value = np.asarray(x)
    rep = NamedSharding(mesh, P())
    return jax.make_array_from_callback(value.shape, rep, lambda idx: value[idx])
  return jax.tree.map(one, tree)
