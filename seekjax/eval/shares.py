"""Evaluation on several processes: each process answers its share of the questions on
its own devices, and process 0 gathers every share's `MethodRun`s, in question order.

The rollout never crosses hosts: a process's share is a contiguous block of the eval
examples, rolled out on its local mesh (`distributed.local_mesh`); only the per-question
results (text and counts, as JSON) travel, once per method, at the end.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from seekjax import distributed
from seekjax.eval.baselines import MethodRun, concat_runs

ARRAY_FIELDS = ("helper_tokens", "helper_errors", "helper_prompt_tokens",
                "helper_completion_tokens")


def share(n: int, process: int, processes: int) -> slice:
  """The contiguous block of `n` questions that `process` of `processes` answers."""
  return slice(process * n // processes, (process + 1) * n // processes)


def to_json(run: MethodRun) -> dict:
  d = {f.name: getattr(run, f.name) for f in dataclasses.fields(MethodRun)}
  for k in ARRAY_FIELDS:
    d[k] = np.asarray(d[k]).tolist()
  return d


def from_json(d: dict) -> MethodRun:
  return MethodRun(**{k: (np.asarray(v, np.int32) if k in ARRAY_FIELDS else v)
                      for k, v in d.items()})


def gather_runs(runs: dict) -> dict:
  """{name: MethodRun over every process's share, in process (= question) order}; the
  wall time is the slowest share's. On one process: `runs` itself."""
  if not distributed.multiprocess():
    return runs
  every = distributed.gather_json({name: to_json(run) for name, run in runs.items()})
  out = {}
  for name in runs:
    parts = [from_json(p[name]) for p in every]
    out[name] = dataclasses.replace(concat_runs(parts),
                                    wall_time=max(p.wall_time for p in parts))
  return out
