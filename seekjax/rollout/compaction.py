"""Compacting a rollout's batch as its rows finish.

Rows of one batch finish at different times: a row that asks the helper twice decodes a
third turn while the others are DONE. Once the rows not yet DONE fit in half the batch
or less, the driver gathers them into a smaller batch (`engine.take_rows`), so the decode
loop stops computing finished rows. The sizes come from the config (`compact_sizes`), and
`warm_up` compiles their programs on the first rollout of each shape; `RowStore` keeps
what the driver collects of each row that a compaction drops. The same sizes serve
appends: feedback that comes back to a few rows is run through the model for a batch of
those rows only (`append_index`, `engine.append_rows`), in a batch of one of those sizes
or of the smaller ones below the compaction floor (`append_sizes`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seekjax.rollout import engine


def compact_sizes(rows: int, minimum: int, divisor: int = 1) -> tuple[int, ...]:
  """The batch sizes a wave of `rows` rows may shrink to as its rows finish: rows/2,
  rows/4, ..., none below `minimum` (0: never shrink) and each a multiple of the mesh's
  batch `divisor`. A fixed set per config, so each size compiles once."""
  sizes = []
  n = rows
  while minimum and n % 2 == 0 and n // 2 >= minimum and (n // 2) % divisor == 0:
    n //= 2
    sizes.append(n)
  return tuple(sizes)


def append_sizes(sizes: tuple[int, ...], divisor: int = 1) -> tuple[int, ...]:
  """The batch sizes an append may run on: the compaction `sizes`, then on by halving
  down to 1 row (each a multiple of the mesh's batch `divisor`). Feedback often comes back
  to one or two rows at a time, and an append costs in proportion to its rows (a chunk of
  64 tokens a row through every layer); compaction itself stops at its floor, since a
  decode step of fewer rows saves little. Empty when compaction is off."""
  if not sizes:
    return ()
  out = list(sizes)
  while out[-1] % 2 == 0 and (out[-1] // 2) % divisor == 0:
    out.append(out[-1] // 2)
  return tuple(out)


def compact_index(status: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray | None:
  """The batch rows to keep when most rows are DONE, or None to keep the batch as is.

  The kept batch is the smallest of `sizes` (all smaller than the batch) that holds every
  row not yet DONE; DONE rows pad it (they decode nothing, so they stay as they are).
  """
  live = np.flatnonzero(status != engine.DONE)
  fits = [n for n in sizes if len(live) <= n < len(status)]
  if not fits:
    return None
  n = min(fits)
  done = np.flatnonzero(status == engine.DONE)
  return np.concatenate([live, done[:n - len(live)]]).astype(np.int32)


def append_index(rows: list[int], batch: int, sizes: tuple[int, ...]) -> np.ndarray | None:
  """The batch rows an append of feedback to `rows` (distinct batch rows) runs on: those
  rows, padded with others to the smallest of `sizes` below `batch` that holds them (the
  padding rows get no chunk, so they stay as they are); None when none holds them (the
  whole batch appends). The same fixed sizes as compaction, so each compiles once."""
  fits = [n for n in sizes if len(rows) <= n < batch]
  if not fits:
    return None
  n = min(fits)
  taken = set(rows)
  pad = [i for i in range(batch) if i not in taken][:n - len(rows)]
  return np.asarray(list(rows) + pad, np.int32)


_WARM: set = set()   # the shapes warmed in this process


def warm_up(params, tables, state, spec, sizes, width, appends):
  """Compile the programs of the smaller batches (`sizes`; row appends: `appends`,
  `append_sizes`) on the first rollout of each shape, on throwaway states whose rows are
  all DONE (so nothing decodes): a run then compiles them while it warms up, not at
  whichever later step first compacts or appends."""
  key = (spec, state.length.shape[0], sizes, width, appends)
  if not sizes or key in _WARM:
    return
  batches = (state.length.shape[0],) + sizes
  for i, n in enumerate(sizes):
    for m in batches[:i + 1]:   # every compaction that can land on n
      src = state if m == batches[0] else engine.take_rows(state, jnp.zeros((m,), jnp.int32),
                                                           spec=spec)
      dummy = engine.take_rows(src, jnp.zeros((n,), jnp.int32), spec=spec)
    dummy = engine.finish_rows(dummy, jnp.ones((n,), bool), engine.FINISH_NONE)
    dummy = engine.decode_until_blocked(params, tables, dummy, jnp.int32(0), spec=spec)
    dummy = engine.append_chunk(params, dummy, jnp.zeros((n, width), jnp.int32),
                                jnp.zeros((n,), jnp.int32), spec=spec)
    engine.finish_rows(dummy, jnp.zeros((n,), bool), engine.FINISH_NONE)
  # feedback for more rows than the largest smaller batch holds goes to the whole batch
  # (`append_chunk`); which rows have their replies at once depends on the helper's
  # latency, so a run may first meet it at any step: compile it here, on a finished copy
  full = engine.finish_rows(jax.tree.map(jnp.copy, state), jnp.ones((batches[0],), bool),
                            engine.FINISH_NONE)
  engine.append_chunk(params, full, jnp.zeros((batches[0], width), jnp.int32),
                      jnp.zeros((batches[0],), jnp.int32), spec=spec)
  # feedback appended to a few rows of a batch of m (`append_index`): the model's program
  # once per n (shared with the compacted batches), the gather and the scatter per (m, n);
  # on a copy (append_rows consumes its state) and chunks of length 0
  for m in batches:
    for n in (s for s in appends if s < m):
      src = (jax.tree.map(jnp.copy, state) if m == batches[0] else
             engine.take_rows(state, jnp.zeros((m,), jnp.int32), spec=spec))
      engine.append_rows(params, src, jnp.arange(n, dtype=jnp.int32),
                         jnp.zeros((n, width), jnp.int32), jnp.zeros((n,), jnp.int32), spec=spec)
  _WARM.add(key)


class RowStore:
  """Host copies of what `_collect` reads of each of a wave's B rows, by host row: a row
  is written when a compaction drops it from the batch, the others at the end."""

  FIELDS = ("tokens", "loss_mask", "logprobs", "length", "prompt_len", "turn_start", "finish")

  def __init__(self, rows: int, hidden: bool):
    self.rows = rows
    self.fields = self.FIELDS + (("hidden",) if hidden else ())
    self.data: dict = {}

  def write(self, state, index=None):
    """Store the batch rows `index` of `state` (all when None) at their host rows."""
    host_rows = np.asarray(state.rows)
    index = np.arange(len(host_rows)) if index is None else np.asarray(index)
    for name in self.fields:
      a = np.asarray(getattr(state, name))
      if name not in self.data:
        self.data[name] = np.zeros((self.rows,) + a.shape[1:], a.dtype)
      self.data[name][host_rows[index]] = a[index]

  def __getattr__(self, name):
    if name in RowStore.FIELDS or name == "hidden":
      return self.data.get(name)
    raise AttributeError(name)
