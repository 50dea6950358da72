"""Stop signals of a run: SIGTERM (how TPU preemption notices arrive) and SIGINT.

During the RL loop the current step finishes (or, while it waits on the helper, is
dropped) and is checkpointed; before it (set-up, cold start) the run stops at once.
"""
from __future__ import annotations

import contextlib
import signal

from seekjax.run.metrics import log


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


@contextlib.contextmanager
def handled(stop: StopSignal):
  """SIGTERM and SIGINT go to `stop` inside the block; the previous handlers come back."""
  previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield stop
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
