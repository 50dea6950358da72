"""Orbax checkpoints of a training run: trainable params, optimizer state, RNG, data position.

One `CheckpointManager` (async saves, keep the last K). Each step directory holds
  state: the pytree {trainable, ref_trainable, opt_state, step} (`train_state`)
  data:  every process's grain iterator state (JSON): {"processes": [state, ...]};
         checkpoints of older versions hold one bare grain state (`process_data_state`)
  meta:  the model fingerprint, so a checkpoint from another model is refused.
Orbax writes each step to a temporary directory and renames it when complete, so a
step killed mid-save is never listed (and never restored). A finalized step damaged
later (a truncated array file, broken metadata) is skipped by `restore_latest`, which
warns in one line and falls back to the newest step that restores.
The directory is an `etils.epath` path, so a workdir may be local or gs://.
A run that selects its policy on the validation curve keeps that state in a second
manager under `<workdir>/best_checkpoint` (`BEST`), in the same layout.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from seekjax import distributed
from seekjax.run import workdir as workdir_lib


class CheckpointError(ValueError):
  """A checkpoint this run cannot resume from (reported in one line)."""


class CheckpointMismatch(CheckpointError):
  """A checkpoint that belongs to another model or another trainable layout."""


def train_state(trainable, ref_trainable, opt_state, step: int) -> dict:
  """The saved training state; with step 0 and a fresh opt_state, a restore template."""
  return dict(trainable=trainable, ref_trainable=ref_trainable, opt_state=opt_state,
              step=jnp.asarray(step, jnp.int32))


def process_data_state(saved, process_index: int, process_count: int, where: str = "checkpoint"):
  """This process's grain iterator state from a checkpoint's data item.

  The format is {"processes": [one state per process]}. Checkpoints written before
  multi-host support hold one bare grain state (e.g. {"next_index": 8}); a
  single-process run resumes from it. Anything else is a CheckpointError.
  """
  if isinstance(saved, dict) and "processes" in saved:
    states = saved["processes"]
    if not isinstance(states, list) or len(states) != process_count:
      n = len(states) if isinstance(states, list) else "no list of"
      raise CheckpointError(f"{where}: data iterator state of {n} processes; this run has "
                            f"{process_count} (resume with the same number of processes)")
    return states[process_index]
  if isinstance(saved, dict) and saved:
    if process_count != 1:
      raise CheckpointError(f"{where}: data iterator state of a single-process run (older "
                            f"format); this run has {process_count} processes")
    return saved
  raise CheckpointError(f"{where}: no data iterator state to resume from (got "
                        f"{type(saved).__name__} {_shorten(saved)})")


def data_states(data) -> dict:
  """Every process's grain iterator state (each host reads its own on resume)."""
  return {"processes": distributed.gather_json(data.get_state())}


def restore_data_position(data, saved, where: str) -> None:
  """Set this process's data iterator to a checkpoint's position (either data format)."""
  state = process_data_state(saved, jax.process_index(), jax.process_count(), where)
  try:
    data.set_state(state)
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{where}: unusable data iterator state "
                          f"({type(e).__name__}: {e})") from None


def _shorten(x, limit: int = 80) -> str:
  text = json.dumps(x, default=str)
  return text if len(text) <= limit else text[:limit] + "..."


def model_fingerprint(model_cfg, trainable_spec) -> dict:
  """What a checkpoint must match to restore: the model's shape and the trainable subset,
  not the dtypes (the restore casts to the template's, so a run can resume or be
  evaluated in another precision)."""
  return {"model": {k: v for k, v in model_cfg.__dict__.items() if k != "dtype"},
          "trainable": {k: v for k, v in trainable_spec.__dict__.items()
                        if k not in ("dtype", "master_dtype")}}


def _jsonable(x):
  return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


LATEST, BEST = "checkpoints", "best_checkpoint"


class Checkpointer:
  """Save/restore the training state under `<workdir>/<name>` (`LATEST` or `BEST`)."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               name: str = LATEST):
    self.directory = workdir_lib.as_path(workdir) / name
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: dict, data_state: dict, fingerprint: dict,
           force: bool = False) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_jsonable(data_state)),
        meta=ocp.args.JsonSave(_jsonable(fingerprint))), force=force)

  def restore(self, step: int, template: dict, fingerprint: dict):
    """Returns (state, data_state) of `step`; refuses a checkpoint of another model."""
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    want = _jsonable(fingerprint)
    if meta != want:
      diff = sorted(k for k in set(meta.get("model", {})) | set(want["model"])
                    if meta.get("model", {}).get(k) != want["model"].get(k))
      diff += [f"trainable.{k}" for k in set(meta.get("trainable", {})) | set(want["trainable"])
               if meta.get("trainable", {}).get(k) != want["trainable"].get(k)]
      raise CheckpointMismatch(f"{self.directory}/{step}: checkpoint is from a different model "
                               f"(differs in {', '.join(diff) or 'metadata'})")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def restore_latest(self, template: dict, fingerprint: dict, log=print, set_aside: bool = True):
    """(step, state, data_state) of the newest checkpoint that restores; None if none exists.

    A checkpoint that fails to restore (a truncated array file, broken metadata) is
    reported in one `log` line and the next older one is tried; when none restores, a
    one-line CheckpointError. A checkpoint of another model is refused, not skipped.
    After a fallback the damaged newer steps are moved to `<workdir>/damaged_checkpoints`
    (kept for inspection; not with `set_aside=False`), so the step restored is the latest
    and the run saves after it.
    """
    steps = self.all_steps()
    failures = []
    for step in reversed(steps):
      try:
        state, data_state = self.restore(step, template, fingerprint)
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except  # any damage: try the next one
        failures.append(f"{step}: {_one_line(e)}")
        older = [s for s in steps if s < step]
        log(f"checkpoint {self.directory}/{step} does not restore ({_one_line(e)}); "
            + (f"falling back to step {older[-1]}" if older else "no older checkpoint"))
        continue
      damaged = [s for s in steps if s > step]
      if damaged and set_aside:
        self.set_aside(damaged, log)
      return step, state, data_state
    if failures:
      raise CheckpointError(f"{self.directory}: no checkpoint restores (step {failures[0]}"
                            + (f"; {len(failures) - 1} older ones fail too)"
                               if len(failures) > 1 else ")"))
    return None

  def set_aside(self, steps: list[int], log=print) -> None:
    """Move these steps' directories to `<workdir>/damaged_checkpoints/` (process 0)."""
    if jax.process_index() == 0:
      aside = self.directory.parent / "damaged_checkpoints"
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target, n = aside / str(step), 1
        while target.exists():
          target, n = aside / f"{step}.{n}", n + 1
        (self.directory / str(step)).rename(target)
      log(f"moved damaged checkpoint{'s' if len(steps) > 1 else ''} "
          f"{', '.join(map(str, steps))} to {aside}")
    self.manager.reload()

  def drop_after(self, step: int) -> None:
    """Delete the checkpoints of steps after `step` (a resumed run saves them again)."""
    for later in [s for s in self.all_steps() if s > step]:
      self.manager.delete(later)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _one_line(e: BaseException, limit: int = 160) -> str:
  """An exception as one short line (orbax and tensorstore errors span many)."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."
