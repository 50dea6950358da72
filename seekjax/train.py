"""`python -m seekjax.train --config=configs/X.py --workdir=DIR [--config.a.b=v]`.

Read top to bottom: set up (config, workdir check, model, data, helper), write the
workdir's config, restore (or fork, or cold-start), then the RL loop (one `rl_iteration`
per step), with metrics, checkpoints and a clean exit on SIGTERM (how TPU preemption
notices arrive). SIGTERM is handled from the start: during the RL loop the current step
finishes and is checkpointed; before it (set-up, cold start) the run stops at once,
keeping the checkpoints it had, and exits cleanly.

Nothing is written to the workdir (local or gs://, `run/workdir.py`) until set-up has
succeeded, so a run that fails there never blocks its corrected rerun. A step whose loss,
gradient norm or reward is not finite stops the run before that state is saved
(`run/finite.py`). `--fork_from=DIR` starts a new workdir from DIR's latest checkpoint.
"""
from __future__ import annotations

import json
import signal
import sys
import time

import jax

from seekjax import configlib, protocol
from seekjax.models import sharding
from seekjax.models.errors import ModelLoadError
from seekjax.models.generate import bucket
from seekjax.run import setup, checkpoint, metrics as metrics_lib
from seekjax.rl import cycle
from seekjax import distributed
from seekjax.run import finite
from seekjax.run import workdir as workdir_lib
from seekjax.coldstart.cold_start import cold_start
from seekjax.run.metrics import log
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rollout.config import episode_budget, from_run_config
from seekjax.tasks import make_pipeline


WorkdirError = workdir_lib.WorkdirError


class Stopped(Exception):
  """A stop signal arrived before the RL loop (set-up or cold start): nothing new to save."""

  def __init__(self, phase: str):
    super().__init__(phase)
    self.phase = phase


class StopSignal:
  """The SIGTERM and SIGINT handler of a run: records the signal. `check` raises Stopped;
  the run calls it between set-up stages and cold-start steps, and the helper pool calls
  it while a step waits on the helper (the step is then dropped, its calls cancelled).
  Otherwise the RL loop reads `signal` after each step. A second SIGINT stops at once
  (KeyboardInterrupt), without a checkpoint."""

  def __init__(self):
    self.signal: str | None = None
    self.phase = "set-up"

  def __call__(self, signum, _frame):
    name = signal.Signals(signum).name
    if name == "SIGINT" and self.signal == "SIGINT":
      log("second SIGINT: stopping now, without a checkpoint")
      raise KeyboardInterrupt
    self.signal = self.signal or name
    if self.phase == "rl":
      log(f"{name} received: finishing this step (or dropping it, if it waits on the "
          "helper), then saving a checkpoint")
    else:
      log(f"{name} received during the {self.phase}: stopping")

  def check(self) -> None:
    if self.signal is not None:
      raise Stopped(self.phase)


# ----------------------------------------------------------------------------- set-up


def _steps_in(workdir) -> list[int]:
  """The checkpoint steps listed in a workdir (a cheap look, before orbax opens it)."""
  path = workdir_lib.as_path(workdir) / "checkpoints"
  try:
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() \
        else []
  except Exception as e:  # pylint: disable=broad-except
    raise WorkdirError(f"{path}: cannot list ({type(e).__name__})") from None


def check_workdir(workdir: str, cfg, overwrite: bool, fork_from: str | None = None) -> dict:
  """Check, before any work, that the workdir can be written and holds this run (or none).

  Writes nothing (a probe file is removed again). Returns the plan `write_config` needs:
  {saved, changed, created}. With `fork_from`, that workdir must hold a checkpoint.
  """
  created = not workdir_lib.check_writable(workdir)
  resolved = configlib.config_to_dict(cfg)
  try:
    saved = workdir_lib.read_config(workdir)
  except WorkdirError:
    if not overwrite:
      raise
    saved = None   # --overwrite replaces an unreadable config.json
  if saved is not None:
    saved = configlib.fill_added_keys(saved, resolved, configlib.base_defaults())
  if fork_from is not None:
    if workdir_lib.as_path(fork_from) == workdir_lib.as_path(workdir):
      raise WorkdirError("--fork_from: names the --workdir itself; resume it without the flag")
    if not _steps_in(fork_from):
      raise WorkdirError(f"--fork_from={fork_from}: holds no checkpoint")
  changed = workdir_lib.check_same_run(workdir, saved, resolved, overwrite=overwrite,
                                       has_checkpoint=bool(_steps_in(workdir)),
                                       fork_from=fork_from)
  return dict(saved=saved, changed=changed, created=created)


def write_config(workdir: str, cfg, plan: dict, step: int | None = None,
                 forked_from: dict | None = None) -> None:
  """Write config.json (and its YAML twin): the resolved config plus the run's record
  (an `rl.steps` change at the resumed `step`, a fork's source). Process 0 only."""
  if jax.process_index() != 0:
    return
  record = workdir_lib.run_record(plan["saved"], configlib.config_to_dict(cfg), plan["changed"],
                                  step, forked_from)
  path = workdir_lib.as_path(workdir)
  workdir_lib.write_text(path / "config.json",
                         json.dumps(record, indent=2, sort_keys=True) + "\n")
  workdir_lib.write_text(path / "config.yaml", configlib.to_yaml(record) + "\n")


def prepare_workdir(workdir: str, cfg, overwrite: bool) -> None:
  """`check_workdir` then `write_config` (a fresh or resumed run's config, no set-up)."""
  write_config(workdir, cfg, check_workdir(workdir, cfg, overwrite))


def make_rollout_config(cfg):
  """The rollout settings: config.rollout, plus the helper pool's keys of config.helper."""
  return from_run_config(cfg, group_size=cfg.rl.group_size)


def fit_to_context(examples: list[dict], model, rollout_cfg, split: str) -> list[dict]:
  """The examples whose prompt plus a full episode fits the model's context.

  The rollout refuses a batch holding one prompt that does not fit, so such a row (a
  1 MB question, say) is skipped here and counted in one log line, like a malformed row.
  """
  budget, limit = episode_budget(rollout_cfg), model.config.max_position_embeddings
  system = {"system": rollout_cfg.system_prompt} if rollout_cfg.system_prompt else {}
  kept = [ex for ex in examples if bucket(bucket(len(model.tokenizer.encode_chat(
      protocol.slm_messages(ex["question"], **system)))) + budget, 64) <= limit]
  if len(kept) < len(examples):
    log(f"task: skipped {len(examples) - len(kept)} of {len(examples)} {split} examples whose "
        f"prompt + episode ({budget} tokens) exceeds the model's context ({limit} tokens)")
  return kept


def trainable_spec(cfg) -> trainable_lib.Trainable:
  m = cfg.model
  return trainable_lib.Trainable(mode=m.trainable, top_n=m.top_n, lora_rank=m.lora_rank,
                                 lora_alpha=m.lora_alpha, lora_targets=tuple(m.lora_targets))


def make_step(cfg, model_cfg, spec, optimizer):
  r = cfg.rl
  step_spec = step_lib.StepSpec(
      model=model_cfg, trainable=spec, epsilon=r.epsilon, epsilon_high=r.epsilon_high,
      aggregation=r.aggregation, kl_method=r.kl_method,
      kl_beta=r.kl_beta if r.kl_in == "loss" else 0.0, micro_batches=r.micro_batches,
      remat=cfg.model.remat)
  return step_lib.make_train_step(step_spec, optimizer)


def check_batch_fits(cfg, mesh) -> None:
  rows = cfg.rl.questions_per_step * cfg.rl.group_size
  sharding.check_batch(mesh, rows, "rl.questions_per_step * rl.group_size")
  per_mini = rows // max(cfg.rl.mini_batches, 1)
  if rows % max(cfg.rl.mini_batches, 1) or per_mini % cfg.rl.micro_batches:
    raise configlib.ConfigError(
        f"config.rl: {rows} episodes per step must split into mini_batches="
        f"{cfg.rl.mini_batches} x micro_batches={cfg.rl.micro_batches}")


def data_states(data) -> dict:
  """Every process's grain iterator state (each host reads its own on resume)."""
  return {"processes": distributed.gather_json(data.get_state())}


def restore_data_position(data, saved, where: str) -> None:
  """Set this process's data iterator to a checkpoint's position (either data format)."""
  state = checkpoint.process_data_state(saved, jax.process_index(), jax.process_count(), where)
  try:
    data.set_state(state)
  except (KeyError, TypeError, ValueError) as e:
    raise checkpoint.CheckpointError(f"{where}: unusable data iterator state "
                                     f"({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- the loop


def train(cfg, workdir: str, overwrite: bool = False, stop_after: int | None = None,
          fork_from: str | None = None) -> dict:
  """Run (or resume) a training run; returns the last step's metrics and the final state.

  stop_after: leave after this step (with a checkpoint), e.g. to fit a scheduler's time
  slot; the next run with the same command resumes there.
  fork_from: a workdir whose latest checkpoint (state, step, data position) this new
  workdir starts from, under a config that may differ (a new run of its own).
  A SIGTERM before the RL loop returns {"stopped": "SIGTERM"} (see the module docstring);
  otherwise "stopped" says why the loop ended early (None: it finished).
  """
  stop = StopSignal()
  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    return _train(cfg, workdir, overwrite, stop_after, stop, fork_from)
  except Stopped as e:
    log(f"stopped ({stop.signal}) during the {e.phase}, before the RL loop: nothing new to "
        "save; the same command starts again from the latest checkpoint, if any")
    return {"stopped": stop.signal}
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def _train(cfg, workdir: str, overwrite: bool, stop_after: int | None, stop: StopSignal,
           fork_from: str | None = None) -> dict:
  setup.maybe_initialize_distributed(cfg)
  plan = check_workdir(workdir, cfg, overwrite, fork_from)
  try:
    return _set_up_and_run(cfg, workdir, plan, stop_after, stop, fork_from)
  finally:
    if plan["created"]:
      workdir_lib.discard_if_empty(workdir)   # set-up failed before writing anything


def _set_up_and_run(cfg, workdir: str, plan: dict, stop_after: int | None, stop: StopSignal,
                    fork_from: str | None) -> dict:
  setup.probe_helpers(cfg, should_stop=stop.check)   # a dead helper ends the run here
  mesh = setup.build_mesh(cfg)
  check_batch_fits(cfg, mesh)
  model = setup.build_model(cfg, mesh)
  if model.tokenizer is None:
    raise setup.RunSetupError(f"config.model.path: {cfg.model.path!r} has no tokenizer "
                              "(tokenizer.json); the rollout needs one")
  train_ex, eval_ex = setup.build_task(cfg, cfg.seed)
  train_ex = fit_to_context(train_ex, model, make_rollout_config(cfg), "train")
  eval_ex = fit_to_context(eval_ex, model, make_rollout_config(cfg), "eval")
  if not train_ex:
    raise setup.RunSetupError(f"config.task: task {cfg.task.name!r} left no training examples")
  log(f"task {cfg.task.name}: {len(train_ex)} train / {len(eval_ex)} eval examples")
  helper = setup.build_helper(cfg.helper, model)
  judge = setup.build_judge(cfg, helper)
  spec = trainable_spec(cfg)
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(cfg.seed + 1))
  log(f"training {trainable_lib.count(trainable) / 1e6:.2f}M of "
      f"{model.config.num_params / 1e6:.0f}M params ({spec.mode})")
  optimizer, schedule = setup.make_rl_optimizer(cfg)
  fingerprint = checkpoint.model_fingerprint(model.config, spec)
  data = iter(make_pipeline(train_ex, batch_size=cfg.rl.questions_per_step, seed=cfg.seed))
  ckpt = None

  def save(step, trainable, ref_trainable, opt_state):
    if not finite.all_finite((trainable, opt_state)):
      raise finite.NonFiniteError(f"step {step}: non-finite params; stopped without saving "
                                  f"them (latest checkpoint: {ckpt.latest_step()})")
    ckpt.save(step, distributed.to_global(mesh, checkpoint.train_state(
        trainable, ref_trainable, opt_state, step)), data_states(data), fingerprint, force=True)

  try:
    stop.check()
    # Set-up succeeded: from here on the workdir is written.
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep_checkpoints,
                                   async_save=cfg.train.async_checkpoint)
    source = fork_from if fork_from is not None and not ckpt.all_steps() else None
    restored = None
    if source is not None or ckpt.all_steps():
      template = distributed.to_global(mesh, checkpoint.train_state(
          trainable, trainable, optimizer.init(trainable), 0))
      restored = (_restore_fork(source, cfg, template, fingerprint) if source is not None
                  else ckpt.restore_latest(template, fingerprint, log=log))
    forked_from = None if source is None else {
        "workdir": configlib.scrub_url(str(source)), "step": restored[0]}
    write_config(workdir, cfg, plan, step=None if restored is None else restored[0],
                 forked_from=forked_from)
    if restored is None:
      stop.phase = "cold start"
      trainable = cold_start(cfg, model, spec, trainable, frozen, train_ex, helper,
                             should_stop=stop.check)
      ref_trainable = jax.tree.map(lambda x: x.copy(), trainable)
      opt_state = distributed.to_global(mesh, optimizer.init(trainable))
      start = 0
      stop.phase = "rl"   # from here on, a SIGTERM leaves a checkpoint
      save(0, trainable, ref_trainable, opt_state)
    else:
      stop.phase = "rl"
      start, state, data_state = restored
      trainable, ref_trainable, opt_state = (state["trainable"], state["ref_trainable"],
                                             state["opt_state"])
      restore_data_position(data, data_state, f"{source or ckpt.directory}/{start}")
      if source is not None:
        save(start, trainable, ref_trainable, opt_state)   # the fork's own first checkpoint
        log(f"forked from step {start} of {source}")
      else:
        log(f"resumed from step {start} ({ckpt.directory})")
    ctx = cycle.RunContext(cfg=cfg, model=model, spec=spec, frozen=frozen, helper=helper,
                           judge=judge, rollout_cfg=make_rollout_config(cfg),
                           train_step=make_step(cfg, model.config, spec, optimizer), mesh=mesh,
                           should_stop=stop.check)
    last = _rl_loop(ctx, schedule, data, save, workdir, start,
                    (trainable, ref_trainable, opt_state), stop, stop_after, ckpt.latest_step)
  finally:
    if ckpt is not None:
      ckpt.close()
    setup.close_helpers(helper, judge)
  return dict(last, frozen=frozen, spec=spec, model=model, eval_examples=eval_ex,
              stopped=stop.signal)


def _restore_fork(source: str, cfg, template, fingerprint):
  """(step, state, data_state) of `source`'s newest checkpoint that restores; `source`
  is another run's workdir, so nothing in it is moved or written."""
  src = checkpoint.Checkpointer(source, keep=cfg.train.keep_checkpoints, async_save=False)
  try:
    restored = src.restore_latest(template, fingerprint, log=log, set_aside=False)
  finally:
    src.close()
  if restored is None:
    raise WorkdirError(f"--fork_from={source}: holds no checkpoint")
  return restored


def _rl_loop(ctx, schedule, data, save, workdir, start, params, stop, stop_after,
             latest_checkpoint) -> dict:
  """The RL steps from `start`; `save`s on schedule, at the end, and when stopping.

  A step whose loss, gradient norm or reward is not finite raises NonFiniteError after
  its metrics row is written and before anything of it is saved.
  Returns the last step's metrics with the final `trainable`.
  """
  cfg = ctx.cfg
  trainable, ref_trainable, opt_state = params
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  progress = metrics_lib.Progress(cfg.rl.steps, start=start, desc="rl")
  base_rng = jax.random.PRNGKey(cfg.seed)
  last, reached, saved, dropped = {}, start, start, None
  try:
    for step in range(start, cfg.rl.steps):
      if stop.signal:   # it came before the first step, whose start state is checkpointed
        break
      position = data.get_state()
      examples = next(data)
      rng = jax.random.fold_in(base_rng, step)
      try:
        trainable, opt_state, last, _ = cycle.rl_iteration(ctx, trainable, opt_state,
                                                           ref_trainable, examples, rng)
      except (Stopped, cycle.HelperFailure) as e:
        # The step is dropped: nothing of it was applied. Keep its questions for the
        # resumed run, and make sure the state it starts from is checkpointed.
        data.set_state(position)
        if saved != reached:
          save(reached, trainable, ref_trainable, opt_state)
        if isinstance(e, cycle.HelperFailure):
          raise cycle.HelperFailure(
              f"step {step + 1}: {e}; the step was not trained on; checkpoint at step "
              f"{reached}: the same command resumes there once the helper is fixed") from None
        dropped = step + 1
        break
      last["lr"] = float(schedule(step * cfg.rl.num_epochs * max(cfg.rl.mini_batches, 1)))
      writer.write(step + 1, last)
      bad = finite.nonfinite_term(last)
      if bad:
        raise finite.NonFiniteError(
            f"step {step + 1}: non-finite {bad} ({last[bad]}); stopped before saving this "
            f"state (latest checkpoint: step {latest_checkpoint()})")
      reached = step + 1
      progress.update(step + 1, reward=last["reward"], em=last["em"],
                      msgs=last["messages_per_episode"], leak=last["leak_rate"],
                      kl=last["kl"])
      done = step + 1 == cfg.rl.steps
      if stop_after is not None and step + 1 >= stop_after:
        stop.signal = stop.signal or "stop_after"
      stopping = stop.signal  # read once: a later SIGTERM stops after the next step
      if done or (step + 1) % cfg.train.checkpoint_every == 0 or stopping:
        save(step + 1, trainable, ref_trainable, opt_state)
        saved = step + 1
      if stopping:
        break
  finally:
    writer.close()
  if dropped is not None:
    log(f"stopped ({stop.signal}) after step {reached}; checkpoint saved (step {dropped}, "
        "which waited on the helper, was dropped and its calls cancelled)")
  elif stop.signal:
    log(f"stopped ({stop.signal}) after step {reached}; checkpoint saved")
  return dict(last, trainable=trainable)


def run(argv=None) -> tuple[int, dict | None]:
  """`main`, also returning `train`'s result (None when the run could not start).

  A caller that goes on after training (`seekjax.main`) must read result["stopped"]: a
  stopped run (SIGTERM, stop_after) still exits 0, but its training is not finished
  (SIGINT exits 130). A helper that fails too often mid-run exits 1, after a checkpoint.
  """
  try:
    cfg, workdir, flags = configlib.parse_argv(sys.argv[1:] if argv is None else argv,
                                               str_flags=("fork_from",))
    t0 = time.perf_counter()
    out = train(cfg, workdir, overwrite=flags.get("overwrite", False),
                stop_after=flags.get("stop_after"), fork_from=flags.get("fork_from"))
    what = "stopped" if out.get("stopped") not in (None, "stop_after") else "done"
    log(f"{what} in {time.perf_counter() - t0:.0f}s; results in {workdir_lib.as_path(workdir)}")
    return (130 if out.get("stopped") == "SIGINT" else 0), out   # 130: the shell's Ctrl-C code
  except cycle.HelperFailure as e:
    print(f"error: {e}", file=sys.stderr)
    return 1, None
  except (configlib.ConfigError, setup.RunSetupError, ModelLoadError, sharding.MeshError,
          checkpoint.CheckpointError, WorkdirError, finite.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2, None


def main(argv=None) -> int:
  return run(argv)[0]


if __name__ == "__main__":
  sys.exit(main())
