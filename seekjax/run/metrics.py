"""Run metrics: one JSONL line and one TensorBoard event per step, from process 0 only.

The workdir may be local or remote (gs://, ...): files go through `etils.epath`
(`run/workdir.py`). Every line of metrics.jsonl is strict JSON: a non-finite value is
written as `null` (and left out of TensorBoard).
"""
from __future__ import annotations

import io
import json
import math
import sys
import time

import jax
import numpy as np
import tqdm
from etils import epath

from seekjax.run import workdir as workdir_lib


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else None


def _finite_or_null(v):
  if isinstance(v, float):
    return v if math.isfinite(v) else None
  if isinstance(v, dict):
    return {k: _finite_or_null(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_finite_or_null(x) for x in v]
  return v


def json_row(row: dict) -> str:
  """One strict-JSON line: non-finite floats (also inside nested dicts and lists) become
  null."""
  return json.dumps(_finite_or_null(row), allow_nan=False)


class _EpathRecordWriter:
  """TensorBoard events to a remote workdir through epath: object stores have no append,
  so each flush writes the whole event file (tensorboardX's own GCS writer does the same)."""

  def __init__(self, path: str):
    self.path, self.buffer = epath.Path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EpathRecordWriterFactory:
  def open(self, path):
    return _EpathRecordWriter(path)

  def directory_check(self, path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _register_remote_tensorboard() -> None:
  """Route tensorboardX's writes for every URI scheme through epath."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  for scheme in workdir_lib.URI_SCHEMES:
    record_writer.register_writer_factory(scheme[:-len("://")], _EpathRecordWriterFactory())


class _JsonlAppender:
  """Appends text to a JSONL file: a local file in append mode; a remote one (object
  stores have no append) rewritten whole from the lines kept in memory."""

  def __init__(self, path, remote: bool):
    self.path, self.remote = path, remote
    self.lines = (path.read_text().splitlines(keepends=True)
                  if remote and path.exists() else [])

  def append(self, text: str) -> None:
    if self.remote:
      self.lines.append(text)
      self.path.write_text("".join(self.lines))
    else:
      with self.path.open("a") as f:
        f.write(text)


class MetricsWriter:
  """Appends to `<workdir>/metrics.jsonl` and writes TensorBoard events to `<workdir>/tb`.

  A remote workdir's metrics.jsonl is rewritten whole at each step (no append there).

  resume_step: the checkpoint step a resumed run restarts from. Steps after it were
  logged by the interrupted run and will be logged again, so they are dropped from the
  JSONL (`truncate_after`), and TensorBoard is told to purge them (a SessionLog START
  at resume_step + 1, tensorboardX's `purge_step`): each step appears once in both.
  """

  def __init__(self, workdir: str, enabled: bool | None = None, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = workdir_lib.as_path(workdir) / "metrics.jsonl"
    self.tb = None
    self.out = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      _register_remote_tensorboard()
      purge = None
      if resume_step is not None:
        truncate_after(self.path, resume_step)
        purge = resume_step + 1
      self.out = _JsonlAppender(self.path, workdir_lib.is_remote(workdir))
      # The file name holds whole seconds only: a second writer in the same second (a
      # quick resume) would overwrite the first's file without the nanosecond suffix,
      # which also keeps the files in the order TensorBoard reads them (by name).
      self.tb = SummaryWriter(str(workdir_lib.as_path(workdir) / "tb"), purge_step=purge,
                              filename_suffix=f".{time.time_ns()}")

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      s = _scalar(v) if not isinstance(v, (str, bool)) else v
      if s is None:
        continue
      row[k] = s
      if isinstance(s, float) and math.isfinite(s):
        self.tb.add_scalar(k, s, step)
    self.out.append(json_row(row) + "\n")
    self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


EPISODE_DIR = "episodes"   # a remote workdir's per-step episode objects


def jsonl_rows(text: str) -> list[dict]:
  """The JSON objects of a JSONL text; a line that does not parse (a run killed while
  writing leaves a partial last line) is skipped."""
  rows = []
  for line in text.splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict):
      rows.append(row)
  return rows


class EpisodeLog:
  """Appends a step's per-episode records (`rl/records.episode_records`) to
  `<workdir>/episodes.jsonl`; process k > 0 writes its own episodes to
  `episodes.p<k>.jsonl`. A resumed run first drops the rows of steps after resume_step
  (they will be sampled again).

  Object stores have no append, so on a remote workdir each step's records go to an
  object of their own, `episodes/<step>.jsonl` (`episodes/<step>.p<k>.jsonl`), instead of
  rewriting one growing file at every step; `episode_rows` reads either layout."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None):
    k = jax.process_index()
    self.enabled, self.suffix = enabled, "" if k == 0 else f".p{k}"
    self.remote = workdir_lib.is_remote(workdir)
    root = workdir_lib.as_path(workdir)
    self.path = root / EPISODE_DIR if self.remote else root / f"episodes{self.suffix}.jsonl"
    self.out = None
    if not enabled:
      return
    if self.remote:
      if resume_step is not None:
        for step, obj in _step_objects(self.path, self.suffix):
          if step > resume_step:
            obj.unlink()
      return
    if resume_step is not None and self.path.exists():
      keep = [line + "\n" for line in self.path.read_text().splitlines()
              if (step := _row_step(line)) is not None and step <= resume_step]
      workdir_lib.write_text(self.path, "".join(keep))
    self.out = _JsonlAppender(self.path, remote=False)

  def write(self, records: list[dict]) -> None:
    if not self.enabled or not records:
      return
    text = "".join(json_row(r) + "\n" for r in records)
    if self.remote:   # one step's records a call (the trainer's), in one object
      self.path.mkdir(parents=True, exist_ok=True)
      workdir_lib.write_text(self.path / f"{int(records[0]['step']):07d}{self.suffix}.jsonl", text)
    else:
      self.out.append(text)


def _step_objects(directory, suffix: str) -> list[tuple[int, epath.Path]]:
  """(step, path) of the per-step episode objects of one process, by step."""
  if not directory.exists():
    return []
  out = []
  for obj in directory.iterdir():
    stem = obj.name.partition(".")[0]
    if stem.isdigit() and obj.name == f"{stem}{suffix}.jsonl":
      out.append((int(stem), obj))
  return sorted(out)


def episode_rows(workdir: str, process: int = 0) -> list[dict]:
  """The episode records a run logged (`EpisodeLog`), of one process, in step order:
  from `episodes.jsonl` (`episodes.p<k>.jsonl`), or from the per-step objects a remote
  workdir holds. Partial lines (a run killed while writing) are skipped. Raises
  FileNotFoundError when the run logged none."""
  root = workdir_lib.as_path(workdir)
  suffix = "" if process == 0 else f".p{process}"
  path = root / f"episodes{suffix}.jsonl"
  if path.exists():
    texts = [path.read_text()]
  else:
    objects = _step_objects(root / EPISODE_DIR, suffix)
    if not objects:
      raise FileNotFoundError(f"{path}: no such file, nor per-step files in "
                              f"{root / EPISODE_DIR} (runs log them with train.log_episodes=True)")
    texts = [obj.read_text() for _, obj in objects]
  return [row for text in texts for row in jsonl_rows(text)]


def _row_step(line: str) -> int | None:
  """The step of one metrics.jsonl line; None for a line that is not a whole row (a run
  killed while writing leaves a partial last line)."""
  try:
    row = json.loads(line)
  except ValueError:
    return None
  step = row.get("step") if isinstance(row, dict) else None
  return step if isinstance(step, int) else None


def steps_logged(path) -> list[int]:
  """The step numbers recorded in a metrics.jsonl (for resume checks)."""
  path = epath.Path(path)
  if not path.exists():
    return []
  return [s for s in map(_row_step, path.read_text().splitlines()) if s is not None]


def truncate_after(path, step: int) -> None:
  """Keep the rows of steps <= `step`, each step once (its first row); drop the rest.

  Rows after `step` were written after the checkpoint a resume starts from; partial
  lines come from a kill mid-write. The file is replaced atomically.
  """
  path = epath.Path(path)
  if not path.exists():
    return
  keep, seen = [], set()
  for line in path.read_text().splitlines():
    s = _row_step(line)
    if s is not None and s <= step and s not in seen:
      seen.add(s)
      keep.append(line + "\n")
  workdir_lib.write_text(path, "".join(keep))


def log(msg: str) -> None:
  """A "[seekjax]" line on stderr (process 0 only)."""
  if jax.process_index() == 0:
    print(f"[seekjax] {msg}", file=sys.stderr, flush=True)


class Progress:
  """A tqdm bar on stderr, "[desc]" with rate and ETA, and the step's fields (process 0 only).

  `update(step, **fields)` moves the bar to `step` (absolute, so a resumed run starts at
  its checkpoint); the bar closes when it reaches `total`.
  """

  def __init__(self, total: int, start: int = 0, desc: str = "train", enabled: bool | None = None):
    enabled = jax.process_index() == 0 if enabled is None else enabled
    self.bar = tqdm.tqdm(total=total, initial=start, desc=f"[{desc}]", disable=not enabled,
                         file=sys.stderr, dynamic_ncols=True, unit="step")

  def update(self, step: int, **fields) -> None:
    if fields:
      self.bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v
                            for k, v in fields.items()}, refresh=False)
    self.bar.update(step - self.bar.n)
    if step >= self.bar.total:
      self.bar.close()

  def close(self) -> None:
    """Ends the bar's line, so that a message printed after it (an error) comes last."""
    self.bar.close()
