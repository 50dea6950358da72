"""The trainer end to end on a tiny config: CLI outputs, exact resume, one-line errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seekjax import configcheck, configlib
from seekjax.run.checkpoint import CheckpointMismatch
from seekjax.train import WorkdirError, main, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  out = train(_cfg(), workdir)
  return workdir, out


def test_cli_writes_checkpoint_metrics_tensorboard_and_config(straight, tmp_path):
  workdir, out = straight
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]  # keep 2
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  for key in ("reward", "em", "messages_per_episode", "leak_rate", "helper_errors", "kl",
              "entropy", "clip_fraction", "grad_norm", "train_tokens_per_s", "step_time",
              "time_rollout", "time_reference", "time_update", "reward/score",
              "reward/message_cost"):
    assert key in rows[-1], key
  assert all(np.isfinite(r["loss"]) for r in rows)
  last_row = rows[-1]
  # the rollout's phases account for its time
  phases = sum(last_row[f"rollout/{k}"] for k in ("prefill", "warm_up", "decode", "compact",
                                                    "append", "host", "other"))
  assert 0 < phases <= last_row["time_rollout"] + 1e-3
  assert last_row["rollout/decode"] > 0 and last_row["rollout/decode_calls"] >= 1
  # the asking push splits exactly into its reward terms
  last = rows[-1]
  terms = [k for k in last if k.startswith("push/") and k != "push/total"]
  assert {"push/score", "push/message_cost", "push/other"} <= set(terms)
  assert abs(sum(last[k] for k in terms) - last["push/total"]) < 1e-6
  episodes = [json.loads(l) for l in open(os.path.join(workdir, "episodes.jsonl"))]
  c = _cfg()
  per_step = c.rl.questions_per_step * c.rl.group_size
  assert [e["step"] for e in episodes] == [s for s in range(1, 7) for _ in range(per_step)]
  for e in episodes:
    assert abs(sum(e["components"].values()) - e["reward"]) < 1e-5
    assert e["num_messages"] == len(e["messages"]) and e["question"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["rl"]["steps"] == 6 and cfg["helper"]["api_key_env"] == "OPENAI_API_KEY"


def test_rl_steps_after_warm_up_compile_nothing(straight):
  """Every jitted shape of an RL step comes from the config (prompt width, cache length,
  loss positions, chunk width, rows), so only the first step compiles; each step's row
  counts what it compiled."""
  workdir, _ = straight
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[0]["compiles"] >= 1 and "train_step" in rows[0]["compiled"]
  # the first step also compiles the update at every other width of the ladder
  assert rows[0]["time_warm_update"] > 0 and all(r["time_warm_update"] < 0.05 for r in rows[1:])
  assert [r["compiles"] for r in rows[1:]] == [0] * len(rows[1:]), \
      [r.get("compiled") for r in rows]


def test_resume_after_stop_is_bit_identical(straight, tmp_path):
  _, out = straight
  workdir = str(tmp_path / "resumed")
  first = train(_cfg(), workdir, stop_after=3)
  assert first.get("em") is not None
  rows = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows == [1, 2, 3]
  second = train(_cfg(), workdir)
  rows = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows == [1, 2, 3, 4, 5, 6]
  for a, b in zip(_leaves(out["trainable"]), _leaves(second["trainable"])):
    np.testing.assert_array_equal(a, b)
  # the episodes of the resumed steps are logged once, and are the straight run's
  straight_eps = open(os.path.join(straight[0], "episodes.jsonl")).read()
  assert open(os.path.join(workdir, "episodes.jsonl")).read() == straight_eps


def test_workdir_of_another_run_is_refused(straight):
  workdir, _ = straight
  with pytest.raises(WorkdirError, match="another run's config"):
    train(_cfg("rl.kl_beta=0.5"), workdir)


def test_workdir_written_before_a_setting_existed_is_the_same_run(tmp_path):
  """A config.json that lacks keys added to the base since (sft.knowledge, ...) matches a
  config that leaves them at their defaults, and no other."""
  from seekjax.run.workdir import prepare_workdir
  workdir = str(tmp_path / "old")
  prepare_workdir(workdir, _cfg(), overwrite=False)
  path = os.path.join(workdir, "config.json")
  old = json.load(open(path))
  for key in ("knowledge", "knowledge_steps", "knowledge_batch"):
    del old["sft"][key]
  json.dump(old, open(path, "w"))
  prepare_workdir(workdir, _cfg(), overwrite=False)            # accepted, and rewritten whole
  assert json.load(open(path))["sft"]["knowledge"] == 0.0
  json.dump(old, open(path, "w"))
  with pytest.raises(WorkdirError, match="another run's config"):
    prepare_workdir(workdir, _cfg("sft.knowledge=0.5"), overwrite=False)
  old["sft"]["steps"] = 3                                      # a real difference stays one
  json.dump(old, open(path, "w"))
  with pytest.raises(WorkdirError, match="another run's config"):
    prepare_workdir(workdir, _cfg(), overwrite=False)


def test_overwrite_keeps_a_checkpointed_run_and_a_fork_of_another_model_is_refused(
    straight, tmp_path):
  """--overwrite cannot change what a checkpoint means (it used to resume the old
  checkpoint under a new group size); a fork may change the config, but not the model."""
  import shutil
  workdir = str(tmp_path / "other")
  shutil.copytree(straight[0], workdir)
  with pytest.raises(WorkdirError, match="differs in rl.group_size.*--fork_from="):
    train(_cfg("rl.group_size=4"), workdir, overwrite=True)
  with pytest.raises(WorkdirError, match="differs in model.top_n, model.trainable"):
    train(_cfg("model.trainable=top_n", "model.top_n=1"), workdir, overwrite=True)
  fork = tmp_path / "fork"
  with pytest.raises(CheckpointMismatch, match="different model"):
    train(_cfg("model.trainable=top_n", "model.top_n=1"), str(fork), fork_from=workdir)
  assert not fork.exists()   # a fork that fails to restore leaves nothing behind


def test_more_steps_extend_a_finished_run_and_a_fork_starts_a_new_one(straight, tmp_path):
  import shutil
  workdir = str(tmp_path / "extended")
  shutil.copytree(straight[0], workdir)
  train(_cfg("rl.steps=7"), workdir)
  assert [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))] == list(
      range(1, 8))
  record = json.load(open(os.path.join(workdir, "config.json")))
  assert record["rl"]["steps"] == 7
  assert record["run"] == {"steps_changed": [{"at_step": 6, "from": 6, "to": 7}]}
  fork = str(tmp_path / "fork")
  args = ("rl.steps=8", "rl.group_size=4")   # a new run from the extended run's step 7
  train(_cfg(*args), fork, fork_from=workdir)
  assert sorted(os.listdir(os.path.join(fork, "checkpoints"))) == ["7", "8"]
  assert [json.loads(l)["step"] for l in open(os.path.join(fork, "metrics.jsonl"))] == [8]
  record = json.load(open(os.path.join(fork, "config.json")))
  assert record["rl"]["group_size"] == 4 and record["run"] == {
      "forked_from": {"workdir": workdir, "step": 7}}
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["6", "7"]   # untouched
  again = train(_cfg(*args), fork, fork_from=workdir)   # the same command again: a resume
  assert again["stopped"] is None
  assert sorted(os.listdir(os.path.join(fork, "checkpoints"))) == ["7", "8"]


def test_damaged_latest_checkpoint_resumes_from_the_one_before(straight, tmp_path, capsys):
  """A truncated array file in the latest checkpoint: one warning, the older checkpoint
  is resumed, and the finished run equals the uninterrupted one bit for bit."""
  import glob
  import shutil
  workdir = str(tmp_path / "damaged")
  shutil.copytree(straight[0], workdir)
  files = glob.glob(os.path.join(workdir, "checkpoints", "6", "state", "**", "d", "*"),
                    recursive=True)
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  out = train(_cfg(), workdir)
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert f"checkpoint {workdir}/checkpoints/6 does not restore (" in err
  assert "falling back to step 3" in err and "resumed from step 3" in err
  assert os.listdir(os.path.join(workdir, "damaged_checkpoints")) == ["6"]
  for a, b in zip(_leaves(straight[1]["trainable"]), _leaves(out["trainable"])):
    np.testing.assert_array_equal(a, b)


def test_non_finite_reward_stops_before_saving_and_metrics_stay_json(tmp_path, monkeypatch,
                                                                       capsys):
  from seekjax.rl import rewards as rewards_lib
  real, calls = rewards_lib.compute_rewards, []

  def poisoned_at_step_3(**kw):
    rewards, components, valid = real(**kw)
    calls.append(1)
    if len(calls) == 3:
      rewards = np.full_like(np.asarray(rewards, np.float32), np.nan)
    return rewards, components, valid
  monkeypatch.setattr(rewards_lib, "compute_rewards", poisoned_at_step_3)
  workdir = tmp_path / "w"
  rc = main([f"--config={TINY}", f"--workdir={workdir}", "--config.sft.steps=0",
             "--config.rl.steps=5", "--config.train.checkpoint_every=1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and err[-1] == ("error: step 3: non-finite reward (nan); stopped before saving "
                                 "this state (latest checkpoint: step 2)"), err[-3:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]   # keep 2: the good ones

  def refuse(name):
    raise ValueError(f"not JSON: {name}")
  rows = [json.loads(l, parse_constant=refuse) for l in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert rows[2]["reward"] is None and rows[1]["reward"] is not None


@pytest.mark.parametrize("args,message", [
    (["--config.rl.kl_beta=abc"], "config.rl.kl_beta: expected float, got 'abc'"),
    (["--config.rl.klbeta=0.1"], "unknown key 'klbeta' under rl; valid keys:"),
    (["--config.model.path=/nonexistent/model"], "config.model.path: '/nonexistent/model' does not exist"),
    (["--config.task.name=hotpotqa", "--config.task.path=/nonexistent.jsonl"], "does not exist"),
    (["--config.model.mesh_shape=(3,-1,1)"], "does not divide the 1 devices"),
])
def test_bad_input_gives_one_line(args, message, tmp_path, capsys):
  rc = main([f"--config={TINY}", f"--workdir={tmp_path / 'w'}"] + args)
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2
  assert err[-1].startswith("error: ") and message in err[-1], err[-1]
  assert not (tmp_path / "w").exists()   # nothing written: the corrected rerun is not "another run"


def test_batch_that_does_not_divide_the_data_axis(tmp_path):
  script = (f"import sys; sys.path.insert(0, {ROOT!r}); from seekjax.train import main; "
            f"sys.exit(main(['--config={TINY}', '--workdir={tmp_path / 'w'}', "
            "'--config.model.mesh_shape=(8,1,1)', '--config.rl.questions_per_step=3']))")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                     timeout=300, check=False)
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert "does not divide the mesh's data axes" in last, last


@pytest.mark.parametrize("name", sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                                        if f.endswith(".py") and not f.startswith("_")))
def test_every_config_loads_and_documents_itself(name):
  path = os.path.join(ROOT, "configs", name + ".py")
  cfg = configlib.load_config(path)
  text = open(path).read()
  assert text.startswith('"""') and "What it is for" in text and "What it needs" in text
  assert cfg.rl.kl_method in ("k1", "k2", "k3") and cfg.rl.kl_in in ("loss", "reward")
  assert cfg.rl.questions_per_step * cfg.rl.group_size % cfg.rl.micro_batches == 0
  configcheck.config_to_dict(cfg)  # no secret values


# ----------------------------------------------------------------------------- resume formats


def test_resume_from_an_old_single_process_data_state(straight, tmp_path, capsys):
  """Checkpoints written before multi-host support hold a bare grain state as their data
  item ({"next_index": N}, not {"processes": [...]}): a single-process run resumes from
  it exactly; an unusable data item is one line, exit 2."""
  import shutil
  workdir = str(tmp_path / "old")
  shutil.copytree(straight[0], workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  data_item = os.path.join(workdir, "checkpoints", "3", "data", "metadata")
  saved = json.load(open(data_item))
  assert list(saved) == ["processes"] and len(saved["processes"]) == 1
  with open(data_item, "w") as f:
    json.dump(saved["processes"][0], f)   # the old format
  out = train(_cfg(), workdir)
  for a, b in zip(_leaves(straight[1]["trainable"]), _leaves(out["trainable"])):
    np.testing.assert_array_equal(a, b)   # same data position: same result as the straight run
  rows = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows == [1, 2, 3, 4, 5, 6]

  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  with open(data_item, "w") as f:
    json.dump({}, f)
  capsys.readouterr()
  assert main([f"--config={TINY}", f"--workdir={workdir}"]) == 2
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith("error: ") and "no data iterator state to resume from" in last, last


def test_process_data_state_formats():
  from seekjax.run.checkpoint import CheckpointError, process_data_state
  assert process_data_state({"processes": [{"next_index": 2}, {"next_index": 3}]}, 1, 2) == {
      "next_index": 3}
  assert process_data_state({"next_index": 8}, 0, 1) == {"next_index": 8}
  for saved, count, message in [({"next_index": 8}, 2, "single-process run (older format)"),
                                ({"processes": [{}]}, 2, "of 1 processes; this run has 2"),
                                ({}, 1, "no data iterator state"), (None, 1, "got NoneType")]:
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
      process_data_state(saved, 0, count)


# ----------------------------------------------------------------------------- SIGTERM, writes


def _send_sigterm():
  import signal as signal_lib
  os.kill(os.getpid(), signal_lib.SIGTERM)


@pytest.mark.parametrize("phase", ["set-up", "cold start", "before the first RL step"])
def test_sigterm_before_the_rl_loop_exits_cleanly(phase, tmp_path, monkeypatch, capsys):
  """A SIGTERM that arrives before the RL loop: exit 0, one clear line, no traceback. In
  set-up or the cold start nothing new is saved (the next run starts over); once the
  cold start is done, its checkpoint (step 0) is written and the loop takes no step."""
  from seekjax import train as train_lib
  if phase == "set-up":
    build_task = train_lib.setup.build_task
    monkeypatch.setattr(train_lib.setup, "build_task",
                        lambda *a: (_send_sigterm(), build_task(*a))[1])
  elif phase == "cold start":
    from seekjax.coldstart import sft as sft_lib
    make_sft_step = sft_lib.make_sft_step

    def sft_step_that_is_preempted(*a, **kw):
      step, calls = make_sft_step(*a, **kw), []

      def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
          _send_sigterm()
        return step(*args, **kwargs)
      return wrapped
    monkeypatch.setattr(sft_lib, "make_sft_step", sft_step_that_is_preempted)
  else:
    make_step = train_lib.setup.make_step
    monkeypatch.setattr(train_lib.setup, "make_step",
                        lambda *a, **k: (_send_sigterm(), make_step(*a, **k))[1])
  workdir = str(tmp_path / "w")
  args = [f"--config={TINY}", f"--workdir={workdir}", "--config.sft.steps=4"]
  assert main(args) == 0
  err = capsys.readouterr().err
  assert "Traceback" not in err
  checkpoints = os.path.join(workdir, "checkpoints")
  listed = sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else []
  if phase == "before the first RL step":
    assert "SIGTERM received: finishing this step" in err
    assert "stopped (SIGTERM) after step 0; checkpoint saved" in err
    assert listed == ["0"] and not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  else:
    assert f"SIGTERM received during the {phase}: stopping" in err, err[-2000:]
    assert (f"stopped (SIGTERM) during the {phase}, before the RL loop: nothing new to save"
            in err), err[-2000:]
    assert listed == []
  if phase == "cold start":
    assert "[cold start]" in err and " 4/4 " not in err   # stopped early, not at the end
  assert err.strip().splitlines()[-1].startswith("[seekjax] stopped in ")
  if phase == "set-up":
    assert not os.path.exists(workdir)   # nothing is written before set-up has succeeded
  else:
    assert json.load(open(os.path.join(workdir, "config.json")))["sft"]["steps"] == 4


def test_config_json_is_written_atomically_and_a_broken_one_is_one_line(tmp_path, monkeypatch):
  from seekjax.run.workdir import prepare_workdir
  workdir = str(tmp_path / "w")
  prepare_workdir(workdir, _cfg(), False)
  path = os.path.join(workdir, "config.json")
  before = open(path).read()
  replaced = []
  real_replace = os.replace

  def replace(src, dst):
    replaced.append((src, dst))
    raise OSError("killed before the rename")
  monkeypatch.setattr(configlib.os, "replace", replace)
  with pytest.raises(OSError, match="killed before the rename"):
    prepare_workdir(workdir, _cfg("rl.kl_beta=0.5"), True)
  monkeypatch.setattr(configlib.os, "replace", real_replace)
  assert replaced and os.path.dirname(replaced[0][0]) == workdir and replaced[0][1] == path
  assert open(path).read() == before
  assert sorted(os.listdir(workdir)) == ["config.json", "config.yaml"]   # no temporary left
  with open(path, "w") as f:
    f.write(before[:len(before) // 2])   # what a non-atomic write killed midway leaves
  with pytest.raises(WorkdirError, match="config.json: unreadable") as info:
    prepare_workdir(workdir, _cfg(), False)
  assert "\n" not in str(info.value)


def _tensorboard_scalars(tb_dir: str, tag: str) -> dict:
  """{step: value} for `tag` as TensorBoard shows it: event files in name order, and a
  SessionLog START at step S (a writer's purge_step) drops the events at steps >= S."""
  import struct
  from tensorboardX.proto import event_pb2
  files = []
  for name in sorted(os.listdir(tb_dir)):
    data, events, at = open(os.path.join(tb_dir, name), "rb").read(), [], 0
    while at < len(data):
      (n,) = struct.unpack("<Q", data[at:at + 8])
      events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + n]))
      at += 12 + n + 4
    files.append(events)
  assert len(files) >= 2, "one writer's event file overwrote another's"
  shown = {}
  for event in (e for evs in files for e in evs):
    if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
      shown = {s: v for s, v in shown.items() if s < event.step}
    for value in event.summary.value:
      if value.tag == tag:
        assert event.step not in shown, f"step {event.step} logged twice"
        shown[event.step] = value.simple_value
  return shown


def test_metrics_on_resume_each_step_once_in_jsonl_and_tensorboard(tmp_path):
  from seekjax.run.metrics import MetricsWriter, steps_logged
  workdir = str(tmp_path)
  first = MetricsWriter(workdir, enabled=True)
  for step in range(1, 6):
    first.write(step, {"loss": float(step)})
  first.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 6, "loss"')   # killed mid-write
  second = MetricsWriter(workdir, enabled=True, resume_step=3)   # resumed from checkpoint 3
  for step in (4, 5, 6):
    second.write(step, {"loss": 10.0 * step})
  second.close()
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0),
                                                     (5, 50.0), (6, 60.0)]
  assert steps_logged(os.path.join(workdir, "metrics.jsonl")) == [1, 2, 3, 4, 5, 6]
  assert _tensorboard_scalars(os.path.join(workdir, "tb"), "loss") == {
      1: 1.0, 2: 2.0, 3: 3.0, 4: 40.0, 5: 50.0, 6: 60.0}


# ----------------------------------------------------------------------------- shared parts


def test_evaluation_restores_with_the_trainers_optimizer(straight, monkeypatch):
  from seekjax import evaluate as evaluate_lib
  from seekjax.run import setup as setup_lib
  workdir, out = straight
  calls, make = [], setup_lib.make_rl_optimizer
  monkeypatch.setattr(setup_lib, "make_rl_optimizer", lambda cfg: (calls.append(1), make(cfg))[1])
  restored = evaluate_lib.restore_policy(_cfg(), workdir, out["model"])
  assert calls == [1] and restored["step"] == 6
  for a, b in zip(_leaves(out["trainable"]), _leaves(restored["trainable"])):
    np.testing.assert_array_equal(a, b)


class AsyncOnlyHelper:
  """A helper with only the async interface (no `.reply`), as OpenAIHelper and
  LocalLMHelper: "need" for a message without a country, the gold answer otherwise;
  one message raises."""

  def __init__(self, answers: dict, failing: str):
    self.answers, self.failing, self.calls = answers, failing, []

  async def respond(self, message, history):
    import asyncio
    from seekjax.helpers.base import HelperReply
    await asyncio.sleep(0)
    self.calls.append((message, len(history)))
    if message == self.failing:
      raise RuntimeError("helper bug")
    if message.startswith("I need to know"):
      return HelperReply("need", "Which country do you mean?")
    desc = message[len("What is "):-1]
    return HelperReply("info", f"It is {self.answers[desc]}.")


def test_cold_start_demos_use_the_async_helper_interface():
  import asyncio
  from seekjax.run import setup as setup_lib
  from seekjax.coldstart import demos
  by_descriptor = {}
  for e in setup_lib.build_task(_cfg(), 0)[0]:
    meta = e.get("meta") or {}
    if meta.get("descriptor") and not meta.get("self_contained"):
      by_descriptor.setdefault(meta["descriptor"], e)
  examples = list(by_descriptor.values())[:6]
  answers = {e["meta"]["descriptor"]: e["answers"][0] for e in examples}
  helper = AsyncOnlyHelper(answers, failing=f"What is {examples[0]['meta']['descriptor']}?")
  assert not hasattr(helper, "reply")
  out = demos.make_demos(examples, helper, seed=0, need_fraction=0.5)
  assert len(out) == 5 and [d.question for d in out] == [e["question"] for e in examples[1:]]
  assert any(d.feedback_kinds[0] == "need" for d in out)      # need exchanges happened
  assert all(d.turns[-1].endswith(f"<answer>{answers[e['meta']['descriptor']]}</answer>")
             for d, e in zip(out, examples[1:]))

  async def from_a_running_loop():   # e.g. a notebook
    return demos.make_demos(examples, helper, seed=0, need_fraction=0.5)
  assert [d.turns for d in asyncio.run(from_a_running_loop())] == [d.turns for d in out]


class _Evaluated(Exception):
  pass


@pytest.mark.parametrize("stopped", ["SIGTERM", "stop_after", None])
def test_main_job_skips_evaluation_when_training_stopped(monkeypatch, tmp_path, capsys, stopped):
  """seekjax.main: a preempted (or stop_after) training exits 0 without evaluating."""
  from seekjax import evaluate as evaluate_lib
  from seekjax import main as main_job
  from seekjax import train as train_lib
  monkeypatch.setattr(train_lib, "train", lambda *a, **kw: {"stopped": stopped})

  def evaluate(*a, **kw):
    raise _Evaluated

  monkeypatch.setattr(evaluate_lib, "evaluate", evaluate)
  args = [f"--config={TINY}", f"--workdir={tmp_path / 'w'}"]
  if stopped is None:   # a finished training goes on to evaluation
    with pytest.raises(_Evaluated):
      main_job.main(args)
    return
  assert main_job.main(args) == 0
  lines = [l for l in capsys.readouterr().err.splitlines() if "evaluation skipped" in l]
  assert len(lines) == 1 and stopped in lines[0] and "rerun the same command" in lines[0]


def test_decomposition_demos_ask_the_bridge_then_the_fact():
  """With sft.decompose, two-hop questions get a two-message demo through the real
  KnowledgeHelper: the bridge entity first, then the fact about the bridge it named, and
  the answer is a gold alias the final feedback contains. Without it, the one-message demo
  (descriptor question) is dropped for these, as the helper's reply lacks the answer."""
  from seekjax.run import setup as setup_lib
  from seekjax.coldstart import demos
  cfg = _cfg("task.name=world_facts_mix", "task.max_train=400")
  train_ex = setup_lib.build_task(cfg, 0)[0]
  two_hop = [e for e in train_ex if (e.get("meta") or {}).get("hops")][:12]
  assert {e["qtype"] for e in two_hop} >= {"two_hop_currency", "two_hop_language"}
  assert any(e["private_facts"] for e in two_hop)      # private variants keep the hops
  helper = setup_lib.build_helper(cfg.helper)
  out = demos.make_demos(two_hop, helper, seed=0, need_fraction=0.0, decompose=True)
  assert len(out) >= 8
  for d in out:
    ex = next(e for e in two_hop if e["question"] == d.question)
    hops = ex["meta"]["hops"]
    assert len(d.turns) == 3 and d.feedback_kinds == ["info", "info"]
    assert f"<message>{hops['first']}</message>" in d.turns[0]
    bridge = next(b for b in hops["bridges"] if b in d.feedbacks[0])
    assert f"<message>{hops['then'].format(x=bridge)}</message>" in d.turns[1]
    answer = d.turns[2].split("<answer>")[1].split("</answer>")[0]
    assert answer in ex["answers"] and answer.lower() in d.feedbacks[1].lower()
    for s in ex["private_facts"]:                    # messages carry no personal detail
      assert s not in d.turns[0] + d.turns[1]
  plain = demos.make_demos(two_hop, helper, seed=0, need_fraction=0.0)
  assert len(plain) < len(out)
