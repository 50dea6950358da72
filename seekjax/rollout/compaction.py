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
  to one or two rows at a time, and an append costs in proportion to its rows (a piece of
  32 tokens or more a row through every layer); compaction itself stops at its floor,
  since a decode step of fewer rows saves little. Empty when compaction is off."""
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
  `append_sizes`) and the whole batch's feedback append on the first rollout of each
  shape, so that a run compiles them while it warms up, not at whichever later step first
  compacts or appends (which rows finish or get their replies together depends on the
  helper's latency, so a run may first meet any of them at any step).

  Ahead of time: each program is lowered and compiled (`lower(...).compile()`) for the
  arguments a rollout will pass, from `state` (the prefilled batch) and the shapes and
  placements each program returns, chained as the driver chains them. Nothing runs, so
  a run whose programs come from the persistent cache pays only their tracing and
  loading, and `state` is not consumed.
  """
  key = (spec, state.length.shape[0], sizes, width, appends)
  if not sizes or key in _WARM:
    return
  committed = any(getattr(x, "committed", False)
                  for x in jax.tree.leaves((params, tables, state)))

  def compiled(fn, *args, **kw):
    """`fn` compiled for these arguments; the shapes of its outputs, placed as it places
    them when its arguments are committed (jit's outputs are then committed too)."""
    lowered = fn.lower(*args, **kw)
    placed = lowered.compile().output_shardings
    return jax.tree.map(
        lambda o, p: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=p if committed else None),
        lowered.out_info, placed)

  ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
  host_id = ints()
  b = state.length.shape[0]
  decoded = {}   # each batch size as the decode loop returns it
  for m in (b,) + sizes:
    start = state if m == b else compiled(engine.take_rows, decoded[b], ints(m), spec=spec)
    decoded[m] = compiled(engine.decode_until_blocked, params, tables, start, host_id,
                          spec=spec)
    compiled(engine.finish_rows, decoded[m], jax.ShapeDtypeStruct((m,), jnp.bool_),
             engine.FINISH_BUDGET)
    # feedback for the whole batch of m (`append_chunk`), then decoding on
    appended = compiled(engine.append_chunk, params, decoded[m], ints(m, width), ints(m),
                        spec=spec)
    compiled(engine.decode_until_blocked, params, tables, appended, host_id, spec=spec)
    # compactions to n < m (`take_rows`) and feedback for n of the m rows (`append_rows`:
    # the gather, the model's program on n rows, shared with the compacted batches, and
    # the scatter)
    for n in sorted(set(sizes) | set(appends), reverse=True):
      if n < m:
        sub = compiled(engine.take_rows, decoded[m], ints(n), spec=spec)
        sub = compiled(engine.append_chunk, params, sub, ints(n, width), ints(n), spec=spec)
        put = compiled(engine.put_rows, decoded[m], ints(n), sub)
        compiled(engine.decode_until_blocked, params, tables, put, host_id, spec=spec)
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
