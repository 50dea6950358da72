"""`sj.rollout`: the host loop around the jitted engine, and the `Episodes` it returns.

prefill -> [decode_until_blocked -> gather ready helper replies -> append_rows / append_chunk]*
-> Episodes.
The io_callback inside the decode loop lands in `host.Host.submit`, which parses the
closed message and starts the helper call on the pool without waiting.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from seekjax import protocol
from seekjax.models import packing, sharding
from seekjax.rollout import compaction, engine, tagmatch
from seekjax.rollout.config import (cache_length, chunk_width, episode_budget,
                                    prompt_width, validate)
from seekjax.rollout.host import TIMED_PHASES, Host, feedback_ids, forced_prefixes
from seekjax.rollout.pool import HelperPool


@dataclasses.dataclass
class Episodes:
  """B = len(questions) * group_size episodes; row i answers question question_index[i]."""

  tokens: np.ndarray          # int32[B, L]
  loss_mask: np.ndarray       # int32[B, L]: 1 only on SLM-sampled tokens
  logprobs: np.ndarray        # float32[B, L]: sampler log-probs at loss_mask == 1
  lengths: np.ndarray         # int32[B]
  prompt_lengths: np.ndarray  # int32[B]
  num_messages: np.ndarray    # int32[B]: messages actually sent to the helper
  helper_tokens: np.ndarray   # int32[B]
  helper_latency: np.ndarray  # float32[B]: seconds, summed over the episode's calls
  helper_errors: np.ndarray   # int32[B]: calls that failed (timeout, exception, malformed...)
  question_index: np.ndarray  # int32[B]
  answers: list               # str | None per episode
  messages: list              # list[str] per episode: what was sent to the helper
  replies: list               # list[HelperReply] per episode
  transcripts: list           # readable text of everything after the prompt
  finish: list                # "answer" | "eos" | "episode_budget" | "turn_budget"
  refusals: list              # list[str] per episode: messages refused before the helper
  wall_time: float = 0.0
  helper_wait_time: float = 0.0  # seconds the host loop sat idle waiting for replies
  helper_faults: dict = dataclasses.field(default_factory=dict)  # pool.stats(): calls,
  # attempts, faults by kind, outages
  # where the rollout's wall time went, summed over waves (`host.Host.times`): seconds of
  # prefill, warm_up (the compaction programs), decode (the jitted loop, to its sync),
  # compact, append (feedback chunks), host (the rest of the loop: helper hand-off,
  # tokenizing feedback, waiting) and other (set-up and collecting the episodes; with the
  # others it sums to wall_time); decode_calls and decode_row_steps (decode steps x batch
  # rows, 0 where the loop runs per shard and reports no step count)
  phase_times: dict = dataclasses.field(default_factory=dict)
  # dtype[B, L, D]: the residual stream after the first `capture_layer` layers at each
  # slot (zero past each row's length), as the sampler computed it; None unless asked for
  hidden: np.ndarray | None = None

  def __len__(self):
    return len(self.answers)


# Host arrays reach the device with jax.device_put, a plain transfer: jnp.asarray compiles
# a small staging program for every new shape, and the rows a feedback batch holds vary.

_host_ids = itertools.count(1)   # keys of engine._HOSTS: which Host a callback lands in


def _encode_prompts(tokenizer, questions, system):
  if not questions:
    raise ValueError("rollout needs at least one question")
  prompts = []
  for i, q in enumerate(questions):
    if not isinstance(q, str) or not q.strip():
      raise ValueError(f"question {i} is empty or not a string: {q!r}")
    prompts.append(tokenizer.encode_chat(protocol.slm_messages(q, **(
        {"system": system} if system else {}))))
  return prompts


def rollout(model, questions: list[str], helper, cfg, rng, *, forced=None,
            verbose: bool = False, should_stop=None, capture_layer: int | None = None
            ) -> Episodes:
  """Generate `group_size` episodes per question, asking `helper` when the SLM messages it.

  rng: a jax PRNGKey (or an int seed).
  forced: optional per-question list of (slm_turn_text, message) pairs that are played
    before sampling starts (static pipelines): each message really goes to the helper
    and counts as a message; these tokens are context (loss_mask 0), not samples.
  should_stop: None, or a callable that raises to abandon the rollout (a stop signal);
    it is checked while waiting on the helper, whose pending calls are then cancelled.
  capture_layer: None, or a layer count c: the episodes then carry `hidden`, the
    residual stream after the model's first c layers at every token (top_n training
    reuses it instead of running its frozen bottom layers again).
  Returns Episodes (see its fields).
  """
  validate(cfg)
  tok = model.tokenizer
  if tok is None:
    raise ValueError(f"model {model.name!r} has no tokenizer; rollout needs one")
  t_start = time.perf_counter()
  rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
  prompts = _encode_prompts(tok, questions, cfg.system_prompt)
  if forced is not None and len(forced) != len(questions):
    raise ValueError(f"forced has {len(forced)} entries for {len(questions)} questions")
  pool = HelperPool.from_config(helper, cfg, should_stop=should_stop)
  try:
    return _rollout(model, tok, prompts, pool, cfg, rng, forced, verbose, t_start,
                    capture_layer)
  finally:
    pool.close()


def waves(num_questions: int, group: int, divisor: int, max_rows_per_device: int):
  """[(first question, end)] slices rolled out one after another, so that no device holds
  more than `max_rows_per_device` rows (0: no limit, one wave). A wave holds at least
  one question."""
  if not max_rows_per_device:
    return [(0, num_questions)]
  per_wave = max(max_rows_per_device * divisor // group, 1)
  return [(a, min(a + per_wave, num_questions)) for a in range(0, num_questions, per_wave)]


def _rollout(model, tok, prompts, pool, cfg, rng, forced, verbose, t_start,
             capture_layer=None) -> Episodes:
  prefixes = None
  if forced is not None:
    prefixes = forced_prefixes(tok, pool, forced, cfg.max_feedback_tokens)
    prompts = [p + ids for p, (ids, _, _) in zip(prompts, prefixes)]
  group = int(cfg.group_size)
  width = prompt_width([len(p) for p in prompts], cfg)
  budget = episode_budget(cfg)
  max_len = cache_length([len(p) for p in prompts], cfg)
  if max_len > model.config.max_position_embeddings:
    raise ValueError(f"cache length {max_len} (longest prompt: {max(len(p) for p in prompts)} "
                     f"tokens, episode budget: {budget}) exceeds the model's context "
                     f"({model.config.max_position_embeddings})")
  per_shard = engine.per_shard_mesh(model.mesh) if cfg.per_shard_decode else None
  if capture_layer is not None and not 0 <= capture_layer <= model.config.num_layers:
    raise ValueError(f"capture_layer={capture_layer} must be in [0, "
                     f"{model.config.num_layers}] (the model's layers)")
  spec = engine.EngineSpec(
      model=model.config, max_len=max_len, turn_window=int(cfg.max_new_tokens),
      max_steps=int(cfg.max_steps_per_call),
      temperature=float(cfg.temperature), top_k=int(cfg.top_k), top_p=float(cfg.top_p),
      eos_ids=tuple(int(i) for i in tok.eos_ids), mesh=per_shard, rows_mesh=model.mesh,
      capture_layer=None if capture_layer is None else int(capture_layer))
  v = model.config.vocab_size
  mn, mh = tagmatch.tag_tables(tok, v, protocol.MESSAGE_CLOSE)
  an, ah = tagmatch.tag_tables(tok, v, protocol.ANSWER_CLOSE)
  tables = engine.TagTables(*(jax.device_put(t) for t in (mn, mh, an, ah)))
  params = packing.decode_params(model.params)  # decode reads each layer in place
  parts = []
  for a, e in waves(len(prompts), group, sharding.batch_divisor(model.mesh),
                    int(cfg.get("max_rows_per_device") or 0)):
    wave_prefixes = None if prefixes is None else prefixes[a:e]
    parts.append(_wave(model, tok, prompts[a:e], width, pool, cfg, rng, wave_prefixes, spec,
                       tables, params, a * group, budget, verbose))
  episodes = _concat(parts, group, time.perf_counter() - t_start)
  episodes.helper_faults = pool.stats()
  timed = sum(episodes.phase_times.get(k, 0.0) for k in TIMED_PHASES)
  episodes.phase_times["other"] = max(episodes.wall_time - timed, 0.0)
  return episodes


def _wave(model, tok, prompts, width, pool, cfg, rng, prefixes, spec, tables, params,
          first_row, budget, verbose) -> Episodes:
  """One wave's episodes (its rows' ids start at `first_row`); question_index is local."""
  t_start = time.perf_counter()
  group = int(cfg.group_size)
  n_q = len(prompts)
  n_pad = n_q  # pad with repeats of question 0.. so rows divide the mesh's data axes
  while (n_pad * group) % sharding.batch_divisor(model.mesh):
    n_pad += 1
  prompt_arr = np.full((n_pad, width), tok.pad_id, np.int32)
  prompt_len = np.ones((n_pad,), np.int32)
  for i in range(n_pad):
    p = prompts[i % n_q]
    prompt_arr[i, :len(p)] = p
    prompt_len[i] = len(p)
  b = n_pad * group
  host = Host(tok, pool, cfg, b)
  forced_len = np.zeros((b,), np.int32)
  if prefixes is not None:
    for row in range(n_q * group):
      ids, messages, replies = prefixes[row // group]
      host.messages[row], host.replies[row] = list(messages), list(replies)
      forced_len[row] = len(ids)
  host_id = next(_host_ids)
  engine._HOSTS[host_id] = host  # pylint: disable=protected-access
  try:
    prompts_dev, lens_dev = jax.device_put(prompt_arr), jax.device_put(prompt_len)
    if model.mesh is not None and n_pad % sharding.batch_divisor(model.mesh) == 0:
      prompts_dev = jax.device_put(prompts_dev, sharding.batch_sharding(model.mesh, 2))
      lens_dev = jax.device_put(lens_dev, sharding.batch_sharding(model.mesh, 1))
    t = time.perf_counter()
    state = engine.prefill(params, prompts_dev, lens_dev, rng, jnp.int32(first_row),
                           jnp.int32(budget), spec=spec, group=group)
    state.length.block_until_ready()
    host.times["prefill"] += time.perf_counter() - t
    store = compaction.RowStore(b, state.hidden is not None)
    divisor = sharding.batch_divisor(model.mesh)
    sizes = compaction.compact_sizes(b, int(cfg.get("compact_min_rows") or 0), divisor)
    appends = compaction.append_sizes(sizes, divisor)
    t = time.perf_counter()
    compaction.warm_up(params, tables, state, spec, sizes, chunk_width(cfg), appends)
    host.times["warm_up"] += time.perf_counter() - t
    t = time.perf_counter()
    state = _run(params, tables, state, host, host_id, spec, budget, verbose, store, sizes,
                 appends)
    inner = sum(host.times[k] for k in ("decode", "compact", "append"))
    host.times["host"] += time.perf_counter() - t - inner
    store.write(state)
  finally:
    engine._HOSTS.pop(host_id, None)  # pylint: disable=protected-access
  keep = np.arange(n_q * group)  # drop padding rows
  return _collect(tok, store, host, keep, group, time.perf_counter() - t_start,
                  forced_len[keep])


def _concat(parts: list, group: int, wall: float) -> Episodes:
  """One Episodes from waves over consecutive questions (rows in question order)."""
  if len(parts) == 1:
    return dataclasses.replace(parts[0], wall_time=wall)
  out, at = {}, 0
  index = []
  for part in parts:
    index.append(part.question_index + at)
    at += len(part) // group
  for f in dataclasses.fields(Episodes):
    values = [getattr(p, f.name) for p in parts]
    if f.name == "question_index":
      out[f.name] = np.concatenate(index)
    elif isinstance(values[0], np.ndarray):
      out[f.name] = np.concatenate(values)
    elif isinstance(values[0], list):
      out[f.name] = sum(values, [])
  return Episodes(**out, wall_time=wall,
                  helper_wait_time=sum(p.helper_wait_time for p in parts),
                  phase_times=dict(sum((collections.Counter(p.phase_times) for p in parts),
                                       collections.Counter())))


def _run(params, tables, state, host, host_id, spec, budget, verbose, store, sizes, appends):
  """Decode, hand messages to the helper and append its replies until every row is DONE.

  sizes: the smaller batches the rows may move to as they finish
  (`compaction.compact_sizes`); rows a compaction drops are written to `store` first.
  Feedback that comes back to a few rows is appended in a batch of one of `appends`
  (`compaction.append_sizes`) holding just them
  (`compaction.append_index`), else to the whole batch.
  """
  width = chunk_width(host.cfg)   # one piece width per run: append_chunk compiles once
  host_id_dev = jnp.int32(host_id)
  times = host.times
  while True:
    t = time.perf_counter()
    state = engine.decode_until_blocked(params, tables, state, host_id_dev, spec=spec)
    if host.callback_error is not None:
      raise RuntimeError(f"rollout host callback failed: {host.callback_error!r}")
    status = np.asarray(state.status)
    times["decode"] += time.perf_counter() - t
    times["decode_calls"] += 1
    times["decode_row_steps"] += int(state.steps) * status.shape[0]
    index = compaction.compact_index(status, sizes) if sizes else None
    if index is not None:
      t = time.perf_counter()
      store.write(state, np.flatnonzero(status == engine.DONE))
      state = engine.take_rows(state, jax.device_put(index), spec=spec)
      status = status[index]
      state.length.block_until_ready()
      times["compact"] += time.perf_counter() - t
      if verbose:
        print(f"[rollout] compacted to {len(index)} rows", file=sys.stderr)
    host_rows = np.asarray(state.rows)
    parked = status == engine.PARKED
    running = status == engine.RUNNING
    if verbose:
      print(f"[rollout] running={running.sum()} parked={parked.sum()} "
            f"done={(status == engine.DONE).sum()}", file=sys.stderr)
    if not parked.any():
      if not running.any():
        return state
      continue
    batch_row = {int(host_rows[i]): int(i) for i in np.flatnonzero(parked)}
    ready = host.ready_rows(batch_row)
    if not ready and not running.any():
      t_wait = time.perf_counter()
      host.pool.wait_any(timeout=host.cfg.helper_timeout + 5)
      host.wait_time += time.perf_counter() - t_wait
      ready = host.ready_rows(batch_row)
    if not ready:
      continue
    length = np.asarray(state.length)
    prompt_len = np.asarray(state.prompt_len)
    chunks, no_room = {}, np.zeros_like(parked)
    for row in ready:
      ids = feedback_ids(host.tok, *host.take_feedback(row), host.cfg.max_feedback_tokens)
      i = batch_row[row]
      room = min(spec.max_len - int(length[i]), budget - int(length[i] - prompt_len[i])) - 1
      if room < 8:
        no_room[i] = True
        continue
      chunks[i] = ids[:room]
    if no_room.any():
      state = engine.finish_rows(state, jax.device_put(no_room), engine.FINISH_BUDGET)
    if chunks:
      b = parked.shape[0]
      index = compaction.append_index(sorted(chunks), b, appends)
      at = np.arange(b) if index is None else index   # the rows the append runs on
      # in pieces of the chunk width: as many as the longest of these chunks needs
      pieces = -(-max(len(ids) for ids in chunks.values()) // width)
      chunk = np.zeros((len(at), width * pieces), np.int32)
      chunk_len = np.zeros((len(at),), np.int32)
      for j, i in enumerate(at):
        ids = chunks.get(int(i), ())
        chunk[j, :len(ids)] = ids
        chunk_len[j] = len(ids)
      t = time.perf_counter()
      if index is None:
        state = engine.append_pieces(params, state, chunk, chunk_len, spec=spec, width=width)
      else:
        state = engine.append_rows(params, state, jax.device_put(index), chunk, chunk_len,
                                   spec=spec, width=width)
      state.length.block_until_ready()
      times["append"] += time.perf_counter() - t


def _collect(tok, state, host, keep, group, wall, forced_len) -> Episodes:
  """The wave's Episodes from its rows' final arrays (`state`: a `compaction.RowStore`,
  or any object with the same fields by host row)."""
  tokens = np.asarray(state.tokens)[keep]
  lengths = np.asarray(state.length)[keep]
  prompt_len = np.asarray(state.prompt_len)[keep]
  # Zero whatever lies past each row's end (scratch writes of the fixed-shape loop).
  past = np.arange(tokens.shape[1])[None, :] >= lengths[:, None]
  tokens = np.where(past, 0, tokens)
  loss_mask = np.where(past, 0, np.asarray(state.loss_mask)[keep])
  logprobs = np.where(past, 0.0, np.asarray(state.logprobs)[keep]).astype(np.float32)
  hidden = None
  if state.hidden is not None:
    hidden = np.asarray(state.hidden)[keep]   # a copy (fancy index), in the model's dtype
    hidden[past] = 0
  finish = np.asarray(state.finish)[keep]
  turn_start = np.asarray(state.turn_start)[keep]
  answers, transcripts = [], []
  for i in range(len(keep)):
    transcripts.append(tok.decode(tokens[i, prompt_len[i] - forced_len[i]:lengths[i]]))
    answer = None
    if finish[i] == engine.FINISH_ANSWER:  # the answer is the action of the final turn
      action = protocol.parse_slm_turn(tok.decode(tokens[i, turn_start[i]:lengths[i]]))
      answer = action.text if action.kind == "answer" else None
    answers.append(answer)
  replies = [host.replies[i] for i in keep]
  return Episodes(
      tokens=tokens, loss_mask=loss_mask, logprobs=logprobs, lengths=lengths,
      prompt_lengths=prompt_len,
      num_messages=np.array([len(host.messages[i]) for i in keep], np.int32),
      helper_tokens=np.array([sum(r.tokens for r in rs) for rs in replies], np.int32),
      helper_latency=np.array([sum(r.latency for r in rs) for rs in replies], np.float32),
      helper_errors=np.array([sum(r.error is not None for r in rs) for rs in replies], np.int32),
      question_index=(keep // group).astype(np.int32), answers=answers,
      messages=[host.messages[i] for i in keep], replies=replies, transcripts=transcripts,
      finish=[engine.FINISH_NAMES[int(f)] for f in finish],
      refusals=[host.refusals[i] for i in keep], wall_time=wall, helper_wait_time=host.wait_time,
      helper_faults=host.pool.stats(), hidden=hidden, phase_times=dict(host.times))
