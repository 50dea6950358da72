"""The run's workdir on any filesystem: paths, reachability, and which run it holds.

A workdir is a local directory or a URI (gs://, s3://, ...). Every read and write goes
through `etils.epath`, orbax's own path layer, so `gs://bucket/run` is a bucket path and
never a local directory named `gs:`. Object stores have no append and no atomic rename,
so files are written whole (`write_text`).

Which run a workdir holds is its config.json. A resumed run must match it on every key
that shapes the state or the data; only `rl.steps` may change without a flag (a finished
run is extended, and config.json records the step at which it changed), and `--overwrite`
may also change the keys in `OPERATIONAL` (how the run is executed, not what it computes).
Anything else needs a new workdir, or `--fork_from=DIR` to start one from DIR's latest
checkpoint. The bookkeeping lives under config.json's `"run"` key (`RUN_KEY`), which is
not part of the config itself.
"""
from __future__ import annotations

import json
import os

import jax
from etils import epath

from seekjax import configcheck

URI_SCHEMES = ("gs://", "s3://", "az://", "hf://")
RUN_KEY = "run"   # config.json's bookkeeping: {"steps_changed": [...], "forked_from": {...}}
# Keys that change how a run is executed, not the state or the data it produces.
OPERATIONAL = frozenset({
    "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
    "train.async_checkpoint", "helper.timeout", "helper.max_retries", "helper.concurrency",
    "helper.base_url", "helper.api_key_env", "model.mesh_shape", "model.remat",
    "eval.redact_private", "distributed.initialize", "distributed.coordinator_address",
    "distributed.num_processes", "distributed.process_id"})


class WorkdirError(ValueError):
  """The workdir holds another run, or cannot be reached or written (one line)."""


def is_remote(workdir) -> bool:
  return str(workdir).startswith(URI_SCHEMES)


def as_path(workdir) -> epath.Path:
  """The workdir as an epath.Path; a local one made absolute."""
  path = epath.Path(workdir)
  return path if is_remote(workdir) else epath.Path(os.path.abspath(os.fspath(path)))


def _reason(e: BaseException) -> str:
  text = getattr(e, "strerror", None) or next(iter(str(e).strip().splitlines()), "")
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def check_writable(workdir) -> bool:
  """Fail in one line unless the workdir can be written; leaves nothing behind.

  Returns whether the workdir already existed (a local one is created for the probe
  and removed again by `discard_if_empty` when set-up fails).
  """
  path = as_path(workdir)
  try:
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  # any backend's failure is one line
    raise WorkdirError(f"{workdir}: cannot write ({_reason(e)})") from None
  return existed


def discard_if_empty(workdir) -> None:
  """Remove a local workdir this run created when no file was written to it (empty
  directories, such as an unused checkpoints/, are removed with it)."""
  root = os.fspath(as_path(workdir))
  if is_remote(workdir) or not os.path.isdir(root):
    return
  if any(files for _, _, files in os.walk(root)):
    return
  for path, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
    try:
      os.rmdir(path)
    except OSError:
      return


def write_text(path: epath.Path, text: str) -> None:
  """Write a whole file: atomically (temporary + rename) locally, one object remotely."""
  if is_remote(path):
    path.write_text(text)
    return
  tmp = path.parent / f"{path.name}.tmp.{os.getpid()}"
  try:
    tmp.write_text(text)
    os.replace(os.fspath(tmp), os.fspath(path))
  finally:
    if tmp.exists():
      tmp.unlink()


# ----------------------------------------------------------------------------- which run


def read_config(workdir) -> dict | None:
  """The workdir's config.json (None when there is none); one line when unreadable."""
  path = as_path(workdir) / "config.json"
  try:
    if not path.exists():
      return None
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
      raise ValueError("not a JSON object")
    return saved
  except Exception as e:  # pylint: disable=broad-except
    raise WorkdirError(f"{path}: unreadable ({type(e).__name__}); use a new --workdir, or "
                       "--overwrite to replace it") from None


def flat(d: dict, prefix: str = "") -> dict:
  """{"a.b": v} for a nested dict."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def differences(saved: dict, current: dict) -> list[str]:
  """The dotted keys on which two config dicts differ (bookkeeping excluded)."""
  a, b = flat({k: v for k, v in saved.items() if k != RUN_KEY}), flat(current)
  return sorted(k for k in set(a) | set(b) if a.get(k, KeyError) != b.get(k, KeyError))


def check_same_run(workdir, saved: dict | None, current: dict, *, overwrite: bool,
                   has_checkpoint: bool, fork_from: str | None) -> list[str]:
  """Refuse (WorkdirError) a config that is not this workdir's run; returns the keys
  that differ and are allowed to (rl.steps; with --overwrite also OPERATIONAL).

  `saved` is config.json with `configcheck.fill_added_keys` applied. Without a checkpoint
  there is no state to protect: `--overwrite` may then replace any key.
  """
  if saved is None:
    return []
  diff = differences(saved, current)
  forked = (saved.get(RUN_KEY) or {}).get("forked_from")
  if fork_from and (not forked or forked.get("workdir") != str(fork_from)) and (
      has_checkpoint or diff):
    raise WorkdirError(f"--fork_from starts a new workdir; {workdir} already holds a run")
  if not diff:
    return []
  if overwrite and not has_checkpoint:
    return diff
  allowed = {"rl.steps"} | (OPERATIONAL if overwrite else set())
  refused = [k for k in diff if k not in allowed]
  if refused:
    shown = ", ".join(refused[:6]) + (", ..." if len(refused) > 6 else "")
    raise WorkdirError(
        f"{workdir} holds another run's config (differs in {shown}); "
        + ("--overwrite may change only how a run executes, not a checkpointed state or its "
           "data; " if overwrite else "")
        + f"use a new --workdir, or --fork_from={workdir} with a new --workdir")
  return diff


def run_record(saved: dict | None, current: dict, changed: list[str], step: int | None,
               forked_from: dict | None = None) -> dict:
  """config.json's content: the current config plus the run's bookkeeping, with a record
  of an `rl.steps` change at `step` (the checkpoint the run resumes from)."""
  record = dict((saved or {}).get(RUN_KEY) or {})
  if "rl.steps" in changed and saved is not None:
    record["steps_changed"] = list(record.get("steps_changed", [])) + [
        {"at_step": step, "from": saved["rl"]["steps"], "to": current["rl"]["steps"]}]
  if forked_from is not None:
    record["forked_from"] = forked_from
  return dict(current, **({RUN_KEY: record} if record else {}))


# ----------------------------------------------------------------------------- the run's check


def checkpoint_steps(workdir) -> list[int]:
  """The checkpoint steps listed in a workdir (a cheap look, before orbax opens it)."""
  path = as_path(workdir) / "checkpoints"
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
  created = not check_writable(workdir)
  resolved = configcheck.config_to_dict(cfg)
  try:
    saved = read_config(workdir)
  except WorkdirError:
    if not overwrite:
      raise
    saved = None   # --overwrite replaces an unreadable config.json
  if saved is not None:
    saved = configcheck.fill_added_keys(saved, resolved, configcheck.base_defaults())
  if fork_from is not None:
    if as_path(fork_from) == as_path(workdir):
      raise WorkdirError("--fork_from: names the --workdir itself; resume it without the flag")
    if not checkpoint_steps(fork_from):
      raise WorkdirError(f"--fork_from={fork_from}: holds no checkpoint")
  changed = check_same_run(workdir, saved, resolved, overwrite=overwrite,
                           has_checkpoint=bool(checkpoint_steps(workdir)), fork_from=fork_from)
  return dict(saved=saved, changed=changed, created=created)


def write_config(workdir: str, cfg, plan: dict, step: int | None = None,
                 forked_from: dict | None = None) -> None:
  """Write config.json (and its YAML twin): the resolved config plus the run's record
  (an `rl.steps` change at the resumed `step`, a fork's source). Process 0 only."""
  if jax.process_index() != 0:
    return
  record = run_record(plan["saved"], configcheck.config_to_dict(cfg), plan["changed"], step,
                      forked_from)
  path = as_path(workdir)
  write_text(path / "config.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
  write_text(path / "config.yaml", configcheck.to_yaml(record) + "\n")


def prepare_workdir(workdir: str, cfg, overwrite: bool) -> None:
  """`check_workdir` then `write_config` (a fresh or resumed run's config, no set-up)."""
  write_config(workdir, cfg, check_workdir(workdir, cfg, overwrite))
