"""Preemption drill: kill a training run at random points, restart it, compare bit for bit.

  python experiments/preemption.py [--steps=9] [--kills=3] [--seed=0] [--workdir=DIR]
                                   [--config.KEY=VALUE ...]

Runs `python -m seekjax.train` (configs/tiny_test.py, a checkpoint every step) twice:
once uninterrupted (the reference), and once SIGKILLed `--kills` times at random points,
one of them while orbax is writing a checkpoint (seen as its temporary
`<step>.orbax-checkpoint-tmp` directory), then SIGTERMed once; after each stop the same
command is started again. Checks, each printed as PASS/FAIL:

  - every restart resumes from the newest *finalized* checkpoint listed after the kill,
    never from a temporary (half-written) one;
  - SIGTERM: exit code 0, a checkpoint at the step reached, and the next run resumes there;
  - the final trainable params, reference params and optimizer state equal the
    reference run's bitwise (CPU), and so does the data iterator position;
  - metrics.jsonl holds each step 1..N exactly once, with the same non-timing values
    as the reference run (so no step was skipped, run twice, or run differently).

Exits 0 when every check passes. tests/test_preemption.py runs a CI-sized drill with
these same functions.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
TMP_MARK = ".orbax-checkpoint-tmp"
# Metrics that measure time, not the computation: they differ between any two runs.
# what depends on the machine, not on the run: timings, and what this process compiled
# (a resumed process compiles again, or reads the persistent cache), and the rollout's
# phases (seconds, and decode calls, which follow when helper replies came back)
TIMING_KEYS = re.compile(
    r"^(time_.*|step_time|train_tokens_per_s|compiles|compiled|compile_.*|rollout/.*)$")
# tqdm's "[rl]: 25%|##  | 1/4 [00:09<00:27, 0.11step/s, reward=...]"; only a bar that a
# finished step moved carries the step's fields (the bar a resumed run opens with does not).
PROGRESS_RE = re.compile(r"\[rl\]:[^|\r\n]*\|[^|\r\n]*\| (\d+)/(\d+) \[[^\]\r\n]*reward=")
RESUMED_RE = re.compile(r"resumed from step (\d+)")


# ----------------------------------------------------------------------------- processes


def train_command(workdir: str, steps: int, overrides=()) -> list[str]:
  """The one command every attempt runs (a restart is the same command again)."""
  return [sys.executable, "-m", "seekjax.train", f"--config={TINY}", f"--workdir={workdir}",
          f"--config.rl.steps={steps}", "--config.train.checkpoint_every=1",
          *[f"--config.{o}" for o in overrides]]


def train_env(cache_dir: str | None) -> dict:
  """CPU only; a persistent compilation cache shared by the attempts (restarts are cheaper)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


class Attempt:
  """One `python -m seekjax.train` process; its stderr goes to `log_path`."""

  def __init__(self, cmd: list[str], env: dict, log_path: str):
    self.log_path = log_path
    # pylint: disable-next=consider-using-with
    self._log = open(log_path, "w")
    # pylint: disable-next=consider-using-with
    self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log,
                                 stderr=subprocess.STDOUT)

  def log(self) -> str:
    with open(self.log_path, errors="replace") as f:
      return f.read()

  def progress(self) -> int:
    """The last RL step this attempt finished (its progress line), or -1."""
    steps = PROGRESS_RE.findall(self.log())
    return int(steps[-1][0]) if steps else -1

  def alive(self) -> bool:
    return self.proc.poll() is None

  def wait_progress(self, step: int, timeout: float) -> bool:
    """Block until the attempt has finished RL step `step`; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.progress() >= step:
        return True
      if not self.alive():
        return False
      time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached in {timeout:.0f}s; log: {self.log_path}")

  def signal(self, signum: int) -> None:
    if self.alive():
      self.proc.send_signal(signum)

  def wait(self, timeout: float) -> int:
    try:
      return self.proc.wait(timeout)
    finally:
      self._log.close()


# ----------------------------------------------------------------------------- workdir


def listing(workdir: str) -> tuple[list[int], list[str]]:
  """(finalized step numbers, temporary directory names) under <workdir>/checkpoints."""
  d = os.path.join(workdir, "checkpoints")
  names = os.listdir(d) if os.path.isdir(d) else []
  return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if TMP_MARK in n)


def _temporary_dirs(directory: str) -> dict[str, int]:
  """{name: inode} of the temporary checkpoint directories now under `directory`."""
  out = {}
  try:
    for name in os.listdir(directory):
      if TMP_MARK in name:
        try:
          out[name] = os.stat(os.path.join(directory, name)).st_ino
        except FileNotFoundError:
          pass
  except FileNotFoundError:
    pass
  return out


def kill_during_save(attempt: Attempt, workdir: str, timeout: float = 600.0) -> str | None:
  """SIGKILL the attempt the moment a new temporary checkpoint directory appears.

  One left by an earlier kill does not count (orbax deletes and recreates it when it
  saves that step again, so a new inode does). Returns the temporary directory's name,
  or None if the attempt exited first.
  """
  d = os.path.join(workdir, "checkpoints")
  stale = _temporary_dirs(d)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    new = [n for n, ino in _temporary_dirs(d).items() if stale.get(n) != ino]
    if new and attempt.alive():
      attempt.proc.kill()
      attempt.wait(60)
      return new[0]
    if not attempt.alive():
      return None
    time.sleep(0.001)
  raise TimeoutError(f"no checkpoint save seen in {timeout:.0f}s; log: {attempt.log_path}")


def metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def final_state(workdir: str, step: int):
  """(state pytree as numpy, data iterator state) of a finalized checkpoint step."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step))
  with ocp.StandardCheckpointer() as ckpt:
    state = jax.tree.map(np.asarray, ckpt.restore(os.path.join(path, "state")))
  with open(os.path.join(path, "data", "metadata")) as f:  # JsonSave's file
    data = json.load(f)
  return state, data


def tree_differences(a, b) -> list[str]:
  """Leaf paths where two pytrees differ (structure, dtype, shape or any bit)."""
  import jax  # pylint: disable=import-outside-toplevel
  fa = dict(jax.tree_util.tree_leaves_with_path(a))
  fb = dict(jax.tree_util.tree_leaves_with_path(b))
  if fa.keys() != fb.keys():
    return [f"structure: {sorted(map(str, fa.keys() ^ fb.keys()))[:5]}"]
  bad = []
  for k, x in fa.items():
    y = fb[k]
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
      bad.append(jax.tree_util.keystr(k))
  return bad


def metric_differences(rows: list[dict], ref: list[dict]) -> list[str]:
  """Where two metrics.jsonl differ in a non-timing value (exact float equality)."""
  out = []
  for r, q in zip(rows, ref):
    keys = {k for k in r.keys() | q.keys() if not TIMING_KEYS.match(k)}
    out += [f"step {q['step']} {k}: {r.get(k)} != {q.get(k)}" for k in sorted(keys)
            if r.get(k) != q.get(k)]
  return out


# ----------------------------------------------------------------------------- the drill


@dataclasses.dataclass
class Report:
  """Checks made so far: (name, passed, detail)."""

  checks: list = dataclasses.field(default_factory=list)

  def check(self, name: str, ok: bool, detail: str = "") -> bool:
    self.checks.append((name, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return bool(ok)

  @property
  def ok(self) -> bool:
    return all(ok for _, ok, _ in self.checks)


def check_resume(report: Report, attempt: Attempt, finalized: list[int], label: str) -> None:
  """The attempt resumed from the newest finalized step (or cold-started when none)."""
  m = RESUMED_RE.search(attempt.log())
  got = int(m.group(1)) if m else None
  want = finalized[-1] if finalized else None
  report.check(f"{label}: resumed from the newest finalized checkpoint", got == want,
               f"resumed from {got}, finalized after the kill: {finalized}")


def reference_run(workdir: str, steps: int, overrides, env, timeout: float) -> Attempt:
  attempt = Attempt(train_command(workdir, steps, overrides), env,
                    os.path.join(workdir + ".log"))
  rc = attempt.wait(timeout)
  if rc != 0:
    raise RuntimeError(f"reference run failed (rc={rc}); log: {attempt.log_path}")
  return attempt


def compare_with_reference(report: Report, workdir: str, ref_dir: str, steps: int) -> None:
  finalized, tmp = listing(workdir)
  report.check("final checkpoint is the last step", finalized and finalized[-1] == steps,
               f"finalized {finalized}, temporary {tmp}")
  state, data = final_state(workdir, steps)
  ref_state, ref_data = final_state(ref_dir, steps)
  diff = tree_differences(state, ref_state)
  report.check("params and optimizer state bitwise equal to the uninterrupted run", not diff,
               f"{len(diff)} leaves differ: {diff[:4]}" if diff else
               f"{len(jax_leaves(state))} leaves")
  report.check("data iterator position equal", data == ref_data, f"{data} vs {ref_data}")
  rows, ref_rows = metric_rows(workdir), metric_rows(ref_dir)
  logged = [r["step"] for r in rows]
  report.check("metrics.jsonl holds each step exactly once", logged == list(range(1, steps + 1)),
               f"steps logged: {logged}")
  diff = metric_differences(rows, ref_rows)
  report.check("metrics (non-timing) equal to the uninterrupted run", not diff,
               "; ".join(diff[:4]))


def jax_leaves(tree) -> list:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.leaves(tree)


def drill(base: str, steps: int = 9, kills: int = 3, seed: int = 0, overrides=(),
          sigterm: bool = True, cache: bool = True, step_timeout: float = 600.0) -> Report:
  """The full drill under directory `base`; returns the Report (see the module docstring)."""
  rng = random.Random(seed)
  report = Report()
  env = train_env(os.path.join(base, "jax_cache") if cache else None)
  ref_dir, workdir = os.path.join(base, "reference"), os.path.join(base, "preempted")
  t0 = time.perf_counter()
  reference_run(ref_dir, steps, overrides, env, step_timeout * steps)
  print(f"reference run: {time.perf_counter() - t0:.0f}s", flush=True)
  step_time = (time.perf_counter() - t0) / (steps + 2)  # rough, includes start-up

  # Kill points: distinct steps after which to kill, in order; one kill waits for a save.
  # The last two steps are left for the SIGTERM (which must stop before the end).
  targets = sorted(rng.sample(range(1, steps - 2), min(kills, steps - 3)))
  save_kill = rng.randrange(len(targets))
  cmd = train_command(workdir, steps, overrides)
  n = 0

  def start(label):
    nonlocal n
    n += 1
    return Attempt(cmd, env, os.path.join(base, f"attempt{n}_{label}.log"))

  attempt, expect = start("first"), None   # expect: (finalized steps, label) to resume from
  for i, target in enumerate(targets):
    label = f"kill {i + 1} (after step {target}, {'during save' if i == save_kill else 'random'})"
    if not attempt.wait_progress(target, step_timeout):
      report.check(label, False, f"the run ended before step {target}")
      break
    if expect:
      check_resume(report, attempt, *expect)
    if i == save_kill:
      tmp = kill_during_save(attempt, workdir)
      finalized, tmp_after = listing(workdir)
      report.check(f"{label}: killed while orbax wrote {tmp}", tmp is not None and tmp in tmp_after,
                   f"listing after the kill: finalized {finalized}, temporary {tmp_after}")
    else:
      time.sleep(rng.uniform(0.0, 0.9 * step_time))
      attempt.signal(signal.SIGKILL)
      attempt.wait(60)
      finalized, tmp_after = listing(workdir)
      print(f"{label}: listing after the kill: finalized {finalized}, temporary {tmp_after}",
            flush=True)
    attempt, expect = start(f"after_kill{i + 1}"), (finalized, label)

  if sigterm:
    target = max(attempt.progress(), 0) + 1
    if target >= steps:
      report.check("SIGTERM", False, f"no step left to stop at (progress {target - 1})")
    elif attempt.wait_progress(target, step_timeout):
      if expect:
        check_resume(report, attempt, *expect)
      attempt.signal(signal.SIGTERM)
      rc = attempt.wait(step_timeout)
      reached = attempt.progress()
      finalized, _ = listing(workdir)
      stopped = "SIGTERM received" in attempt.log() and "checkpoint saved" in attempt.log()
      report.check("SIGTERM: exit code 0 after a logged stop", rc == 0 and stopped, f"rc={rc}")
      report.check("SIGTERM: a checkpoint at the step reached",
                   bool(finalized) and finalized[-1] == reached,
                   f"reached step {reached}, finalized {finalized}")
      attempt, expect = start("after_sigterm"), (finalized, "SIGTERM")
  rc = attempt.wait(step_timeout * steps)
  report.check("last attempt completes", rc == 0, f"rc={rc}; log {attempt.log_path}")
  if expect:
    check_resume(report, attempt, *expect)
  if rc == 0:
    compare_with_reference(report, workdir, ref_dir, steps)
  print(f"drill: {n} attempts, {time.perf_counter() - t0:.0f}s", flush=True)
  return report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--steps", type=int, default=9)
  p.add_argument("--kills", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", default=None, help="kept afterwards (default: a temp dir)")
  p.add_argument("--no_cache", action="store_true", help="no persistent compilation cache")
  args, rest = p.parse_known_args(argv)
  overrides = [a[len("--config."):] for a in rest if a.startswith("--config.")]
  if len(overrides) != len(rest):
    p.error(f"unknown arguments {[a for a in rest if not a.startswith('--config.')]}")
  base = args.workdir or tempfile.mkdtemp(prefix="preemption_")
  os.makedirs(base, exist_ok=True)
  print(f"drill in {base}: {args.steps} steps, {args.kills} kills, seed {args.seed}", flush=True)
  report = drill(base, args.steps, args.kills, args.seed, overrides, cache=not args.no_cache)
  print(f"{'ALL PASS' if report.ok else 'FAILED'} "
        f"({sum(ok for _, ok, _ in report.checks)}/{len(report.checks)} checks)")
  if args.workdir is None and report.ok:
    shutil.rmtree(base, ignore_errors=True)
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
