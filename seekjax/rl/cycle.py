"""One RL iteration: rollout -> score -> rewards -> advantages -> reference forward -> PPO.

`rl_iteration` is the whole algorithm in one readable function; everything it calls
is a small pure function chosen by name from the config.
"""
from __future__ import annotations

import dataclasses
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
from seekjax.models import packing
from seekjax.models.api import Model
from seekjax.shapes import bucket
from seekjax.rl import advantages as advantages_lib
from seekjax.rl import losses, records as records_lib, rewards as rewards_lib
from seekjax.rl import step as step_lib, trainable as trainable_lib
from seekjax.rl.settings import RLSettings
from seekjax.rl.update import (_fit, ppo_epochs, reference_pass, update_batch, update_inputs,
                               warm_update)
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
  decoded_frozen: Any = None         # `local_frozen` as the rollout decodes it (`rollout_policy`)

  def __post_init__(self):
    spec = getattr(self.train_step, "spec", None)   # a step from `step.make_train_step`
    wanted = step_lib.scoring_temperature(self.rollout_cfg.temperature)
    if spec is not None and spec.temperature != wanted:
      raise ValueError(
          f"the train step scores tokens at temperature {spec.temperature}, but the rollout "
          f"samples at {self.rollout_cfg.temperature} (score at {wanted}: "
          "StepSpec.temperature = step.scoring_temperature(rollout temperature))")
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


def rollout_policy(ctx: RunContext, trainable) -> Model:
  """The policy (`trainable` merged with the frozen part) placed for a rollout on this
  process's devices (`ctx.rollout_mesh`)."""
  local_trainable = distributed.rollout_params(trainable, ctx.rollout_mesh,
                                               ctx.replicate_for_decode)
  if ctx.spec.mode == "top_n" and packing.pack_pays(ctx.local_frozen):
    # the frozen bottom layers and head packed for the CPU decode once a run
    # (`packing.decode_params`); each rollout packs only the trained top layers
    if ctx.decoded_frozen is None:
      ctx.decoded_frozen = packing.decode_params(ctx.local_frozen)
    top = trainable_lib.compute_view(ctx.spec, local_trainable)
    params = packing.extend_decode_params(ctx.decoded_frozen, top["layers"],
                                          final_norm=top["final_norm"])
  else:
    params = trainable_lib.merge(ctx.spec, local_trainable, ctx.local_frozen)
  return ctx.model.replace(params=params, mesh=ctx.rollout_mesh)


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
  inputs = update_inputs(ctx, episodes, width, k)
  t_inputs = time.perf_counter() - t1
  t1 = time.perf_counter()
  if k == rollout_config.loss_positions(ctx.rollout_cfg):
    warm_update(ctx, trainable, opt_state, ref_trainable, episodes, widths, inputs, k)
  t_warm = time.perf_counter() - t1

  t1 = time.perf_counter()
  episodes = dataclasses.replace(episodes, hidden=None)   # [B, L, D]: not kept past here
  ref_lp = reference_pass(ctx, ref_trainable, inputs)
  ref_lp.block_until_ready()
  t_ref = time.perf_counter() - t1 + t_inputs

  rewards, components, valid = rewards_lib.compute_rewards(
      task_scores=s["score"], num_messages=episodes.num_messages,
      helper_tokens=episodes.helper_tokens, leaks=s["leak"], format_ok=s["format_ok"],
      helper_errors=episodes.helper_errors, cfg=rl.reward, reply_held=s["reply_held"])
  correct = (s["em"] >= 1.0).astype(np.float32)   # the full task score
  rewards, components = rewards_lib.gate_costs(rewards, components, correct, rl.group_size,
                                               rl.reward.cost_gate, gate_leak=rl.reward.gate_leak,
                                               valid=valid)
  if rl.kl_reward_beta:
    kl_term = np.empty(len(inputs.order), np.float32)   # back to the rollout's row order
    kl_term[inputs.order] = -rl.kl_reward_beta * np.asarray(losses.kl_in_reward(
        jnp.asarray(inputs.sampler_lp), jnp.asarray(distributed.local_rows(ctx.mesh, ref_lp)),
        jnp.asarray(inputs.mask), method=rl.kl_method), np.float32)
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
  batch = update_batch(ctx, inputs, ref_lp, adv)
  trainable, opt_state, step_metrics = ppo_epochs(ctx, trainable, opt_state, batch,
                                                  inputs.head_update)
  step_metrics = jax.tree.map(lambda *xs: float(np.mean([float(x) for x in xs])), *step_metrics)
  t_update = time.perf_counter() - t2

  n_tokens = float(inputs.mask.sum())
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
