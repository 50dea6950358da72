"""The peer implementation for the multi-turn benchmark: a host-driven loop that re-prefills.

This is how Search-R1 / tunix-style "vanilla" multi-turn rollouts work: for every SLM
turn, the host builds each row's full token context (prompt + all earlier turns +
feedback), runs a fresh jitted prefill of all of it plus a jitted decode loop that stops
a row at ``</message>``, ``</answer>`` or eos, then calls the helper for the rows that
asked, appends their feedback ids, and goes round again. Nothing is kept between turns
except token ids.

Everything except the KV-cache reuse is made identical to `sj.rollout` so that greedy
runs give the same tokens:
- the same model code (`prefill_chunk` / `decode_step` / `sample_token`);
- the same stop check (the `seekjax.rollout.tagmatch` automata, the same eos ids, the
  same per-turn window `max_new_tokens` and episode budget, with the same precedence);
- the same host rules (`protocol.parse_slm_turn` / `check_limits` / `limit_feedback`,
  `protocol.format_feedback`, `host.feedback_ids`, the same room check);
- the same helper pool (`seekjax.rollout.pool.HelperPool`): this turn's calls run
  concurrently, the loop waits for all of them (the helper wait is not hidden).

Batch shape: every turn runs all B rows (rows already finished are marked done from the
first step), the context is right-padded to a power-of-two width and the cache to
`bucket(width + max_new_tokens, 64)` slots, so each turn compiles once per width bucket.

  from benchmarks.reprefill_baseline import reprefill_rollout
  out = reprefill_rollout(model, questions, helper, cfg)   # cfg: sj.rollout_config(...)
"""
from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from seekjax import protocol
from seekjax.models import decoder, packing
from seekjax.models.config import ModelConfig
from seekjax.models.generate import decode_step, prefill_chunk
from seekjax.shapes import bucket
from seekjax.models.sampling import sample_token
from seekjax.rollout import engine, tagmatch
from seekjax.rollout.config import episode_budget, validate
from seekjax.rollout.host import feedback_ids
from seekjax.rollout.pool import HelperPool

# per-row stop reasons of one turn (0 = still running when the window ran out: impossible)
_STOP_MESSAGE = 5
_REASONS = {engine.FINISH_ANSWER: "answer", engine.FINISH_EOS: "eos",
            engine.FINISH_BUDGET: "episode_budget", engine.FINISH_TURN: "turn_budget"}


@dataclasses.dataclass
class BaselineEpisodes:
  """The fields of `sj.Episodes` that the benchmark compares, plus a time breakdown."""

  tokens: np.ndarray          # int32[B, L] (zeros past each row's end)
  loss_mask: np.ndarray       # int32[B, L]
  lengths: np.ndarray         # int32[B]
  prompt_lengths: np.ndarray  # int32[B]
  num_messages: np.ndarray    # int32[B]
  messages: list
  refusals: list
  finish: list
  wall_time: float = 0.0
  model_time: float = 0.0         # jitted prefill + decode (blocked until ready)
  helper_wait_time: float = 0.0   # host waiting for this turn's helper replies
  turns: int = 0                  # model calls (one per turn)
  prefilled_tokens: int = 0       # real (unpadded) context tokens re-prefilled, all turns
  decode_steps: int = 0           # decode-loop iterations, all turns

  def __len__(self):
    return len(self.finish)


@functools.lru_cache(maxsize=None)
def _turn_fn(cfg: ModelConfig, cache_size: int, max_new: int, budget: int, eos_ids: tuple,
             temperature: float, top_k: int, top_p: float):
  """Jitted: prefill the whole context, then decode until every live row stopped."""
  eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

  @jax.jit
  def fn(params, tables, ctx, ctx_len, live, used, rng):
    # ctx int32[B, W] right-padded, ctx_len int32[B], live bool[B],
    # used int32[B]: tokens already after the prompt (SLM + feedback) before this turn.
    b = ctx.shape[0]
    cache = decoder.init_cache(cfg, b, cache_size)
    logits, cache = prefill_chunk(params, cfg, cache, ctx, ctx_len, jnp.zeros_like(ctx_len))
    zeros = jnp.zeros((b,), jnp.int32)
    init = dict(cache=cache, logits=logits, pos=ctx_len, out=jnp.zeros((b, max_new), jnp.int32),
                count=zeros, done=~live, reason=zeros, msg_q=zeros, ans_q=zeros, rng=rng,
                step=jnp.int32(0))

    def cond(s):
      return (s["step"] < max_new) & ~jnp.all(s["done"])

    def body(s):
      run = ~s["done"]
      rng, sub = jax.random.split(s["rng"])
      ids, _ = sample_token(s["logits"], sub, temperature, top_k, top_p)
      ids = jnp.where(run, ids, 0)
      out = s["out"].at[:, s["step"]].set(ids)
      count = s["count"] + run.astype(jnp.int32)
      msg_hit = tables.msg_hit[s["msg_q"], ids]
      ans_hit = tables.ans_hit[s["ans_q"], ids]
      # the same precedence as engine.decode_until_blocked
      answered = run & ans_hit
      eos_now = run & jnp.isin(ids, eos) & ~answered
      ended = answered | eos_now
      no_room = used + count >= budget
      closed = run & msg_hit & ~ended & ~no_room
      turn_spent = run & ~ended & ~closed & (count >= max_new)
      out_of_budget = run & ~ended & ~closed & no_room
      reason = jnp.select([answered, eos_now, closed, out_of_budget, turn_spent],
                          [engine.FINISH_ANSWER, engine.FINISH_EOS, _STOP_MESSAGE,
                           engine.FINISH_BUDGET, engine.FINISH_TURN], s["reason"])
      done = s["done"] | ended | closed | out_of_budget | turn_spent

      def forward(_):
        return decode_step(params, cfg, s["cache"], ids, s["pos"])

      # skip the forward pass once every row has stopped (its logits would be unused)
      logits, cache = jax.lax.cond(jnp.all(done), lambda _: (s["logits"], s["cache"]),
                                   forward, None)
      return dict(cache=cache, logits=logits, pos=s["pos"] + 1, out=out, count=count,
                  done=done, reason=reason, msg_q=tables.msg_next[s["msg_q"], ids],
                  ans_q=tables.ans_next[s["ans_q"], ids], rng=rng, step=s["step"] + 1)

    s = jax.lax.while_loop(cond, body, init)
    return s["out"], s["count"], s["reason"], s["step"], s["rng"]
  return fn


def reprefill_rollout(model, questions: list[str], helper, cfg, rng=0) -> BaselineEpisodes:
  """Multi-turn episodes by re-prefilling each row's whole context every turn."""
  validate(cfg)
  t_start = time.perf_counter()
  tok = model.tokenizer
  rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
  system = cfg.system_prompt
  prompts = [tok.encode_chat(protocol.slm_messages(q, **({"system": system} if system else {})))
             for q in questions]
  if int(cfg.group_size) != 1:
    raise ValueError("the re-prefill baseline supports group_size=1 only")
  b = len(prompts)
  budget = episode_budget(cfg)
  # the engine's buffer length, for its identical "room for feedback" rule
  max_len = bucket(bucket(max(len(p) for p in prompts)) + budget, 64)
  max_new = int(cfg.max_new_tokens)
  v = model.config.vocab_size
  mn, mh = tagmatch.tag_tables(tok, v, protocol.MESSAGE_CLOSE)
  an, ah = tagmatch.tag_tables(tok, v, protocol.ANSWER_CLOSE)
  tables = engine.TagTables(jnp.asarray(mn), jnp.asarray(mh), jnp.asarray(an), jnp.asarray(ah))
  fn_args = (float(cfg.temperature), int(cfg.top_k), float(cfg.top_p))
  eos_ids = tuple(int(i) for i in tok.eos_ids)

  ctx = [list(p) for p in prompts]
  mask = [[0] * len(p) for p in prompts]
  prompt_len = np.array([len(p) for p in prompts], np.int32)
  live = np.ones((b,), bool)
  finish = [None] * b
  messages = [[] for _ in range(b)]
  replies = [[] for _ in range(b)]
  refusals = [[] for _ in range(b)]
  out = BaselineEpisodes(tokens=None, loss_mask=None, lengths=None, prompt_lengths=prompt_len,
                         num_messages=None, messages=messages, refusals=refusals, finish=finish)
  pool = HelperPool(helper, timeout=cfg.helper_timeout, max_concurrency=cfg.helper_concurrency)
  params = packing.unstack_layers(model.params)  # as sj.rollout decodes
  try:
    while live.any():
      lens = np.array([len(c) for c in ctx], np.int32)
      width = bucket(int(lens[live].max()))
      arr = np.full((b, width), tok.pad_id, np.int32)
      for i in range(b):
        if live[i]:
          arr[i, :lens[i]] = ctx[i]
      ctx_len = np.where(live, lens, 1).astype(np.int32)
      fn = _turn_fn(model.config, bucket(width + max_new, 64), max_new, budget, eos_ids,
                    *fn_args)
      t0 = time.perf_counter()
      sampled, count, reason, steps, rng = fn(
          params, tables, jnp.asarray(arr), jnp.asarray(ctx_len), jnp.asarray(live),
          jnp.asarray(lens - prompt_len), rng)
      sampled, count, reason = np.asarray(sampled), np.asarray(count), np.asarray(reason)
      out.model_time += time.perf_counter() - t0
      out.turns += 1
      out.decode_steps += int(steps)
      out.prefilled_tokens += int(lens[live].sum())

      asked, immediate = [], {}
      for i in np.flatnonzero(live):
        ids = sampled[i, :count[i]].tolist()
        ctx[i] += ids
        mask[i] += [1] * len(ids)
        if reason[i] != _STOP_MESSAGE:
          live[i] = False
          finish[i] = _REASONS[int(reason[i])]
          continue
        action = protocol.parse_slm_turn(tok.decode(ids))
        n_tokens = len(tok.encode(action.text)) if action.kind == "message" else 0
        action = protocol.check_limits(action, n_tokens, cfg.max_message_tokens,
                                       len(messages[i]), cfg.max_turns)
        if action.kind != "message" or action.error is not None:
          refusals[i].append(action.text)
          immediate[i] = protocol.limit_feedback(action.error or protocol.NO_ANSWER)
        else:
          pool.submit(int(i), action.text, list(zip(messages[i], replies[i])))
          messages[i].append(action.text)
          asked.append(int(i))
      t0 = time.perf_counter()
      got = {i: pool.wait(i) for i in asked}
      out.helper_wait_time += time.perf_counter() - t0
      for i in sorted(set(asked) | set(immediate)):
        if i in immediate:
          text, kind = immediate[i], "info"
        else:
          reply = got[i]
          replies[i].append(reply)
          text = protocol.format_feedback(reply, special_tokens=tok.special_tokens)
          kind = reply.kind
        ids = feedback_ids(tok, text, kind, cfg.max_feedback_tokens)
        length = len(ctx[i])
        room = min(max_len - length, budget - (length - int(prompt_len[i]))) - 1
        if room < 8:
          live[i] = False
          finish[i] = "episode_budget"
          continue
        ids = ids[:room]
        ctx[i] += ids
        mask[i] += [0] * len(ids)
  finally:
    pool.close()
  width = max(len(c) for c in ctx)
  out.tokens = np.zeros((b, width), np.int32)
  out.loss_mask = np.zeros((b, width), np.int32)
  for i in range(b):
    out.tokens[i, :len(ctx[i])] = ctx[i]
    out.loss_mask[i, :len(ctx[i])] = mask[i]
  out.lengths = np.array([len(c) for c in ctx], np.int32)
  out.num_messages = np.array([len(m) for m in messages], np.int32)
  out.wall_time = time.perf_counter() - t_start
  return out
