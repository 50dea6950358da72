"""Run metrics: one JSONL line and one TensorBoard event per step, from process 0 only."""
from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np


def _scalar(v):
  v = np.asarray(v)
  return float(v) if v.size == 1 else None


class MetricsWriter:
  """Appends to `<workdir>/metrics.jsonl` and writes TensorBoard events to `<workdir>/tb`."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.tb = SummaryWriter(os.path.join(workdir, "tb"))

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
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


def steps_logged(path: str) -> list[int]:
  """The step numbers recorded in a metrics.jsonl (for resume checks)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.strip()]


def truncate_after(path: str, step: int) -> None:
  """Drop lines for steps > `step` (written after the checkpoint a resume starts from)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)


class Progress:
  """A one-line progress bar with rate and ETA on stderr (process 0 only)."""

  def __init__(self, total: int, start: int = 0, desc: str = "train", enabled: bool | None = None):
    self.total, self.start, self.desc = total, start, desc
    self.t0 = time.perf_counter()
    self.enabled = jax.process_index() == 0 if enabled is None else enabled

  def update(self, step: int, **fields) -> None:
    if not self.enabled:
      return
    done = step - self.start
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / max(done, 1) * (self.total - step)
    info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in fields.items())
    width = 20
    filled = int(width * step / max(self.total, 1))
    print(f"[{self.desc}] [{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
          f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s {info}", file=sys.stderr, flush=True)
