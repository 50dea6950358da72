"""Multi-host helpers: host-local rollouts, globally sharded updates.

Design: each process generates its own episodes (its share of the questions) with a
host-local copy of the policy; the update is one SPMD step over the global mesh, whose
batch is assembled from every process's local episodes. On one process every function
here is the identity (or a plain device_put), so single-host runs pay nothing.
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


def to_global(mesh, tree):
  """Make host-local leaves (e.g. a fresh optimizer count) global, replicated arrays.

  Leaves that already span the mesh are kept. Every process must hold the same values.
  Identity on one process.
  """
  if not multiprocess() or mesh is None:
    return tree

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x
    value = np.asarray(x)
    rep = NamedSharding(mesh, P())
    return jax.make_array_from_callback(value.shape, rep, lambda idx: value[idx])
  return jax.tree.map(one, tree)
