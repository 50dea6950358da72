"""Peak resident memory of this process, sampled on a thread (tests and benchmarks)."""
from __future__ import annotations

import os
import threading


class PeakRSS:
  """Samples this process's resident memory on a thread; `growth` = peak - start, bytes."""

  def __init__(self, every: float = 0.01):
    self.every, self.start, self.peak = every, 0, 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)

  @staticmethod
  def rss() -> int:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

  def _sample(self):
    while not self._stop.wait(self.every):
      self.peak = max(self.peak, self.rss())

  def __enter__(self):
    self.start = self.peak = self.rss()
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self.rss())

  @property
  def growth(self) -> int:
    return self.peak - self.start
