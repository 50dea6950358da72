"""The learning curve (seekjax/run/validation.py): a validation set carved from the train
split, evaluated every train.eval_every RL steps into metrics.jsonl, TensorBoard and a png."""
import json
import os

import pytest

from seekjax import configlib
from seekjax import train as train_lib
from seekjax.rl import cycle
from seekjax.run import setup, validation
from tests.test_train import TINY, _tensorboard_scalars


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


def test_split_validation_is_seeded_disjoint_and_keeps_the_order():
  train = [{"id": str(i)} for i in range(20)]
  rest, val = setup.split_validation(train, 5, seed=3)
  assert len(val) == 5 and len(rest) == 15
  assert {e["id"] for e in rest} | {e["id"] for e in val} == {e["id"] for e in train}
  assert not {e["id"] for e in rest} & {e["id"] for e in val}
  assert [int(e["id"]) for e in val] == sorted(int(e["id"]) for e in val)
  assert setup.split_validation(train, 5, seed=3) == (rest, val)        # seeded
  assert setup.split_validation(train, 5, seed=4)[1] != val
  assert setup.split_validation(train, 0, seed=3) == (train, [])
  with pytest.raises(setup.RunSetupError, match="val_size: 20 validation examples leave none"):
    setup.split_validation(train, 20, seed=3)


def test_validation_metrics_from_records():
  records = [dict(em=1.0, messages=2, leak=True, format_failure=False),
             dict(em=0.0, messages=0, leak=None, format_failure=True),
             dict(em=0.0, messages=1, leak=False, format_failure=False)]
  for r in records:
    r.update(f1=r["em"], helper_tokens=0, helper_errors=0, llm_leak=None, llm_judge_error=None,
             feedback_has_answer=None)
  got = validation.validation_metrics(records)
  assert got == pytest.approx({"val/em": 1 / 3, "val/messages_per_episode": 1.0,
                               "val/leak_rate": 0.5, "val/format_failure_rate": 1 / 3, "val/n": 3})
  no_private = validation.validation_metrics([dict(records[1])])
  assert "val/leak_rate" not in no_private and no_private["val/em"] == 0.0


def test_learning_curve_rows_tensorboard_and_plot_across_a_resume(tmp_path, monkeypatch):
  """A 4-step tiny run with eval_every=2, stopped after step 2 and resumed: validation at
  steps 0 (the cold start), 2 and 4, each once; RL and the cold start never see it."""
  workdir = str(tmp_path / "run")
  cfg = _cfg("rl.steps=4", "train.eval_every=2", "task.val_size=6", "train.checkpoint_every=2",
             "reward.cost_gate=any_correct")
  trained_on, demo_pool = set(), set()
  real_iteration, real_cold_start = cycle.rl_iteration, train_lib.cold_start

  def iteration(ctx, trainable, opt_state, ref, examples, rng, step=0):
    trained_on.update(e["id"] for e in examples)
    return real_iteration(ctx, trainable, opt_state, ref, examples, rng, step=step)

  def cold_start(cfg, model, spec, trainable, frozen, examples, *args, **kwargs):
    demo_pool.update(e["id"] for e in examples)
    return real_cold_start(cfg, model, spec, trainable, frozen, examples, *args, **kwargs)
  monkeypatch.setattr(cycle, "rl_iteration", iteration)
  monkeypatch.setattr(train_lib, "cold_start", cold_start)
  val_ids = {e["id"] for e in setup.build_parts(cfg, training=True).val_examples}

  train_lib.train(cfg, workdir, stop_after=2)
  train_lib.train(cfg, workdir)
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  rows = [json.loads(l) for l in lines]                      # strict JSON, every line
  assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
  val_steps = [r["step"] for r in rows if "val/em" in r]
  assert val_steps == [0, 2, 4]
  for r in rows:
    if r["step"] in (2, 4):
      assert "reward" in r and "kl" in r                    # on the step's own row
    if "val/em" in r:
      assert r["val/n"] == 6 and 0.0 <= r["val/em"] <= 1.0
      assert 0.0 <= r["val/format_failure_rate"] <= 1.0 and r["val/messages_per_episode"] >= 0
  assert set(_tensorboard_scalars(os.path.join(workdir, "tb"), "val/em")) == {0, 2, 4}
  png = os.path.join(workdir, validation.PLOT)
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert len(val_ids) == 6 and trained_on and demo_pool
  assert not val_ids & trained_on and not val_ids & demo_pool
  _, held_out = setup.build_task(cfg, cfg.seed)
  assert not val_ids & {e["id"] for e in held_out}        # carved from train, not held-out


def test_eval_every_without_a_validation_set_is_one_line(tmp_path, capsys):
  rc = train_lib.main([f"--config={TINY}", f"--workdir={tmp_path / 'w'}",
                       "--config.train.eval_every=2"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and err[-1].startswith("error: config.train.eval_every: needs a validation set")
  assert not (tmp_path / "w").exists()


def test_best_row_is_highest_em_then_fewest_messages_earliest_on_a_tie():
  rows = [{"step": 0, "val/em": 0.3, "val/messages_per_episode": 0.9},
          {"step": 10, "val/em": 0.4, "val/messages_per_episode": 0.9},
          {"step": 20, "val/em": 0.4, "val/messages_per_episode": 0.8},
          {"step": 30, "val/em": 0.4, "val/messages_per_episode": 0.8},
          {"step": 40, "val/em": 0.35, "val/messages_per_episode": 0.1}]
  assert validation.best_row(rows)["step"] == 20
  assert validation.best_row(rows[::-1])["step"] == 20    # by step, not by list order
  assert validation.best_row(rows[:2])["step"] == 10 and validation.best_row([]) is None


def test_best_val_keeps_the_best_validation_point_across_a_resume(tmp_path, monkeypatch):
  """select_checkpoint=best_val: the state of the best point of the validation curve
  (scripted here) is kept in WORKDIR/best_checkpoint, survives a resume, and is what
  `evaluate` restores; select_checkpoint=last restores the latest."""
  import numpy as np
  import jax
  from seekjax import evaluate as evaluate_lib
  from seekjax.run import checkpoint
  workdir = str(tmp_path / "run")
  cfg = _cfg("rl.steps=3", "train.eval_every=1", "task.val_size=6", "train.checkpoint_every=1",
             "train.select_checkpoint=best_val")
  script = iter([(0.2, 1.0), (0.5, 1.0), (0.5, 0.5), (0.4, 0.0)])   # steps 0..3: (EM, msgs)

  def scripted(ctx, trainable, examples, batch_size=0):
    em, msgs = next(script)
    return {"val/em": em, "val/messages_per_episode": msgs, "val/n": 6.0}
  monkeypatch.setattr(validation, "evaluate_policy", scripted)

  at_2 = train_lib.train(cfg, workdir, stop_after=2)          # best: step 2 (fewer messages)
  best = checkpoint.Checkpointer(workdir, name=checkpoint.BEST, async_save=False)
  assert best.all_steps() == [2]
  best.close()
  out = train_lib.train(cfg, workdir)                           # step 3 is worse: kept at 2
  best = checkpoint.Checkpointer(workdir, name=checkpoint.BEST, async_save=False)
  assert best.all_steps() == [2]
  best.close()
  chosen = evaluate_lib.restore_policy(cfg, workdir, out["model"])
  assert chosen["step"] == 2
  for a, b in zip(jax.tree.leaves(at_2["trainable"]), jax.tree.leaves(chosen["trainable"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  last = configlib.apply_overrides(cfg, ["train.select_checkpoint=last"])
  assert evaluate_lib.restore_policy(last, workdir, out["model"])["step"] == 3


def test_best_val_needs_the_curve_and_its_checkpoint(tmp_path, capsys):
  from seekjax import evaluate as evaluate_lib
  from seekjax.run import checkpoint
  rc = train_lib.main([f"--config={TINY}", f"--workdir={tmp_path / 'w'}",
                       "--config.train.select_checkpoint=best_val"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and err[-1].startswith('error: config.train.select_checkpoint="best_val": '
                                        "needs the validation curve")
  # a workdir trained without it: evaluating its best point is one line, not the latest
  (tmp_path / "v" / checkpoint.LATEST).mkdir(parents=True)
  cfg = _cfg("train.select_checkpoint=best_val")
  with pytest.raises(checkpoint.CheckpointError, match=r"no best validation checkpoint.*"
                                                       r"select_checkpoint=last$"):
    evaluate_lib.restore_policy(cfg, str(tmp_path / "v"), model=None)


def test_a_fork_reads_its_sources_step_0_point_when_the_settings_agree(tmp_path, monkeypatch):
  """A fork of a cold start that measured its validation point reads it (same weights, same
  validation settings: only RL settings differ) instead of answering again; a fork whose
  rollouts take other rows (which can move greedy numerics) measures its own."""
  answered = []

  def scripted(ctx, trainable, examples, batch_size=0):
    answered.append(batch_size)
    return {"val/em": 0.25 * len(answered), "val/messages_per_episode": 1.0, "val/n": 6.0,
            "val/seconds": 3.0}
  monkeypatch.setattr(validation, "evaluate_policy", scripted)
  common = ("train.eval_every=1", "task.val_size=6")
  cold = str(tmp_path / "cold")
  train_lib.train(_cfg("rl.steps=0", *common), cold)
  assert len(answered) == 1

  same = str(tmp_path / "same")
  train_lib.train(_cfg("rl.steps=1", "optim.lr=5e-4", "reward.cost_gate=any_correct", *common),
                  same, fork_from=cold)
  rows = [json.loads(l) for l in open(os.path.join(same, "metrics.jsonl"))]
  assert len(answered) == 2                            # step 1 only
  assert rows[0]["step"] == 0 and rows[0]["val/em"] == 0.25 and rows[0]["val/seconds"] == 0.0
  assert rows[1]["step"] == 1 and rows[1]["val/em"] == 0.5

  other = str(tmp_path / "other")
  cfg = _cfg("rl.steps=1", "rl.questions_per_step=1", *common)
  train_lib.train(cfg, other, fork_from=cold)
  rows = [json.loads(l) for l in open(os.path.join(other, "metrics.jsonl"))]
  assert len(answered) == 4 and rows[0]["val/em"] == 0.75   # step 0 answered again
