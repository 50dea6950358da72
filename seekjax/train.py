"""`python -m seekjax.train --config=configs/X.py --workdir=DIR [--config.a.b=v]`.

Read top to bottom: check the workdir, build the run's parts (`run/setup.py`: helper
probe, mesh, memory plan, model, task, helper, judge, RL settings), write the workdir's
config, restore (or fork, or cold-start), then the RL loop (one `rl/cycle.py`
`rl_iteration` per step), with metrics, a learning curve on a validation set carved from
the train split (`run/validation.py`), checkpoints and a clean exit on SIGTERM (how TPU
preemption notices arrive; `run/signals.py`). During the RL loop the current step
finishes and is checkpointed; before it (set-up, cold start) the run stops at once,
keeping the checkpoints it had, and exits cleanly.

Nothing is written to the workdir (local or gs://, `run/workdir.py`) until set-up has
succeeded, so a run that fails there never blocks its corrected rerun. A step whose loss,
gradient norm or reward is not finite stops the run before that state is saved
(`run/finite.py`). `--fork_from=DIR` starts a new workdir from DIR's latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time

import jax

from seekjax import configcheck
from seekjax import configlib, distributed
from seekjax.coldstart.cold_start import cold_start
from seekjax.models import sharding
from seekjax.models.errors import ModelLoadError
from seekjax.rl import cycle
from seekjax.rl import trainable as trainable_lib
from seekjax.run import checkpoint, finite, host_memory, metrics as metrics_lib, setup, validation
from seekjax.run import workdir as workdir_lib
from seekjax.run.metrics import log
from seekjax.run.signals import StopSignal, Stopped, handled
from seekjax.tasks import make_pipeline

WorkdirError = workdir_lib.WorkdirError


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
  with handled(stop):
    try:
      return _train(cfg, workdir, overwrite, stop_after, stop, fork_from)
    except Stopped as e:
      log(f"stopped ({stop.signal}) during the {e.phase}, before the RL loop: nothing new to "
          "save; the same command starts again from the latest checkpoint, if any")
      return {"stopped": stop.signal}


def _train(cfg, workdir: str, overwrite: bool, stop_after: int | None, stop: StopSignal,
           fork_from: str | None = None) -> dict:
  setup.maybe_initialize_distributed(cfg)
  plan = workdir_lib.check_workdir(workdir, cfg, overwrite, fork_from)
  try:
    return _set_up_and_run(cfg, workdir, plan, stop_after, stop, fork_from)
  finally:
    if plan["created"]:
      workdir_lib.discard_if_empty(workdir)   # set-up failed before writing anything


def _set_up_and_run(cfg, workdir: str, plan: dict, stop_after: int | None, stop: StopSignal,
                    fork_from: str | None) -> dict:
  parts = setup.build_parts(cfg, should_stop=stop.check, workdir=workdir)
  model, spec, mesh = parts.model, parts.spec, parts.mesh
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(cfg.seed + 1))
  if spec.mode == "full" and trainable is not model.params:
    # a master copy in another dtype: the loaded params are not read again; free them
    model = model.replace(params={})
    parts = dataclasses.replace(parts, model=model)
  log(f"training {trainable_lib.count(trainable) / 1e6:.2f}M of "
      f"{model.config.num_params / 1e6:.0f}M params ({spec.mode})")
  if host_memory.active():
    log("host memory: XLA's large buffers are reused between calls, not mapped afresh "
        f"(GLIBC_TUNABLES; {host_memory.OFF_VARIABLE}=0 turns this off)")
  optimizer, schedule = setup.make_rl_optimizer(cfg)
  fingerprint = checkpoint.model_fingerprint(model.config, spec)
  data = iter(make_pipeline(parts.train_examples, batch_size=cfg.rl.questions_per_step,
                            seed=cfg.seed))
  ckpt = best = None

  def save(step, trainable, ref_trainable, opt_state, into=None):
    if not finite.all_finite((trainable, opt_state)):
      raise finite.NonFiniteError(f"step {step}: non-finite params; stopped without saving "
                                  f"them (latest checkpoint: {ckpt.latest_step()})")
    (into or ckpt).save(step, distributed.to_global(mesh, checkpoint.train_state(
        trainable, ref_trainable, opt_state, step)), checkpoint.data_states(data), fingerprint,
        force=True)

  try:
    stop.check()
    # Set-up succeeded: from here on the workdir is written.
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep_checkpoints,
                                   async_save=cfg.train.async_checkpoint)
    if cfg.train.select_checkpoint == "best_val":
      best = checkpoint.Checkpointer(workdir, keep=1, async_save=cfg.train.async_checkpoint,
                                     name=checkpoint.BEST)
    source = fork_from if fork_from is not None and not ckpt.all_steps() else None
    restored = None
    if source is not None or ckpt.all_steps():
      template = distributed.to_global(mesh, checkpoint.train_state(
          trainable, trainable_lib.reference_template(spec, trainable), optimizer.init(trainable),
          0))
      restored = (_restore_fork(source, cfg, template, fingerprint) if source is not None
                  else ckpt.restore_latest(template, fingerprint, log=log))
    forked_from = None if source is None else {
        "workdir": configcheck.scrub_url(str(source)), "step": restored[0]}
    workdir_lib.write_config(workdir, cfg, plan, forked_from=forked_from,
                             step=None if restored is None else restored[0])
    if restored is None:
      stop.phase = "cold start"
      trainable = cold_start(cfg, model, spec, trainable, frozen, parts.train_examples,
                             parts.helper, should_stop=stop.check, workdir=workdir)
      ref_trainable = trainable_lib.reference_copy(spec, trainable)
      opt_state = distributed.to_global(mesh, optimizer.init(trainable))
      start = 0
      stop.phase = "rl"   # from here on, a SIGTERM leaves a checkpoint
      save(0, trainable, ref_trainable, opt_state)
    else:
      stop.phase = "rl"
      start, state, data_state = restored
      trainable, ref_trainable, opt_state = (state["trainable"], state["ref_trainable"],
                                             state["opt_state"])
      checkpoint.restore_data_position(data, data_state, f"{source or ckpt.directory}/{start}")
      if source is not None:
        save(start, trainable, ref_trainable, opt_state)   # the fork's own first checkpoint
        log(f"forked from step {start} of {source}")
      else:
        log(f"resumed from step {start} ({ckpt.directory})")
    if best is not None:   # a best point saved after `start` is replayed, not kept
      best.drop_after(start)
    ctx = cycle.RunContext(settings=parts.settings, model=model, spec=spec, frozen=frozen,
                           helper=parts.helper, judge=parts.judge, rollout_cfg=parts.rollout_cfg,
                           train_step=setup.make_step(
                               parts.settings, model.config, spec, optimizer, cfg.model.remat,
                               rollout_temperature=parts.rollout_cfg.temperature),
                           mesh=mesh, should_stop=stop.check,
                           redact_private=cfg.eval.redact_private)
    save_best = None if best is None else functools.partial(save, into=best)
    last = _rl_loop(ctx, cfg, schedule, data, save, workdir, start,
                    (trainable, ref_trainable, opt_state), stop, stop_after, ckpt.latest_step,
                    parts.val_examples, save_best, fork_source=source)
  finally:
    for manager in (ckpt, best):
      if manager is not None:
        manager.close()
    setup.close_helpers(parts.helper, parts.judge)
  return dict(last, frozen=frozen, spec=spec, model=model, eval_examples=parts.eval_examples,
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


def _rl_loop(ctx, cfg, schedule, data, save, workdir, start, params, stop, stop_after,
             latest_checkpoint, val_examples=(), save_best=None, fork_source=None) -> dict:
  """The RL steps from `start`; `save`s on schedule, at the end, and when stopping.

  With train.eval_every, the policy answers `val_examples` before the first step (a
  step-0 row, once) and after every eval_every-th step (`run/validation.py`).
  `save_best` (train.select_checkpoint="best_val"): called like `save` whenever a
  validation row is the best of the curve so far (`validation.best_row`).
  `fork_source`: the workdir this run was forked from (on its first start), whose step-0
  validation point is read instead of measured again when it applies
  (`validation.forked_point`).

  A step whose loss, gradient norm or reward is not finite raises NonFiniteError after
  its metrics row is written and before anything of it is saved.
  Returns the last step's metrics with the final `trainable`.
  """
  trainable, ref_trainable, opt_state = params
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  episode_log = metrics_lib.EpisodeLog(workdir, enabled=cfg.train.log_episodes,
                                       resume_step=start)
  progress = metrics_lib.Progress(cfg.rl.steps, start=start, desc="rl")
  base_rng = jax.random.PRNGKey(cfg.seed)
  last, reached, saved, dropped = {}, start, start, None
  every = cfg.train.eval_every if val_examples else 0
  best_point = None   # the best validation row so far (a resumed run reads process 0's file)
  if save_best is not None:
    best_point = distributed.gather_json(validation.best_row(
        [r for r in validation.curve_rows(workdir) if r["step"] <= start])
        if writer.enabled else None)[0]

  def validate(step, trainable, row, point=None):
    """Record the validation point at `step` on `row`: `point` (val/* metrics) when given,
    else the policy answers the validation questions now."""
    nonlocal best_point
    row.update(point or validation.evaluate_policy(
        ctx, trainable, list(val_examples), cfg.rl.questions_per_step * cfg.rl.group_size))
    writer.write(step, row)
    if writer.enabled:
      validation.plot_curve(workdir)
    point = {"step": step, **{k: v for k, v in row.items() if k.startswith("val/")}}
    candidates = [r for r in (best_point, point) if r]
    if save_best is not None and validation.best_row(candidates) is point:
      best_point = point
      save_best(step, trainable, ref_trainable, opt_state)
      log(f"best validation point so far: step {step} (EM {row['val/em']:.3f}); kept in "
          f"{checkpoint.BEST}")

  try:
    if every and start == 0 and 0 not in metrics_lib.steps_logged(writer.path):
      # the curve starts at the cold start; a fork of a run that measured it reads it
      point = (validation.forked_point(fork_source, configcheck.config_to_dict(cfg), 0)
               if fork_source is not None else None)
      if point is not None:
        log(f"validation at step 0: read from {fork_source} (same weights and validation "
            "settings)")
      validate(0, trainable, {}, point)
    for step in range(start, cfg.rl.steps):
      if stop.signal:   # it came before the first step, whose start state is checkpointed
        break
      position = data.get_state()
      examples = next(data)
      rng = jax.random.fold_in(base_rng, step)
      try:
        trainable, opt_state, last, _, records = cycle.rl_iteration(
            ctx, trainable, opt_state, ref_trainable, examples, rng, step=step + 1)
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
      episode_log.write(records)
      if every and (step + 1) % every == 0:
        validate(step + 1, trainable, last)   # on this step's row
      else:
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
    progress.close()
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
  host_memory.restart_with_reused_memory()
  sys.exit(main())
