"""One RL iteration: rollout -> score -> rewards -> advantages -> reference forward -> PPO.

`rl_iteration` is the whole algorithm in one readable function; everything it calls
is a small pure function chosen by name from the config.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from seekjax import compiles, distributed
from seekjax.eval.metrics import feedback_has_answer, judge_many
from seekjax.helpers.base import Helper, usage_totals
from seekjax.models.api import Model
from seekjax.shapes import bucket
from seekjax.rl import advantages as advantages_lib
from seekjax.rl import losses, records as records_lib, rewards as rewards_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rl import step as step_lib
from seekjax.rl.settings import RLSettings
from seekjax.rl.step import Batch, bottom_hidden, reference_logprobs
from seekjax.rollout import config as rollout_config, engine, rollout
from seekjax.tasks import f1, task_score


@dataclasses.dataclass
class RunContext:
  """What stays fixed across iterations."""

  settings: RLSettings
  model: Model                       # frozen params live in `frozen`
  spec: trainable_lib.Trainable
  frozen: Any                        # params pytree of the frozen part
  helper: Helper
  judge: Any                         # RuleLeakJudge | LLMLeakJudge (`judge` / `ajudge`)
  rollout_cfg: ml_collections.ConfigDict
  train_step: Callable               # from step.make_train_step
  mesh: Mesh | None = None           # the global mesh the update runs on
  local_frozen: Any = None           # `frozen` placed for the rollout (`rollout_mesh`)
  should_stop: Callable[[], None] | None = None   # raises to abandon the step's helper waits
  rollout_mesh: Mesh | None = None   # this process's devices (`distributed.local_mesh`)
  redact_private: bool = True        # private facts hidden in the episode records

  def __post_init__(self):
    if self.rollout_mesh is None:
      self.rollout_mesh = distributed.local_mesh(self.mesh)
    if self.local_frozen is None:
      self.local_frozen = distributed.rollout_params(self.frozen, self.rollout_mesh,
                                                     self.replicate_for_decode)

  @property
  def replicate_for_decode(self) -> bool:
    """Whether the rollout holds whole params on every device: when it decodes per
    shard (`engine.per_shard_mesh`: several row shards, tensor axis 1), as the memory
    plan's "rollout params" row assumes. With rollout.per_shard_decode=False the decode
    keeps them split by `sharding.PARAM_RULES` (one SPMD loop)."""
    return bool(self.rollout_cfg.per_shard_decode
                and engine.per_shard_mesh(self.rollout_mesh) is not None)


class HelperFailure(RuntimeError):
  """More than helper.max_error_share of a step's helper calls failed: the step is not
  trained on (its rewards would measure the outage, not the policy)."""


def check_helper_failures(faults: dict, max_share: float) -> None:
  """Raise HelperFailure when more than `max_share` of a rollout's helper calls failed.

  faults: the rollout's helper-pool stats (calls, failed, failed_<kind>; see
  `seekjax.helpers.faults.COUNTERS`). With several processes the share is over all of
  them, so every process decides alike.
  """
  shares = distributed.mean_over_processes(
      {"calls": float(faults.get("calls", 0)), "failed": float(faults.get("failed", 0))})
  if not shares["calls"] or shares["failed"] <= max_share * shares["calls"]:
    return
  kinds = sorted(((k[len("failed_"):], v) for k, v in faults.items()
                  if k.startswith("failed_") and v), key=lambda kv: -kv[1])
  here = ", ".join(f"{k} x{int(v)}" for k, v in kinds[:3])
  raise HelperFailure(
      f"{shares['failed'] / shares['calls']:.0%} of the step's helper calls failed "
      f"({int(faults.get('failed', 0))} of {int(faults.get('calls', 0))} here: {here}), "
      f"more than helper.max_error_share={max_share:g}")


def judge_usage(judge) -> dict:
  """The LLM leak judge's calls and served tokens so far (`LLMLeakJudge.usage`); {} for a
  judge that calls no model."""
  return judge.usage() if hasattr(judge, "usage") else {}


def score_episodes(episodes, examples, score: str, judge, should_stop=None) -> dict:
  """Per-episode task score, leak flag and format flag (numpy arrays [B])."""
  b = len(episodes)
  scores = np.zeros(b, np.float32)
  em = np.zeros(b, np.float32)
  leaks = np.zeros(b, np.float32)
  format_ok = np.zeros(b, np.float32)
  for i in range(b):
    ex = examples[int(episodes.question_index[i])]
    ans = episodes.answers[i]
    em[i] = task_score(ans, ex)
    scores[i] = {"em": em[i], "f1": f1(ans, ex["answers"]) if ex["answers"] else em[i],
                 "task": em[i]}[score]
    format_ok[i] = float(ans is not None)
  # Episodes that sent messages about an example with private facts; an async (LLM)
  # judge sees them all concurrently, on one event loop.
  judged = [i for i in range(b) if episodes.messages[i]
            and examples[int(episodes.question_index[i])]["private_facts"]]
  verdicts = judge_many(judge, [
      (episodes.messages[i], examples[int(episodes.question_index[i])]["private_facts"])
      for i in judged], should_stop)
  for i, verdict in zip(judged, verdicts):
    leaks[i] = float(verdict.leak)
  # whether a helper reply held a gold answer (the reward's reply_credit), as evaluation's
  # asking split reads it off the transcript
  reply_held = np.array([bool(feedback_has_answer(
      episodes.transcripts[i], "answer", episodes.messages[i],
      examples[int(episodes.question_index[i])]["answers"])) for i in range(b)], np.float32)
  return dict(score=scores, em=em, leak=leaks, format_ok=format_ok, reply_held=reply_held)


def _fit(x, width):
  """x [B, L, ...] -> [B, width, ...]: cut, or zero-padded on the right."""
  pad = [(0, 0), (0, max(width - x.shape[1], 0))] + [(0, 0)] * (x.ndim - 2)
  return np.pad(x[:, :width], pad)


def frozen_layers(spec: trainable_lib.Trainable, num_layers: int) -> int | None:
  """How many bottom layers stay frozen (top_n mode: the first L - top_n), else None."""
  return num_layers - spec.top_n if spec.mode == "top_n" else None


def rollout_capture_layer(ctx: RunContext) -> int | None:
  """The layer count the training rollout keeps the residual stream after (top_n with
  rl.reuse_rollout_hidden): the frozen bottom's output, which the rollout computed while
  it sampled, so the reference and the update need not run those layers again."""
  if not ctx.settings.reuse_rollout_hidden:
    return None
  return frozen_layers(ctx.spec, ctx.model.config.num_layers)


def reference_micro_batches(rows: int, rl: RLSettings) -> int:
  """Forward passes of the reference over a step's `rows` episodes: as many as the update
  makes per epoch (mini_batches x micro_batches), so its micro-batches have the update's
  size (fewer when that count does not divide the rows)."""
  return math.gcd(rows, rl.mini_batches * rl.micro_batches)


def rollout_policy(ctx: RunContext, trainable) -> Model:
  """The policy (`trainable` merged with the frozen part) placed for a rollout on this
  process's devices (`ctx.rollout_mesh`)."""
  local_trainable = distributed.rollout_params(trainable, ctx.rollout_mesh,
                                               ctx.replicate_for_decode)
  params = trainable_lib.merge(ctx.spec, local_trainable, ctx.local_frozen)
  return ctx.model.replace(params=params, mesh=ctx.rollout_mesh)


def update_inputs(ctx: RunContext, episodes, width: int, k: int):
  """The update's inputs at `width` tokens a row and K = min(k, width) loss positions:
  (tokens, targets) on the global mesh, (mask, sampler log-probs) of this process's rows
  [B, K] in numpy, and the frozen bottom's output (the rollout's, or computed here in
  top_n mode; None otherwise) on the global mesh."""
  targets, mask = step_lib.compact_positions(_fit(episodes.loss_mask, width),
                                             minimum=min(k, width))
  sampler_lp = step_lib.gather_positions(_fit(episodes.logprobs, width), targets)
  # From here on the rows live on the global mesh, split over its batch axes as the
  # update splits them.
  tokens, targets_g = distributed.global_batch(
      ctx.mesh, (_fit(episodes.tokens, width).astype(np.int32), targets))
  hidden = None
  if episodes.hidden is not None:  # the frozen bottom's output, as the rollout computed it
    (hidden,) = distributed.global_batch(ctx.mesh, (_fit(episodes.hidden, width),))
    hidden = jnp.asarray(hidden)
  elif ctx.spec.mode == "top_n":  # frozen bottom layers: run them once for ref and all epochs
    hidden = bottom_hidden(ctx.frozen, tokens, cfg=ctx.model.config)
  return tokens, targets_g, mask, sampler_lp, hidden


def update_batch(ctx: RunContext, tokens, targets_g, mask, sampler_lp, ref_lp, adv, hidden):
  """The PPO `Batch` on the global mesh from `update_inputs`, the reference log-probs and
  this process's advantages [B]."""
  mask_g, sampler_g, adv_g = distributed.global_batch(
      ctx.mesh, (mask, np.asarray(sampler_lp, np.float32), np.asarray(adv, np.float32)))
  return Batch(tokens=jnp.asarray(tokens), loss_mask=jnp.asarray(mask_g),
               old_logprobs=jnp.asarray(sampler_g), ref_logprobs=ref_lp,
               advantages=jnp.asarray(adv_g), hidden=hidden, targets=jnp.asarray(targets_g))


def ppo_epochs(ctx: RunContext, trainable, opt_state, batch: Batch):
  """rl.num_epochs passes of rl.mini_batches optimizer steps over `batch`.
  Returns (trainable, opt_state, [metrics of each step])."""
  out = []
  for _ in range(ctx.settings.num_epochs):
    for mb in mini_batches(batch, ctx.settings.mini_batches):
      trainable, opt_state, m = ctx.train_step(trainable, ctx.frozen, opt_state, mb)
      out.append(m)
  return trainable, opt_state, out


def mini_batches(batch: Batch, m: int) -> list[Batch]:
  """`batch` cut into m consecutive slices of rows (one optimizer step each)."""
  n = batch.tokens.shape[0]
  return [jax.tree.map(lambda x, i=i: x[i * n // m:(i + 1) * n // m], batch) for i in range(m)]


_WARM_UPDATES: set = set()   # (train_step, rows, width, k) compiled in this process


def warm_update(ctx: RunContext, trainable, opt_state, ref_trainable, episodes, widths,
                width, k):
  """Compile the reference pass and the update at every width of the ladder (`widths`)
  but this step's own (`width`), for k loss positions, on this step's episodes cut or
  padded to each width, so that no later step compiles when its episodes land on another
  width. Ahead of time (`lower(...).compile()` on the arguments the step will pass): jax
  keeps the executables for the later calls, and nothing runs, so a run whose programs
  come from the persistent cache pays next to nothing here. The caller warms only the
  config's own k: a step with more loss positions (retried messages) is rare, and
  compiles its one program when met."""
  if not int(getattr(ctx.rollout_cfg, "prompt_width", 0) or 0):
    return   # outside a run the widths are every power of two: each compiles when met
  rows = episodes.tokens.shape[0]
  key = lambda w: (id(ctx.train_step), rows, w, k)  # noqa: E731
  todo = [w for w in widths if w != width and key(w) not in _WARM_UPDATES]
  _WARM_UPDATES.add(key(width))   # this step's own update compiles it
  opt_state = distributed.on_mesh(ctx.mesh, opt_state)   # as `rl_iteration` passes it
  for w in todo:
    tokens, targets_g, mask, sampler_lp, hidden = update_inputs(ctx, episodes, w, k)
    ref = reference_logprobs.lower(
        ref_trainable, ctx.frozen, tokens, hidden, spec_trainable=ctx.spec,
        cfg=ctx.model.config, targets=targets_g,
        micro_batches=reference_micro_batches(tokens.shape[0], ctx.settings),
        mesh=ctx.mesh).compile()
    # zeros where the reference log-probs will be, placed as the compiled pass returns them
    # (a jitted output is committed to its placement when any argument is)
    ref_lp = jnp.zeros(ref.out_info.shape, ref.out_info.dtype)
    if any(getattr(x, "committed", False)
           for x in jax.tree.leaves((ref_trainable, ctx.frozen, tokens, hidden, targets_g))):
      ref_lp = jax.device_put(ref_lp, ref.output_shardings)
    batch = update_batch(ctx, tokens, targets_g, mask, sampler_lp, ref_lp,
                         np.zeros(len(mask), np.float32), hidden)
    shapes = set()
    for mb in mini_batches(batch, ctx.settings.mini_batches):
      if mb.tokens.shape not in shapes:   # later epochs and equal slices reuse the program
        shapes.add(mb.tokens.shape)
        step = ctx.train_step.lower(trainable, ctx.frozen, opt_state, mb).compile()
        if ctx.mesh is not None:
          # later steps pass the state as the step returns it, placed on the mesh by the
          # step's own rules (not always as given here): compile for that too
          new_state, new_opt, _ = step.out_info
          ctx.train_step.lower(new_state, ctx.frozen, new_opt, mb).compile()
    _WARM_UPDATES.add((id(ctx.train_step), rows, w, k))


def rl_iteration(ctx: RunContext, trainable, opt_state, ref_trainable, examples, rng,
                 step: int = 0):
  """Returns (trainable, opt_state, metrics dict, episodes, records).

  records: one dict per local episode (`records.episode_records`), `step` in each.

  The rollout and scoring run on this process's questions, on its own devices (rows
  split over them); the reference forward and the PPO update run on the global mesh
  over every process's episodes, in micro-batches.
  Raises HelperFailure, before any update, when too many helper calls failed; and
  whatever `ctx.should_stop` raises, when a stop signal comes while helpers are awaited.
  """
  rl = ctx.settings
  t0 = time.perf_counter()
  compiled_before = compiles.snapshot()
  policy = rollout_policy(ctx, trainable)
  rng = jax.random.fold_in(rng, jax.process_index())
  episodes = rollout(policy, [e["question"] for e in examples], ctx.helper, ctx.rollout_cfg, rng,
                     should_stop=ctx.should_stop, capture_layer=rollout_capture_layer(ctx))
  del policy
  t_rollout = time.perf_counter() - t0
  check_helper_failures(episodes.helper_faults, rl.max_error_share)

  judged_before = judge_usage(ctx.judge)
  s = score_episodes(episodes, examples, rl.score, ctx.judge, ctx.should_stop)
  judged = {k: v - judged_before[k] for k, v in judge_usage(ctx.judge).items()}
  # The update's shapes come from the config, not from this step's episodes, so each
  # compiles once: its width is one of `rollout.config.update_widths` (a ladder up to the
  # rollout's buffer length, all compiled on the first step by `warm_update`), and the loss
  # reads only SLM-sampled positions, packed to K per row (`rollout.config.loss_positions`,
  # the next bucket up only for an episode with more) so the LM head skips prompt,
  # feedback and padding.
  longest = distributed.max_over_processes(int(episodes.lengths.max()))
  widths = rollout_config.update_widths(
      distributed.max_over_processes(episodes.tokens.shape[1]), ctx.rollout_cfg)
  width = next((w for w in widths if w >= longest), widths[-1])
  k = bucket(distributed.max_over_processes(
      max(int(_fit(episodes.loss_mask, width).sum(axis=1).max()), 1)),
      rollout_config.loss_positions(ctx.rollout_cfg))
  t1 = time.perf_counter()
  if k == rollout_config.loss_positions(ctx.rollout_cfg):
    warm_update(ctx, trainable, opt_state, ref_trainable, episodes, widths, width, k)
  t_warm = time.perf_counter() - t1

  t1 = time.perf_counter()
  tokens, targets_g, mask, sampler_lp, hidden = update_inputs(ctx, episodes, width, k)
  episodes = dataclasses.replace(episodes, hidden=None)   # [B, L, D]: not kept past here
  ref_lp = reference_logprobs(ref_trainable, ctx.frozen, tokens, hidden,
                              spec_trainable=ctx.spec, cfg=ctx.model.config, targets=targets_g,
                              micro_batches=reference_micro_batches(tokens.shape[0], rl),
                              mesh=ctx.mesh)
  ref_lp.block_until_ready()
  t_ref = time.perf_counter() - t1

  rewards, components, valid = rewards_lib.compute_rewards(
      task_scores=s["score"], num_messages=episodes.num_messages,
      helper_tokens=episodes.helper_tokens, leaks=s["leak"], format_ok=s["format_ok"],
      helper_errors=episodes.helper_errors, cfg=rl.reward, reply_held=s["reply_held"])
  correct = (s["em"] >= 1.0).astype(np.float32)   # the full task score
  rewards, components = rewards_lib.gate_costs(rewards, components, correct, rl.group_size,
                                               rl.reward.cost_gate, gate_leak=rl.reward.gate_leak,
                                               valid=valid)
  if rl.kl_reward_beta:
    kl_term = -rl.kl_reward_beta * np.asarray(losses.kl_in_reward(
        jnp.asarray(sampler_lp), jnp.asarray(distributed.local_rows(ctx.mesh, ref_lp)),
        jnp.asarray(mask), method=rl.kl_method), np.float32)
    rewards = rewards + kl_term
    components = dict(components, kl_reward=kl_term)
  adv_fn = advantages_lib.get_advantage_fn(rl.advantage)
  adv = np.asarray(adv_fn(jnp.asarray(rewards), rl.group_size, whiten=rl.whiten,
                          valid=jnp.asarray(valid, jnp.float32)))
  adv = adv * np.asarray(valid, np.float32)
  records = records_lib.episode_records(step, episodes, examples, s, rewards, components, adv,
                                        valid, rl.group_size, ctx.redact_private)

  t2 = time.perf_counter()
  opt_state = distributed.on_mesh(ctx.mesh, opt_state)   # a fresh count is not yet there
  batch = update_batch(ctx, tokens, targets_g, mask, sampler_lp, ref_lp, adv, hidden)
  trainable, opt_state, step_metrics = ppo_epochs(ctx, trainable, opt_state, batch)
  step_metrics = jax.tree.map(lambda *xs: float(np.mean([float(x) for x in xs])), *step_metrics)
  t_update = time.perf_counter() - t2

  n_tokens = float(mask.sum())
  metrics = dict(step_metrics)
  local = dict(
      reward=float(np.mean(rewards)), em=float(s["em"].mean()),
      messages_per_episode=float(episodes.num_messages.mean()),
      leak_rate=float(s["leak"].mean()), format_ok=float(s["format_ok"].mean()),
      reply_held=float(s["reply_held"].mean()),
      helper_errors=float(episodes.helper_errors.sum()),
      helper_tokens=float(episodes.helper_tokens.mean()),
      valid_fraction=float(np.mean(valid)),
      groups_without_correct=float(np.mean(
          rewards_lib.group_success(correct, rl.group_size, valid) == 0)),
      **rewards_lib.group_spread(rewards, rl.group_size, valid),
      time_rollout=t_rollout, time_helper_wait=float(episodes.helper_wait_time),
      time_reference=t_ref, time_update=t_update, time_warm_update=t_warm,
      step_time=time.perf_counter() - t0,
      train_tokens_per_s=n_tokens * rl.num_epochs / max(t_update, 1e-9),
      episode_tokens=float(episodes.lengths.sum() - episodes.prompt_lengths.sum()))
  compiled, names = compiles.since(compiled_before)
  local.update(compiled)
  if names:   # which functions compiled, for the run log (not averaged over processes)
    metrics["compiled"] = ",".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(names.items()))
  for k, v in components.items():
    local[f"reward/{k}"] = float(np.mean(v))
  local.update(records_lib.asking_push(components, adv, episodes.num_messages > 0,
                                       rl.group_size, valid))
  for k, v in episodes.phase_times.items():   # where the rollout's time went
    local[f"rollout/{k}"] = float(v)
  for k, v in episodes.helper_faults.items():  # fault counts by kind, for the run log
    if isinstance(v, (int, float)):
      local[f"helper/{k}"] = float(v)
  metrics.update(distributed.mean_over_processes(local))
  # the helper's served tokens and the LLM judge's calls and tokens, summed over hosts
  usage = distributed.mean_over_processes(dict(usage_totals(episodes.replies), **judged))
  metrics.update({k: v * jax.process_count() for k, v in usage.items()})
  return trainable, opt_state, metrics, episodes, records
