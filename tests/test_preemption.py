"""Preemption, CI-sized: a SIGKILL during a checkpoint save, then a SIGTERM, then resume.

The full drill (three SIGKILLs at random points) is `experiments/preemption.py`; this
test runs the same functions on a 4-step run:

  attempt 1  SIGKILLed while orbax writes a checkpoint (its temporary directory exists)
  attempt 2  must resume from the newest finalized step, never the half-written one;
             SIGTERMed after its first RL step: exits 0 with a checkpoint at the step reached
  attempt 3  resumes there and finishes

and the result must equal an uninterrupted run's bit for bit: params, reference params,
optimizer state, data position, and every non-timing metric, each step logged once.
"""
import os
import signal

from experiments import preemption as P

STEPS = 4
OVERRIDES = ("sft.steps=0",)   # no cold start: the drill is about the RL loop's state
TIMEOUT = 600


def test_sigkill_during_save_then_sigterm_resumes_bit_identical(tmp_path, tmp_path_factory):
  env = P.train_env(str(tmp_path_factory.getbasetemp() / "jax_cache"))  # shared by the session
  ref_dir, workdir = str(tmp_path / "reference"), str(tmp_path / "preempted")
  P.reference_run(ref_dir, STEPS, OVERRIDES, env, TIMEOUT)
  cmd = P.train_command(workdir, STEPS, OVERRIDES)

  # Attempt 1: SIGKILL while a checkpoint is being written (after RL step 1).
  first = P.Attempt(cmd, env, str(tmp_path / "attempt1.log"))
  assert first.wait_progress(1, TIMEOUT), first.log()[-3000:]
  tmp = P.kill_during_save(first, workdir)
  finalized, temporary = P.listing(workdir)
  assert first.proc.returncode == -signal.SIGKILL
  assert tmp is not None and tmp in temporary, (tmp, finalized, temporary)
  half_written = int(tmp.split(".")[0])
  assert half_written not in finalized and finalized and finalized[-1] < half_written

  # Attempt 2: resumes from the newest finalized step; SIGTERM after one RL step.
  second = P.Attempt(cmd, env, str(tmp_path / "attempt2.log"))
  assert second.wait_progress(finalized[-1] + 1, TIMEOUT), second.log()[-3000:]
  second.signal(signal.SIGTERM)
  rc = second.wait(TIMEOUT)
  log = second.log()
  assert f"resumed from step {finalized[-1]}" in log, log[-3000:]
  assert rc == 0 and "Traceback" not in log, log[-3000:]
  reached = second.progress()
  after_term, temporary = P.listing(workdir)
  assert "SIGTERM received" in log and f"after step {reached}; checkpoint saved" in log
  assert reached < STEPS and after_term[-1] == reached and not temporary, (reached, after_term)

  # Attempt 3: resumes at the SIGTERM checkpoint and finishes.
  third = P.Attempt(cmd, env, str(tmp_path / "attempt3.log"))
  assert third.wait(TIMEOUT) == 0, third.log()[-3000:]
  assert f"resumed from step {reached}" in third.log()

  report = P.Report()
  P.compare_with_reference(report, workdir, ref_dir, STEPS)
  failed = [c for c in report.checks if not c[1]]
  assert not failed, failed
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(STEPS)))
