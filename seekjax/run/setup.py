"""A run's set-up from its config, for the trainer and the evaluation alike.

`build_parts(cfg)` is the whole set-up, in order: the helper probe, the mesh, the batch
split and memory-plan checks, the model, the task splits (fitted to the model's
context), the helper, the leak judge, the trainable spec and the RL settings. The
other functions are its steps, each usable alone (benchmarks, tests); the helper and
judge steps live in `helper_setup`, `task.privacy` in `privacy_setup` (both re-exported
here).
"""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Any, Callable

import jax
import ml_collections
from etils import epath

from seekjax import compile_cache, configlib, plan, protocol
from seekjax.models import sharding
from seekjax.models.api import Model, load_model
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rl.settings import RLSettings, rl_settings
from seekjax.rollout.config import cache_length, episode_budget, from_run_config
from seekjax.run.errors import RunSetupError
from seekjax.run.helper_setup import (build_helper, build_judge, close_helpers,
                                      openai_helper_kwargs, probe_helpers)
from seekjax.run.metrics import log
from seekjax.run.privacy_setup import (apply_privacy, privacy_backend, privacy_cache_path,
                                       privacy_rows)
from seekjax.shapes import bucket
from seekjax.tasks import (TemplatePrivacySynthesizer, split_by_entity, task_examples,
                           world_facts_examples)
from seekjax.tasks.world_questions import SELF_CONTAINED_QTYPES, WORLD_QTYPES


def build_mesh(cfg):
  return sharding.make_mesh(tuple(cfg.model.mesh_shape))


def build_model(cfg, mesh=None):
  path = cfg.model.path
  from seekjax.models.embedded import EMBEDDED  # pylint: disable=import-outside-toplevel
  if path not in EMBEDDED and path != "tiny-random" and not os.path.exists(path):
    raise RunSetupError(f"config.model.path: {path!r} does not exist")
  return load_model(path, dtype=cfg.model.dtype, mesh=mesh)


def _world_mix(seed: int, private_fraction: float) -> list[dict]:
  """World-facts questions; a fraction of the helper-dependent ones carry private details."""
  public = world_facts_examples(seed)
  rng = random.Random(seed)
  synth = TemplatePrivacySynthesizer(seed)
  out = []
  for ex in public:
    if ex["qtype"] not in SELF_CONTAINED_QTYPES and rng.random() < private_fraction:
      out.append(synth.synthesize_one(ex))
    else:
      out.append(ex)
  return out


def build_task(cfg, seed: int, workdir=None, should_stop=None):
  """Returns (train_examples, eval_examples). Split by entity, never only by id; then
  `task.privacy` gives a share of each split private variants (`apply_privacy`).

  workdir: where `task.privacy='llm'` caches its rows (None: no cache).
  """
  name = cfg.task.name
  if cfg.task.privacy != "none" and name in ("world_facts_mix", "world_facts_private"):
    raise RunSetupError(f"config.task.privacy: task {name!r} has its own template privacy "
                        "variants; use task.privacy='none', or task.name='world_facts'")
  if name == "world_facts_mix":
    examples = _world_mix(seed, cfg.task.private_fraction)
  else:
    kwargs = {"seed": seed}
    if cfg.task.path:
      if not os.path.exists(cfg.task.path):
        raise RunSetupError(f"config.task.path: {cfg.task.path!r} does not exist")
      kwargs = {"path": cfg.task.path}
    try:
      examples = task_examples(name, **kwargs)
    except ValueError as e:
      raise RunSetupError(f"config.task.name: {e}") from None
  train, evaluation = split_by_entity(examples, eval_fraction=cfg.task.eval_fraction)
  rng = random.Random(seed)
  rng.shuffle(train)
  rng.shuffle(evaluation)
  return apply_privacy(cfg, train[:cfg.task.max_train], evaluation[:cfg.task.max_eval], seed,
                       workdir, should_stop)


def rl_updates(cfg) -> int:
  """Optimizer updates in a whole run: one per mini-batch, per epoch, per RL step."""
  return cfg.rl.steps * cfg.rl.num_epochs * max(cfg.rl.mini_batches, 1)


def make_rl_optimizer(cfg):
  """(optimizer, lr schedule) of the RL updates. The trainer steps with it, and restoring
  a checkpoint (trainer or evaluation) builds its opt_state template with it."""
  o = cfg.optim
  return step_lib.make_optimizer(o.lr, max(rl_updates(cfg), 1), o.warmup_steps, o.weight_decay,
                                 o.clip_norm, o.b1, o.b2)


def maybe_initialize_distributed(cfg) -> None:
  """Start JAX's multi-host runtime when the config or the environment asks for it."""
  d = cfg.distributed
  if not (d.initialize or os.environ.get("SEEKJAX_DISTRIBUTED") == "1"):
    return
  kwargs = {}
  if d.coordinator_address:
    kwargs = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                  process_id=d.process_id)
  # CPU hosts need a collectives backend (harmless elsewhere); this must precede any
  # call that initializes a JAX backend.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


# ----------------------------------------------------------------------------- the run's parts


def trainable_spec(cfg) -> trainable_lib.Trainable:
  """Which parameters the run trains (config.model's trainable, top_n and LoRA keys)."""
  m = cfg.model
  return trainable_lib.Trainable(mode=m.trainable, top_n=m.top_n, lora_rank=m.lora_rank,
                                 lora_alpha=m.lora_alpha, lora_targets=tuple(m.lora_targets),
                                 dtype=m.dtype, master_dtype=m.master_dtype)


def rollout_settings(cfg) -> ml_collections.ConfigDict:
  """The rollout settings: config.rollout, plus the helper pool's keys of config.helper."""
  return from_run_config(cfg, group_size=cfg.rl.group_size)


def fit_to_context(examples: list[dict], model, rollout_cfg, split: str) -> tuple[list[dict], int]:
  """(the examples whose prompt plus a full episode fits the model's context, the length of
  the longest prompt kept; 0 when none is).

  The rollout refuses a batch holding one prompt that does not fit, so such a row (a
  1 MB question, say) is skipped here and counted in one log line, like a malformed row.
  Each prompt is encoded once, as the rollout encodes it, and sized by the rollout's own
  `cache_length`.
  """
  limit = model.config.max_position_embeddings
  system = {"system": rollout_cfg.system_prompt} if rollout_cfg.system_prompt else {}
  lengths = [len(model.tokenizer.encode_chat(protocol.slm_messages(ex["question"], **system)))
             for ex in examples]
  fits = [cache_length([n], rollout_cfg) <= limit for n in lengths]
  kept = [ex for ex, ok in zip(examples, fits) if ok]
  if len(kept) < len(examples):
    log(f"task: skipped {len(examples) - len(kept)} of {len(examples)} {split} examples whose "
        f"prompt + episode ({episode_budget(rollout_cfg)} tokens) exceeds the model's context "
        f"({limit} tokens)")
  return kept, max((n for n, ok in zip(lengths, fits) if ok), default=0)


def split_validation(train: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict]]:
  """(train without the validation set, the validation set): `size` examples drawn from
  the train split by a seeded shuffle, kept in the train split's order. The learning
  curve is measured on them; the cold start and RL never see them."""
  if size <= 0:
    return train, []
  if size >= len(train):
    raise RunSetupError(f"config.task.val_size: {size} validation examples leave none of the "
                        f"{len(train)} train examples to train on")
  chosen = set(random.Random(f"validation:{seed}").sample(range(len(train)), size))
  return ([e for i, e in enumerate(train) if i not in chosen],
          [e for i, e in enumerate(train) if i in chosen])


def check_validation(cfg) -> None:
  """The learning curve (train.eval_every) needs a validation set (task.val_size), and
  selecting the policy on it (train.select_checkpoint="best_val") needs the curve."""
  if cfg.train.eval_every and not cfg.task.val_size:
    raise configlib.ConfigError("config.train.eval_every: needs a validation set; set "
                                "task.val_size > 0 (questions set aside from the train split)")
  if cfg.train.select_checkpoint == "best_val" and not cfg.train.eval_every:
    raise configlib.ConfigError('config.train.select_checkpoint="best_val": needs the '
                                "validation curve; set train.eval_every > 0 and task.val_size > 0")


def check_batch_fits(cfg, mesh) -> None:
  """The step's episodes shard over the mesh and split into mini- and micro-batches."""
  rows = cfg.rl.questions_per_step * cfg.rl.group_size
  sharding.check_batch(mesh, rows, "rl.questions_per_step * rl.group_size")
  per_mini = rows // max(cfg.rl.mini_batches, 1)
  if rows % max(cfg.rl.mini_batches, 1) or per_mini % cfg.rl.micro_batches:
    raise configlib.ConfigError(
        f"config.rl: {rows} episodes per step must split into mini_batches="
        f"{cfg.rl.mini_batches} x micro_batches={cfg.rl.micro_batches}")


def make_step(settings: RLSettings, model_cfg, spec: trainable_lib.Trainable, optimizer,
              remat: bool = False, *, rollout_temperature: float):
  """The jitted PPO step (`step.make_train_step`) of these settings, scoring tokens at the
  temperature the rollout samples them at (`step.scoring_temperature`)."""
  step_spec = step_lib.StepSpec(
      model=model_cfg, trainable=spec, epsilon=settings.epsilon,
      epsilon_high=settings.epsilon_high, aggregation=settings.aggregation,
      kl_method=settings.kl_method, kl_beta=settings.kl_loss_beta,
      micro_batches=settings.micro_batches, remat=remat,
      temperature=step_lib.scoring_temperature(rollout_temperature))
  return step_lib.make_train_step(step_spec, optimizer)


def check_demos_path(cfg) -> None:
  """A cold start from `sft.demos_path` that names no file ends the run before the model
  loads (one line); its rows are read and checked by the cold start."""
  path = cfg.sft.get("demos_path")
  if cfg.sft.steps > 0 and path and not epath.Path(path).is_file():
    raise RunSetupError(f"config.sft.demos_path: {path!r} is not a file")


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a run is built from; the trainer and the evaluation both start here."""

  mesh: Any                          # jax.sharding.Mesh
  model: Model
  train_examples: list               # [] for an evaluation
  eval_examples: list
  helper: Any                        # a seekjax.helpers.Helper
  judge: Any                         # RuleLeakJudge | LLMLeakJudge
  spec: trainable_lib.Trainable
  rollout_cfg: ml_collections.ConfigDict
  settings: RLSettings
  val_examples: list = dataclasses.field(default_factory=list)   # task.val_size, from train


def build_parts(cfg, *, training: bool = True,
                should_stop: Callable[[], None] = lambda: None, workdir=None) -> Parts:
  """The run's parts, in the order that fails fastest (a dead helper before a model load).

  training: the trainer's checks (helper probe, batch split, memory plan) and both
  splits; False (evaluation): the held-out split only.
  should_stop: called between stages and while the probe waits; raises to stop.
  workdir: the run's; `task.privacy='llm'` caches its rows there.
  Raises RunSetupError / ConfigError (one line) for a config that cannot run.
  """
  compile_cache.enable()   # before anything compiles (seekjax/compile_cache.py)
  if training:
    probe_helpers(cfg, should_stop=should_stop)   # a dead helper ends the run here
  mesh = build_mesh(cfg)
  if training:
    check_batch_fits(cfg, mesh)
    check_validation(cfg)
    plan.check_devices(cfg)   # PlanError (a ConfigError) when it cannot fit; CPU: skipped
    check_demos_path(cfg)
  should_stop()
  model = build_model(cfg, mesh)
  if model.tokenizer is None:
    raise RunSetupError(f"config.model.path: {cfg.model.path!r} has no tokenizer "
                        "(tokenizer.json); the rollout needs one")
  rollout_cfg = rollout_settings(cfg)
  train_ex, eval_ex = build_task(cfg, cfg.seed, workdir, should_stop)
  train_ex, train_longest = (fit_to_context(train_ex, model, rollout_cfg, "train") if training
                              else ([], 0))
  train_ex, val_ex = split_validation(train_ex, cfg.task.val_size if training else 0, cfg.seed)
  eval_ex, eval_longest = fit_to_context(eval_ex, model, rollout_cfg, "eval")
  if training and not train_ex:
    raise RunSetupError(f"config.task: task {cfg.task.name!r} left no training examples")
  if not training and not eval_ex:
    raise RunSetupError("config.task: the eval split is empty")
  # One prompt width for every rollout of the run (hence one cache length and one compiled
  # decode loop, whichever questions a step draws): the longest prompt, bucketed.
  longest = max(train_longest, eval_longest)
  rollout_cfg.prompt_width = bucket(longest) if longest else 0
  log(f"task {cfg.task.name}: " + (f"{len(train_ex)} train / " if training else "")
      + (f"{len(val_ex)} validation / " if val_ex else "") + f"{len(eval_ex)} eval examples")
  helper = build_helper(cfg.helper, model)
  judge = build_judge(cfg, helper)
  return Parts(mesh=mesh, model=model, train_examples=train_ex, eval_examples=eval_ex,
               helper=helper, judge=judge, spec=trainable_spec(cfg), rollout_cfg=rollout_cfg,
               settings=rl_settings(cfg), val_examples=val_ex)


__all__ = ["Parts", "RunSetupError", "WORLD_QTYPES", "apply_privacy", "build_helper",
           "build_judge", "build_mesh", "build_model", "build_parts", "build_task",
           "check_batch_fits", "check_validation", "close_helpers", "fit_to_context",
           "make_rl_optimizer", "make_step",
           "maybe_initialize_distributed", "openai_helper_kwargs", "privacy_backend",
           "privacy_cache_path", "privacy_rows", "probe_helpers", "rl_updates", "rollout_settings",
           "split_validation", "trainable_spec"]
