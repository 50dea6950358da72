"""The trainer end to end on a tiny config: CLI outputs, exact resume, one-line errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from seekjax import configlib
from seekjax.rl.checkpoint import CheckpointMismatch
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
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
  cfg = json.load(open(os.path.join(workdir, "config.json")))
  assert cfg["rl"]["steps"] == 6 and cfg["helper"]["api_key_env"] == "OPENAI_API_KEY"


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


def test_workdir_of_another_run_is_refused(straight):
  workdir, _ = straight
  with pytest.raises(WorkdirError, match="another run's config"):
    train(_cfg("rl.kl_beta=0.5"), workdir)


def test_checkpoint_from_a_different_model_is_refused(straight, tmp_path):
  import shutil
  workdir = str(tmp_path / "other")
  shutil.copytree(straight[0], workdir)
  with pytest.raises(CheckpointMismatch, match="different model"):
    train(_cfg("model.trainable=top_n", "model.top_n=1"), workdir, overwrite=True)


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
  configlib.config_to_dict(cfg)  # no secret values
