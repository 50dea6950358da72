"""The jitted rollout engine: prefill, decode-until-blocked (with the helper callback), append.

All three functions take and return a `SamplingState` pytree; the host driver in
`seekjax.rollout.driver` strings them together. Per-row offsets let rows at different
points of their conversation share one batch and one KV cache.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seekjax.models import decoder
from seekjax.models.config import ModelConfig
from seekjax.models.generate import decode_step, prefill_chunk
from seekjax.models.sharding import BATCH_AXES, CACHE_RULE, batch_divisor, fit_spec
from seekjax.models.sampling import row_keys, sample_token_rows

RUNNING, PARKED, DONE = 0, 1, 2
# finish reasons (state.finish)
FINISH_NONE, FINISH_ANSWER, FINISH_EOS, FINISH_BUDGET, FINISH_TURN = 0, 1, 2, 3, 4
FINISH_NAMES = {FINISH_NONE: "running", FINISH_ANSWER: "answer", FINISH_EOS: "eos",
                FINISH_BUDGET: "episode_budget", FINISH_TURN: "turn_budget"}


@struct.dataclass
class SamplingState:
  """Everything the decode loop carries. B rows, buffer length L, vocab V."""

  tokens: jax.Array      # int32[B, L]   prompt, SLM tokens and feedback, as sampled/inserted
  loss_mask: jax.Array   # int32[B, L]   1 only on SLM-sampled tokens
  logprobs: jax.Array    # float32[B, L] sampler log-prob of each sampled token (0 elsewhere)
  cache: decoder.KVCache  # per layer [B, L, K, hd], filled for slots [0, length)
  logits: jax.Array      # float32[B, V] next-token logits of each row
  length: jax.Array      # int32[B]      tokens in the buffer (and in the cache)
  prompt_len: jax.Array  # int32[B]
  turn_start: jax.Array  # int32[B]      where the current SLM turn began
  status: jax.Array      # int32[B]      RUNNING | PARKED | DONE
  finish: jax.Array      # int32[B]      FINISH_* reason once DONE
  msg_q: jax.Array       # int32[B]      "</message>" automaton state
  ans_q: jax.Array       # int32[B]      "</answer>" automaton state
  rng: jax.Array
  first_row: jax.Array   # int32[]       episode id of the wave's row 0 (`driver.waves`):
                         #               sampling keys use first_row + rows
  rows: jax.Array        # int32[B]      each row's index among the wave's rows (the host's
                         #               row id): arange(B), until `take_rows` compacts
  steps: jax.Array       # int32[]       decode steps taken in the current call
  budget: jax.Array      # int32[]       most tokens a row may hold after its prompt (the
                         #               episode budget: a value, not a shape, so rollouts
                         #               with other budgets share the compiled programs)
  # dtype[B, L, D] the residual stream after the first `EngineSpec.capture_layer` layers of
  # the token at each slot (as tokens: valid for slots [0, length)); None when not captured
  hidden: jax.Array | None = None


@struct.dataclass
class TagTables:
  """Closing-tag automata (seekjax.rollout.tagmatch): int32/bool[Q, V]."""

  msg_next: jax.Array
  msg_hit: jax.Array
  ans_next: jax.Array
  ans_hit: jax.Array


@dataclasses.dataclass(frozen=True)
class EngineSpec:
  """Static (compile-time) settings; hashable so each shape compiles once."""

  model: ModelConfig
  max_len: int             # L
  turn_window: int         # M: most tokens one SLM turn may sample
  max_steps: int           # decode steps per call
  temperature: float
  top_k: int
  top_p: float
  eos_ids: tuple
  # Data-parallel decode (`per_shard_mesh`): the decode loop runs once per batch shard,
  # each with its own callback for its own rows and no collective inside the loop.
  mesh: Mesh | None = None
  # The mesh the rows are split over (its batch axes), with or without per-shard decode;
  # None: wherever XLA puts them (one device).
  rows_mesh: Mesh | None = None
  # Layers after which every written token's residual stream is kept in
  # `SamplingState.hidden` (top_n training reuses it for the frozen bottom layers instead
  # of running them again); None: not kept, no buffer and no cost.
  capture_layer: int | None = None


def per_shard_mesh(mesh: Mesh | None) -> Mesh | None:
  """The mesh to decode per shard on, or None for one SPMD loop with one callback.

  Per shard when the batch axes split the rows and no axis splits the model (tensor = 1):
  each device then holds the whole params while it decodes (gathered once per call, before
  the loop), so the loop needs no collective and a shard's callback never makes another
  shard wait. With tensor parallelism the decode step itself needs collectives, so one
  callback serves the whole sharded batch.
  """
  if mesh is None:
    return None
  model_axes = math.prod(n for a, n in mesh.shape.items() if a not in BATCH_AXES)
  return mesh if batch_divisor(mesh) > 1 and model_axes == 1 else None


# The io_callback target must be a static Python function; it routes to the live
# driver by an integer id passed as an operand, so one compiled loop serves every rollout.
_HOSTS: dict = {}


def _host_submit(host_id, rows, closed, window, window_len):
  host = _HOSTS.get(int(host_id))
  if host is None:
    return jnp.zeros(closed.shape, jnp.int32)
  return host.submit(closed, window, window_len, rows)


def _repeat_rows(x, g, axis=0):
  return x if g == 1 else jnp.repeat(x, g, axis=axis)


def _split_rows(x, mesh: Mesh | None, cache: bool = False):
  """x with its rows over the mesh's batch axes (kv heads over tensor for a cache
  buffer); unchanged without a mesh, replicated along a dim the axes do not divide."""
  if mesh is None:
    return x
  rule = CACHE_RULE if cache else (BATCH_AXES,) + (None,) * (x.ndim - 1)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, fit_spec(mesh, x.shape, rule)))


@functools.partial(jax.jit, static_argnames=("spec", "group"))
def prefill(params, prompts, prompt_len, rng, first_row, budget, *, spec: EngineSpec,
            group: int):
  """Prefill N distinct prompts once, then give each G rows (B = N*G).

  prompts: int32[N, P] right-padded, prompt_len: int32[N], first_row: int32[] (the
  episode id of row 0), budget: int32[] (the episode budget: most tokens after a row's
  prompt). Returns SamplingState with B rows, split over `spec.rows_mesh`.
  """
  n, p = prompts.shape
  cfg = spec.model
  mesh = spec.rows_mesh
  cache = decoder.init_cache(cfg, n, spec.max_len).map_layers(
      lambda a: _split_rows(a, mesh, cache=True))
  out = prefill_chunk(params, cfg, cache, prompts, prompt_len, jnp.zeros_like(prompt_len),
                      capture=spec.capture_layer)
  logits, cache = out[:2]
  b = n * group
  hidden = None
  if spec.capture_layer is not None:  # slots past a prompt's end are rewritten later
    hidden = jnp.zeros((b, spec.max_len, cfg.hidden_size), cfg.jnp_dtype).at[:, :p].set(
        _repeat_rows(out[2], group))
    hidden = _split_rows(hidden, mesh)
  cache = cache.map_layers(lambda a: _split_rows(_repeat_rows(a, group), mesh, cache=True))
  tokens = jnp.zeros((b, spec.max_len), jnp.int32).at[:, :p].set(_repeat_rows(prompts, group))
  length = _repeat_rows(prompt_len, group)
  zeros = _split_rows(jnp.zeros((b,), jnp.int32), mesh)
  rows = _split_rows(jnp.arange(b, dtype=jnp.int32), mesh)
  return SamplingState(
      tokens=_split_rows(tokens, mesh),
      loss_mask=_split_rows(jnp.zeros((b, spec.max_len), jnp.int32), mesh),
      logprobs=_split_rows(jnp.zeros((b, spec.max_len), jnp.float32), mesh), cache=cache,
      logits=_split_rows(_repeat_rows(logits, group), mesh), length=_split_rows(length, mesh),
      prompt_len=_split_rows(length, mesh), turn_start=_split_rows(length, mesh),
      status=zeros, finish=zeros, msg_q=zeros, ans_q=zeros, rng=rng,
      first_row=jnp.asarray(first_row, jnp.int32), rows=rows, steps=jnp.int32(0),
      budget=jnp.asarray(budget, jnp.int32), hidden=hidden)


def _turn_window(tokens, turn_start, width):
  """The tokens of each row's current turn: int32[B, width] (past-the-end slots clipped)."""
  idx = jnp.clip(turn_start[:, None] + jnp.arange(width)[None, :], 0, tokens.shape[1] - 1)
  return jnp.take_along_axis(tokens, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def decode_until_blocked(params, tables: TagTables, state: SamplingState, host_id, *,
                         spec: EngineSpec):
  """Decode RUNNING rows until none is left or `spec.max_steps` steps were taken.

  A row that closes </message> is handed to the host (io_callback, only on steps where
  some row closed one) and PARKED; the others keep decoding. </answer>, an eos id or a
  spent budget make a row DONE. With `spec.mesh` the loop runs per batch shard
  (shard_map): each shard decodes its own rows, stops when they are blocked, and its
  callback hands only those rows (with their global ids) to the host. Returns the new
  SamplingState.
  """
  if spec.mesh is None:
    return _decode_loop(params, tables, state, host_id, spec=spec, ordered=True)
  mesh = spec.mesh
  axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
  rows = P(axes)
  state_spec = jax.tree.map(lambda _: rows, state).replace(rng=P(), first_row=P(), steps=P(),
                                                           budget=P())

  def shard(params, tables, state, host_id):
    out = _decode_loop(params, tables, state, host_id, spec=spec, ordered=False)
    return out.replace(steps=jnp.int32(0))  # per-shard counts differ; not reported

  return jax.shard_map(shard, mesh=mesh, in_specs=(P(), P(), state_spec, P()),
                       out_specs=state_spec, check_vma=False)(params, tables, state, host_id)


def _decode_loop(params, tables, state, host_id, *, spec, ordered):
  """The decode while_loop over this device's (or all) rows; `state.rows` are their
  host ids (a shard holds its own slice of them)."""
  cfg, max_len = spec.model, spec.max_len
  eos = jnp.asarray(spec.eos_ids or (-1,), jnp.int32)
  rows = jnp.arange(state.length.shape[0])
  episode_rows = state.first_row + state.rows   # ids across waves (sampling keys)

  def cond(s):
    return (s.steps < spec.max_steps) & jnp.any(s.status == RUNNING)

  def body(s):
    running = s.status == RUNNING
    # Per-row keys from (rng, row, slot): a row's sample depends only on its own history,
    # not on how many steps other rows took while it was parked (helper latency), nor on
    # which shard decodes it.
    keys = row_keys(s.rng, episode_rows, s.length)
    ids, lp = sample_token_rows(s.logits, keys, spec.temperature, spec.top_k, spec.top_p)
    ids = jnp.where(running, ids, 0)
    slot = jnp.where(running, s.length, max_len)  # max_len: dropped by the scatter
    tokens = s.tokens.at[rows, slot].set(ids, mode="drop")
    loss_mask = s.loss_mask.at[rows, slot].set(1, mode="drop")
    logprobs = s.logprobs.at[rows, slot].set(lp, mode="drop")
    length = s.length + running.astype(jnp.int32)

    msg_hit = tables.msg_hit[s.msg_q, ids]
    ans_hit = tables.ans_hit[s.ans_q, ids]
    msg_q = tables.msg_next[s.msg_q, ids]
    ans_q = tables.ans_next[s.ans_q, ids]
    answered = running & ans_hit
    eos_now = running & jnp.isin(ids, eos) & ~answered
    ended = answered | eos_now
    no_room = (length - s.prompt_len >= s.budget) | (length >= max_len)
    closed = running & msg_hit & ~ended & ~no_room
    turn_spent = running & ~ended & ~closed & (length - s.turn_start >= spec.turn_window)
    out_of_budget = running & ~ended & ~closed & no_room
    finish = jnp.select([answered, eos_now, out_of_budget, turn_spent],
                        [FINISH_ANSWER, FINISH_EOS, FINISH_BUDGET, FINISH_TURN], s.finish)
    done_now = ended | out_of_budget | turn_spent

    def submit(_):
      window = _turn_window(tokens, s.turn_start, spec.turn_window)
      return io_callback(_host_submit, jax.ShapeDtypeStruct(closed.shape, jnp.int32),
                         host_id, s.rows, closed, window, length - s.turn_start,
                         ordered=ordered)

    accepted = jax.lax.cond(jnp.any(closed), submit, lambda _: jnp.zeros_like(length), None)
    # A row parks once the host took its request (this data dependence also keeps the
    # unordered per-shard callback inside its step).
    status = jnp.where(done_now, DONE, jnp.where(closed & (accepted > 0), PARKED, s.status))
    # Every row forwards its token (static shapes); only RUNNING rows' writes are kept:
    # others write past their end, which is never attended and later overwritten.
    out = decode_step(params, cfg, s.cache, ids, s.length, capture=spec.capture_layer)
    logits, cache = out[:2]
    hidden = s.hidden
    if spec.capture_layer is not None:  # the sampled token's residual, at its own slot
      hidden = hidden.at[rows, slot].set(out[2], mode="drop")
    return SamplingState(tokens=tokens, loss_mask=loss_mask, logprobs=logprobs, cache=cache,
                         logits=logits, length=length, prompt_len=s.prompt_len,
                         turn_start=s.turn_start, status=status, finish=finish, msg_q=msg_q,
                         ans_q=ans_q, rng=s.rng, first_row=s.first_row, rows=s.rows,
                         steps=s.steps + 1, budget=s.budget, hidden=hidden)

  state = state.replace(steps=jnp.int32(0))
  return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def append_chunk(params, state: SamplingState, chunk, chunk_len, *, spec: EngineSpec):
  """Insert feedback into rows at their own offsets, without re-encoding earlier context.

  chunk: int32[B, C] right-padded, chunk_len: int32[B] (0 = row untouched). Written
  tokens get loss_mask 0; rows that received a chunk go back to RUNNING with a new turn.
  """
  return _append(params, state, chunk, chunk_len, spec)


# The per-row fields an append writes (besides the KV cache): what `put_rows` copies back.
_APPEND_FIELDS = ("tokens", "loss_mask", "logprobs", "logits", "length", "turn_start", "status",
                  "msg_q", "ans_q")


def append_pieces(params, state: SamplingState, chunk, chunk_len, *, spec: EngineSpec,
                  width: int | None = None):
  """`append_chunk` of chunk int32[B, P x width] (host arrays) in P pieces of `width`
  columns, one after the other; a row whose feedback ends before a piece gets an empty
  one (chunk_len 0 leaves it as it is). No row decodes in between, so the state is that
  of one append of the whole chunk, to float rounding: one program of the run's chunk
  width serves short and long feedback, and short feedback (most replies) costs a piece,
  not the longest feedback's width. width None: one piece."""
  chunk, chunk_len = np.asarray(chunk, np.int32), np.asarray(chunk_len, np.int32)
  width = width or chunk.shape[1]
  for start in range(0, chunk.shape[1], width):
    state = append_chunk(params, state, jax.device_put(chunk[:, start:start + width]),
                         jax.device_put(np.clip(chunk_len - start, 0, width).astype(np.int32)),
                         spec=spec)
  return state


def append_rows(params, state: SamplingState, index, chunk, chunk_len, *, spec: EngineSpec,
                width: int | None = None):
  """`append_pieces` on the batch rows `index` only (int32[K], distinct), K < B.

  chunk: int32[K, C] and chunk_len: int32[K] belong to those rows (0: a row that only pads
  K, left as it is). Feedback usually comes back to a few rows at a time; the full-batch
  append runs the chunk through the model for every row, this one for K of them: their
  rows are gathered into a K-row state (`take_rows`), extended by the K-row `append_chunk`
  (once a piece) and written back in place (`put_rows`; `state` is consumed). Separate
  programs, so that the costly one (the model) compiles once per K, shared with the
  compacted batches of K rows, and only the cheap gather and scatter once per (B, K).
  """
  sub = append_pieces(params, take_rows(state, index, spec=spec), chunk, chunk_len, spec=spec,
                      width=width)
  return put_rows(state, index, sub)


@functools.partial(jax.jit, donate_argnames=("state",))
def put_rows(state: SamplingState, index, sub: SamplingState) -> SamplingState:
  """`state` with its rows `index` replaced by `sub`'s rows (a `take_rows` state of them,
  then appended to): the fields and KV cache an append writes, in place (`state` is
  donated; its buffers keep their layout, as `append_chunk`'s outputs do, so the next
  program sees the same state whichever append ran)."""
  put = lambda full, part: full.at[index].set(part)
  return state.replace(
      cache=jax.tree.map(put, state.cache, sub.cache),
      hidden=None if state.hidden is None else put(state.hidden, sub.hidden),
      **{f: put(getattr(state, f), getattr(sub, f)) for f in _APPEND_FIELDS})


def _append(params, state: SamplingState, chunk, chunk_len, spec: EngineSpec):
  """The body of `append_chunk`, on whichever rows `state` holds."""
  max_len = spec.max_len
  out = prefill_chunk(params, spec.model, state.cache, chunk, chunk_len, state.length,
                      capture=spec.capture_layer)
  logits, cache = out[:2]
  c = chunk.shape[1]
  rows = jnp.arange(chunk.shape[0])[:, None]
  valid = jnp.arange(c)[None, :] < chunk_len[:, None]
  slot = jnp.where(valid, state.length[:, None] + jnp.arange(c)[None, :], max_len)
  has = chunk_len > 0
  length = state.length + chunk_len
  hidden = state.hidden
  if spec.capture_layer is not None:
    hidden = hidden.at[rows, slot].set(out[2], mode="drop")
  return state.replace(
      hidden=hidden,
      tokens=state.tokens.at[rows, slot].set(chunk, mode="drop"),
      loss_mask=state.loss_mask.at[rows, slot].set(0, mode="drop"),
      logprobs=state.logprobs.at[rows, slot].set(0.0, mode="drop"),
      cache=cache,
      logits=jnp.where(has[:, None], logits, state.logits),
      length=length,
      turn_start=jnp.where(has, length, state.turn_start),
      status=jnp.where(has, RUNNING, state.status),
      msg_q=jnp.where(has, 0, state.msg_q),
      ans_q=jnp.where(has, 0, state.ans_q))


@functools.partial(jax.jit, donate_argnames=("state",))
def finish_rows(state: SamplingState, rows_mask, reason):
  """Mark rows DONE with a reason (e.g. a parked row whose feedback cannot fit)."""
  return state.replace(status=jnp.where(rows_mask, DONE, state.status),
                       finish=jnp.where(rows_mask, reason, state.finish))


@functools.partial(jax.jit, static_argnames=("spec",))
def take_rows(state: SamplingState, index, *, spec: EngineSpec) -> SamplingState:
  """The state of rows `index` (int32[B']) only: every per-row array, the KV cache and the
  captured hidden states gathered along the rows, split over `spec.rows_mesh` again.

  The rollout compacts its batch with it once most rows are DONE, so the decode loop stops
  computing rows that have finished. Each row keeps its host id (`rows`), and with it its
  sampling keys, so the rows it keeps sample what they would have sampled in the full
  batch.
  """
  mesh = spec.rows_mesh
  per_row = lambda a: _split_rows(jnp.take(a, index, axis=0), mesh)
  return state.replace(
      tokens=per_row(state.tokens), loss_mask=per_row(state.loss_mask),
      logprobs=per_row(state.logprobs),
      cache=state.cache.map_layers(
          lambda a: _split_rows(jnp.take(a, index, axis=0), mesh, cache=True)),
      logits=per_row(state.logits), length=per_row(state.length),
      prompt_len=per_row(state.prompt_len), turn_start=per_row(state.turn_start),
      status=per_row(state.status), finish=per_row(state.finish), msg_q=per_row(state.msg_q),
      ans_q=per_row(state.ans_q), rows=per_row(state.rows),
      hidden=None if state.hidden is None else per_row(state.hidden))
