"""The workdir layer without a model: remote (gs://) paths through epath, which run a
workdir holds, strict-JSON metrics, finite checks, and checkpoints that survive damage."""
import glob
import json
import os

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from seekjax.run import checkpoint, finite
from seekjax.run import workdir as workdir_lib
from seekjax.run.metrics import MetricsWriter, steps_logged

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")


def _strict(text: str) -> list:
  """Parse JSONL as strict JSON (NaN/Infinity refused)."""
  def refuse(name):
    raise ValueError(f"not JSON: {name}")
  return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


# ----------------------------------------------------------------------------- remote


class FakeBucket(MemoryFileSystem):
  """An in-memory stand-in for GCS, reached through epath's own gs:// backend (fsspec)."""

  protocol = ("gs", "gcs")
  store, pseudo_dirs = {}, [""]
  fail: BaseException | None = None   # set to make every call fail (an unreachable bucket)

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    return (path[len("gs://"):] if path.startswith("gs://") else path).rstrip("/")

  def _open(self, *a, **kw):
    if FakeBucket.fail is not None:
      raise FakeBucket.fail
    return super()._open(*a, **kw)

  def exists(self, path, **kw):
    if FakeBucket.fail is not None:
      raise FakeBucket.fail
    return super().exists(path, **kw)


@pytest.fixture
def bucket(monkeypatch):
  for name in ("gs", "gcs"):
    fsspec.register_implementation(name, FakeBucket, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  FakeBucket.store.clear()
  FakeBucket.fail = None
  monkeypatch.chdir(os.environ.get("TMPDIR", "/tmp"))
  yield FakeBucket.store
  FakeBucket.fail = None
  epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_remote_workdir_config_and_metrics_go_to_the_bucket(bucket, tmp_path, monkeypatch):
  from seekjax import configlib
  from seekjax.run.workdir import prepare_workdir
  monkeypatch.chdir(tmp_path)
  cfg = configlib.load_config(TINY)
  prepare_workdir("gs://bucket/run", cfg, overwrite=False)
  writer = MetricsWriter("gs://bucket/run", enabled=True)
  writer.write(1, {"loss": 1.0, "reward": float("nan")})
  writer.write(2, {"loss": 2.0, "reward": 0.5})
  writer.close()
  assert os.listdir(tmp_path) == []   # no local directory named "gs:"
  assert json.loads(bucket["bucket/run/config.json"].getvalue())["rl"]["steps"] == 6
  assert "bucket/run/config.yaml" in bucket
  rows = _strict(bucket["bucket/run/metrics.jsonl"].getvalue().decode())
  assert rows == [{"step": 1, "loss": 1.0, "reward": None}, {"step": 2, "loss": 2.0, "reward": 0.5}]
  assert any(k.startswith("bucket/run/tb/events.out.tfevents") and len(v.getvalue()) > 0
             for k, v in bucket.items())
  # a resume from step 1 drops step 2 from the remote file, as it does locally
  MetricsWriter("gs://bucket/run", enabled=True, resume_step=1).close()
  assert steps_logged("gs://bucket/run/metrics.jsonl") == [1]
  # the same workdir is the same run; another config is refused
  prepare_workdir("gs://bucket/run", cfg, overwrite=False)
  with pytest.raises(workdir_lib.WorkdirError, match="holds another run"):
    prepare_workdir("gs://bucket/run", configlib.apply_overrides(cfg, ["seed=3"]), False)


def test_remote_episode_log_writes_one_object_per_step(bucket):
  """On a bucket (no append) each step's episode records are one object, not a rewrite of
  a growing file; a resume removes the steps it samples again, and `episode_rows` reads
  the objects back in step order, as it reads a local episodes.jsonl."""
  from seekjax.run.metrics import EpisodeLog, episode_rows
  log = EpisodeLog("gs://bucket/run")
  for step in (1, 2, 3):
    log.write([{"step": step, "row": 0}, {"step": step, "row": 1, "x": float("nan")}])
  names = sorted(p.name for p in epath.Path("gs://bucket/run/episodes").iterdir())
  assert names == ["0000001.jsonl", "0000002.jsonl", "0000003.jsonl"]
  assert not epath.Path("gs://bucket/run/episodes.jsonl").exists()
  EpisodeLog("gs://bucket/run", resume_step=1).write([{"step": 2, "row": 5}])
  rows = episode_rows("gs://bucket/run")
  assert [(r["step"], r["row"]) for r in rows] == [(1, 0), (1, 1), (2, 5)]
  assert rows[1]["x"] is None   # strict JSON
  with pytest.raises(FileNotFoundError, match="train.log_episodes=True"):
    episode_rows("gs://bucket/other")


def test_remote_eval_results_go_to_the_bucket(bucket, monkeypatch):
  from seekjax.eval import results as results_lib
  monkeypatch.setattr(results_lib.report, "render", lambda results: "| table |")
  paths = results_lib.write({"methods": {}}, {}, [], "gs://bucket/run/eval")
  assert paths["json"] == "gs://bucket/run/eval/results.json"
  assert json.loads(bucket["bucket/run/eval/results.json"].getvalue()) == {"methods": {}}
  assert bucket["bucket/run/eval/results.md"].getvalue() == b"| table |"


def test_unreachable_workdir_fails_at_start_in_one_line(bucket, tmp_path, monkeypatch, capsys):
  """Before any work (the model is never built), one line; nothing written locally."""
  from seekjax.run import setup as setup_lib
  from seekjax.train import main
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(setup_lib, "build_model", lambda *a: pytest.fail("built a model"))
  FakeBucket.fail = PermissionError(403, "Forbidden: caller lacks storage.objects.create")
  assert main([f"--config={TINY}", "--workdir=gs://bucket/run"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: gs://bucket/run: cannot write (PermissionError: Forbidden: "
                 "caller lacks storage.objects.create)"], err
  assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- which run


def _run_cfg(**rl):
  return {"seed": 0, "rl": dict({"steps": 6, "group_size": 2}, **rl),
          "train": {"checkpoint_every": 3}}


@pytest.mark.parametrize("current,overwrite,has_checkpoint,outcome", [
    (_run_cfg(), False, True, []),                                   # the same run
    (_run_cfg(steps=10), False, True, ["rl.steps"]),                 # extended
    (_run_cfg(group_size=4), False, True, "rl.group_size"),          # another run
    (_run_cfg(group_size=4), True, True, "rl.group_size"),           # not even with --overwrite
    (_run_cfg(group_size=4), True, False, ["rl.group_size"]),        # no state yet: replaced
    (dict(_run_cfg(), train={"checkpoint_every": 1}), True, True, ["train.checkpoint_every"]),
    (dict(_run_cfg(), train={"checkpoint_every": 1}), False, True, "train.checkpoint_every"),
])
def test_a_resumed_run_matches_on_every_key_that_shapes_state_or_data(
    current, overwrite, has_checkpoint, outcome):
  saved = dict(_run_cfg(), run={"steps_changed": []})
  check = lambda: workdir_lib.check_same_run("W", saved, current, overwrite=overwrite,  # noqa
                                             has_checkpoint=has_checkpoint, fork_from=None)
  if isinstance(outcome, str):
    with pytest.raises(workdir_lib.WorkdirError, match=f"differs in {outcome}.*--fork_from=W"):
      check()
  else:
    assert check() == outcome


def test_fork_needs_a_new_workdir_and_steps_change_is_recorded():
  saved = _run_cfg()
  with pytest.raises(workdir_lib.WorkdirError, match="--fork_from starts a new workdir"):
    workdir_lib.check_same_run("W", saved, saved, overwrite=False, has_checkpoint=True,
                               fork_from="SRC")
  forked = dict(saved, run={"forked_from": {"workdir": "SRC", "step": 6}})   # its own rerun
  assert workdir_lib.check_same_run("W", forked, saved, overwrite=False, has_checkpoint=True,
                                    fork_from="SRC") == []
  record = workdir_lib.run_record(forked, _run_cfg(steps=9), ["rl.steps"], step=6)
  assert record["run"] == {"forked_from": {"workdir": "SRC", "step": 6},
                           "steps_changed": [{"at_step": 6, "from": 6, "to": 9}]}


# ----------------------------------------------------------------------------- finite


def test_metrics_jsonl_is_strict_json_with_null_for_non_finite(tmp_path):
  writer = MetricsWriter(str(tmp_path), enabled=True)
  writer.write(1, {"loss": float("nan"), "grad_norm": float("inf"), "reward": np.float32(-np.inf),
                   "em": 0.5})
  writer.close()
  rows = _strict((tmp_path / "metrics.jsonl").read_text())
  assert rows == [{"step": 1, "loss": None, "grad_norm": None, "reward": None, "em": 0.5}]


def test_nonfinite_term_and_params():
  assert finite.nonfinite_term({"loss": 1.0, "grad_norm": 2.0, "reward": 0.1}) is None
  assert finite.nonfinite_term({"loss": float("nan"), "grad_norm": float("inf")}) == "loss"
  assert finite.nonfinite_term({"loss": 1.0, "grad_norm": float("inf")}) == "grad_norm"
  tree = {"w": jnp.ones((3, 3)), "count": jnp.asarray(3, jnp.int32)}
  assert finite.all_finite(tree)
  assert not finite.all_finite(dict(tree, w=tree["w"].at[1, 2].set(jnp.nan)))


# ----------------------------------------------------------------------------- damage

FINGERPRINT = {"model": {"layers": 2}, "trainable": {"mode": "full"}}


def _state(step: int):
  w = jax.random.normal(jax.random.PRNGKey(step), (64, 64))
  return checkpoint.train_state({"w": w}, {"w": w + 1}, {"mu": jnp.zeros(3)}, step)


def _saved(workdir: str, steps=(3, 6)) -> None:
  ckpt = checkpoint.Checkpointer(workdir, keep=5, async_save=False)
  for s in steps:
    ckpt.save(s, _state(s), {"processes": [{"next_index": s}]}, FINGERPRINT, force=True)
  ckpt.close()


def _truncate_array_file(step_dir: str) -> None:
  files = [f for f in glob.glob(f"{step_dir}/state/**/d/*", recursive=True) if os.path.isfile(f)]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


DAMAGE = {
    "truncated array file": _truncate_array_file,
    "broken state metadata JSON": lambda d: open(f"{d}/state/_METADATA", "w").write('{"tree'),
    "broken meta JSON": lambda d: open(f"{d}/meta/metadata", "w").write("{"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_newest_that_restores(damage, tmp_path):
  workdir = str(tmp_path)
  _saved(workdir)
  DAMAGE[damage](f"{workdir}/checkpoints/6")
  lines = []
  ckpt = checkpoint.Checkpointer(workdir, keep=5, async_save=False)
  step, state, data = ckpt.restore_latest(_state(0), FINGERPRINT, log=lines.append)
  assert step == 3 and data == {"processes": [{"next_index": 3}]}
  np.testing.assert_array_equal(np.asarray(state["trainable"]["w"]),
                                np.asarray(_state(3)["trainable"]["w"]))
  assert len(lines) == 2 and "\n" not in "".join(lines)
  assert lines[0].startswith(f"checkpoint {workdir}/checkpoints/6 does not restore (")
  assert lines[0].endswith("falling back to step 3")
  # the damaged step is set aside: step 3 is the latest, and the run saves after it
  assert ckpt.all_steps() == [3] and os.listdir(f"{workdir}/damaged_checkpoints") == ["6"]
  ckpt.save(4, _state(4), {"processes": [{}]}, FINGERPRINT, force=True)
  ckpt.close()
  assert checkpoint.Checkpointer(workdir, keep=5).latest_step() == 4


def test_no_checkpoint_restores_is_one_line(tmp_path):
  workdir = str(tmp_path)
  _saved(workdir)
  DAMAGE["truncated array file"](f"{workdir}/checkpoints/6")
  DAMAGE["broken meta JSON"](f"{workdir}/checkpoints/3")
  ckpt = checkpoint.Checkpointer(workdir, keep=5, async_save=False)
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint restores") as info:
    ckpt.restore_latest(_state(0), FINGERPRINT, log=lambda m: None)
  assert "\n" not in str(info.value)
  assert ckpt.all_steps() == [3, 6]   # nothing moved when nothing restores
  ckpt.close()
