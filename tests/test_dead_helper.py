"""A dead or hung helper: the start probe, the per-step failure share, and stop signals.

The helper is the loopback OpenAI-compatible server. The tiny random SLM rarely writes a
message of its own, so the trainer's rollout is given one forced message per question
(`rollout(forced=...)`): each step really asks the helper over HTTP, through the pool.
"""
import json
import os
import signal
import sys
import threading
import time
from unittest import mock

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import Behavior, LoopbackServer, cancelling_loopback_server  # noqa: E402
from seekjax import configlib  # noqa: E402
from seekjax import train as train_lib  # noqa: E402
from seekjax.helpers import OpenAIHelper  # noqa: E402
from seekjax.run import setup as setup_lib  # noqa: E402
from seekjax.rl import cycle
from seekjax.rollout import driver  # noqa: E402
from seekjax.rollout.pool import run_coroutine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
KEY_ENV, SECRET = "SEEKJAX_TEST_HELPER_KEY", "sk-test-5ecret-value-0123456789"
HANG = Behavior("slow", delay=3600.0)   # a helper that never answers
BOUND = 15.0   # seconds from a signal to the run's return, with a hung helper


@pytest.fixture(scope="module")
def server_module():
  with cancelling_loopback_server() as server:
    yield server


@pytest.fixture
def server(server_module, monkeypatch):
  monkeypatch.setenv(KEY_ENV, SECRET)
  server_module.reset()
  server_module.default = Behavior("ok")
  yield server_module
  server_module.reset()
  server_module.default = Behavior("ok")


def _args(server, workdir, *extra):
  return [f"--config={TINY}", f"--workdir={workdir}", "--config.helper.kind=openai",
          f"--config.helper.base_url={server.base_url}", "--config.helper.model=fake-llm",
          f"--config.helper.api_key_env={KEY_ENV}", "--config.helper.max_retries=0",
          "--config.sft.steps=0", *extra]


def _cfg(server, *extra):
  cfg = configlib.load_config(TINY)
  overrides = [a[len("--config."):] for a in _args(server, "unused", *extra)
               if a.startswith("--config.")]
  return configlib.apply_overrides(cfg, overrides)


def _in_flight(server) -> int:
  with server._lock:  # pylint: disable=protected-access
    return server._active[server._generation]  # pylint: disable=protected-access


# ----------------------------------------------------------------------------- the start probe


@pytest.mark.parametrize("status", [401, 403])
def test_probe_refused_key_is_one_line_without_the_key(server, status):
  server.default = Behavior("status", status=status)
  with pytest.raises(setup_lib.RunSetupError) as e:
    setup_lib.probe_helpers(_cfg(server))
  message = str(e.value)
  assert f"refused the API key (HTTP {status}" in message and KEY_ENV in message
  assert SECRET not in message and "\n" not in message
  assert len(server.calls) == 1 and server.calls[0].body["max_tokens"] == 1


def test_probe_unreachable_and_silent_endpoints_are_one_line(server):
  closed = LoopbackServer().start()
  url = closed.base_url
  closed.stop()   # nothing listens there any more
  helper = OpenAIHelper(url, "m", api_key_env=None, max_retries=0, timeout=5)
  with pytest.raises(Exception, match="is unreachable") as e:
    run_coroutine(helper.probe())
  assert "\n" not in str(e.value)
  server.default = Behavior("slow", delay=30.0)
  t0 = time.monotonic()
  helper = OpenAIHelper(server.base_url, "m", api_key_env=None, max_retries=0, timeout=0.5)
  with pytest.raises(Exception, match="did not answer"):
    run_coroutine(helper.probe())
  assert time.monotonic() - t0 < 5


def test_probe_passes_a_live_helper_and_only_warns_on_a_server_error(server, capsys):
  setup_lib.probe_helpers(_cfg(server))
  assert len(server.calls) == 1
  server.default = Behavior("status", status=500)
  setup_lib.probe_helpers(_cfg(server))
  assert "answered the start probe with error http_500; starting anyway" in capsys.readouterr().err
  # helpers without an endpoint are not probed (nor built)
  setup_lib.probe_helpers(configlib.load_config(TINY))


def test_refused_key_ends_the_run_before_the_model_loads(server, tmp_path, capsys,
                                                         monkeypatch):
  server.default = Behavior("status", status=401)
  monkeypatch.setattr(setup_lib, "build_model", mock.Mock(side_effect=AssertionError("loaded")))
  workdir = tmp_path / "w"
  assert train_lib.main(_args(server, workdir, "--config.reward.judge=llm")) == 2
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "refused the API key (HTTP 401" in lines[0], err[-2000:]
  assert "Traceback" not in err and SECRET not in err
  assert not setup_lib.build_model.called and not (workdir / "config.json").exists()
  assert len(server.calls) == 1   # the LLM judge shares the helper's endpoint: one probe


def test_sigterm_while_the_probe_hangs_stops_at_once(server, tmp_path, capsys):
  server.default = HANG
  threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
  t0 = time.monotonic()
  assert train_lib.main(_args(server, tmp_path / "w", "--config.helper.timeout=600")) == 0
  err = capsys.readouterr().err
  assert time.monotonic() - t0 < BOUND and "Traceback" not in err
  assert "stopped (SIGTERM) during the set-up, before the RL loop" in err, err[-2000:]


# ----------------------------------------------------------------------------- during training


@pytest.fixture
def forced_rollout(monkeypatch):
  """The trainer's rollouts ask the helper once per question (a forced message); returns
  the list of each rollout's questions."""
  seen = []

  def rollout(policy, questions, helper, cfg, rng, **kw):
    seen.append(list(questions))
    forced = [[("<think>ask</think><message>what is it?</message>", "what is it?")]
              for _ in questions]
    return driver.rollout(policy, questions, helper, cfg, rng, forced=forced, **kw)
  monkeypatch.setattr(cycle, "rollout", rollout)
  return seen


def _checkpoints(workdir) -> list[str]:
  path = os.path.join(workdir, "checkpoints")
  return sorted(p for p in os.listdir(path) if p.isdigit()) if os.path.isdir(path) else []


def _steps_logged(workdir) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  return [json.loads(l)["step"] for l in open(path)] if os.path.exists(path) else []


def test_a_step_where_most_calls_fail_stops_with_a_checkpoint(server, forced_rollout, tmp_path,
                                                               capsys):
  """Step 1 is answered; every call of step 2 gets HTTP 401 (a revoked key): the run exits 1
  with one line, step 2 is not trained on, and step 1's state is checkpointed."""
  server.script(Behavior("ok"), Behavior("ok"), Behavior("ok"))   # the probe, step 1 (2 calls)
  server.default = Behavior("status", status=401)
  workdir = str(tmp_path / "w")
  assert train_lib.main(_args(server, workdir)) == 1
  err = capsys.readouterr().err
  assert "Traceback" not in err
  (line,) = [l for l in err.splitlines() if l.startswith("error:")]
  assert line.startswith("error: step 2: 100% of the step's helper calls failed") and \
      "http_401 x2" in line and "max_error_share=0.5" in line and "checkpoint at step 1" in line
  assert _checkpoints(workdir) == ["0", "1"] and _steps_logged(workdir) == [1]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_while_the_helper_hangs_stops_in_bounded_time(signame, server, forced_rollout,
                                                              tmp_path, capsys):
  """Step 1 is answered, step 2's calls hang. The signal drops step 2 at once: its calls are
  cancelled, step 1 is checkpointed, the exit is clean (SIGINT: 130), no traceback; the
  resumed run starts with step 2's questions."""
  server.script(Behavior("ok"), Behavior("ok"), Behavior("ok"))
  server.default = HANG
  workdir = str(tmp_path / "w")
  sent = []

  def send_when_hung():
    while len(server.calls) < 4 or _in_flight(server) == 0:   # step 2 waits on the helper
      time.sleep(0.05)
    time.sleep(0.5)
    sent.append(time.monotonic())
    os.kill(os.getpid(), getattr(signal, signame))
  threading.Thread(target=send_when_hung, daemon=True).start()
  rc = train_lib.main(_args(server, workdir))
  took = time.monotonic() - sent[0]
  err = capsys.readouterr().err
  assert rc == (0 if signame == "SIGTERM" else 130) and took < BOUND, (rc, took, err[-2000:])
  assert "Traceback" not in err
  assert (f"stopped ({signame}) after step 1; checkpoint saved (step 2, which waited on the "
          "helper, was dropped and its calls cancelled)") in err, err[-2000:]
  assert _checkpoints(workdir) == ["0", "1"] and _steps_logged(workdir) == [1]
  deadline = time.monotonic() + 5
  while _in_flight(server) and time.monotonic() < deadline:   # the hung calls were cancelled
    time.sleep(0.05)
  assert _in_flight(server) == 0
  if signame == "SIGTERM":   # resume with a live helper: step 2's questions come first
    dropped = forced_rollout[1]
    server.reset()
    server.default = Behavior("ok")
    assert train_lib.main(_args(server, workdir, "--config.rl.steps=2")) == 0
    assert forced_rollout[2] == dropped and _steps_logged(workdir) == [1, 2]
