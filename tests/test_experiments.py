"""Each study script runs end to end on a tiny grid, writing its table and PNGs, and resumes."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script,extra,pngs", [
    ("scaling.py", [], ["scaling_messages_per_episode.png", "scaling_em.png"]),
    ("scaling.py", ["--slm_axis", "knowledge"], ["scaling_messages_per_episode.png"]),
    ("constraints.py", [], ["frontier_messages.png", "frontier_leak.png"]),
    ("transfer.py", [], ["transfer_em.png"]),
])
def test_study_runs_on_a_tiny_grid(script, extra, pngs, tmp_path):
  out = tmp_path / "out"
  cmd = [sys.executable, os.path.join(ROOT, "experiments", script), "--out", str(out), "--tiny"]
  cmd += extra
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (out / "results.md").exists() and (out / "results.json").exists()
  for p in pngs:
    assert (out / p).stat().st_size > 1000
  if extra:   # the knowledge axis: facts were taught, and the SLM alone was evaluated
    rows = json.load(open(out / "results.json"))
    assert [row["slm_knowledge"] for row in rows] == [0.5, 0.5]
    assert all("slm_cot_em" in row for row in rows)
    assert "knowledge: teaching" in r.stderr and "taught facts" in r.stderr
  # A rerun finds every cell finished and only rewrites the table.
  r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
  assert r2.returncode == 0 and "[grid] cell" not in r2.stderr


def test_asking_split_from_episodes(tmp_path, capsys):
  """experiments/asking_split.py recomputes the asking/answering split of an old run."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import asking_split
  fb = "<message>q</message><feedback><info>The capital of Eritrea is Asmara.</info></feedback>"
  rows = [dict(method="dynamic", answers=["Asmara"], answer="Asmara", messages=["q"],
               transcript=fb + "<answer>Asmara</answer>"),
          dict(method="dynamic", answers=["Lima"], answer="Cusco", messages=["q"],
               transcript="<message>q</message><feedback><info>Peru.</info></feedback>"),
          dict(method="dynamic", answers=["5"], answer="5", messages=[], transcript="<answer>5</answer>"),
          dict(method="slm_cot", answers=["5"], answer="4", messages=[], transcript="")]
  path = tmp_path / "episodes.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert asking_split.main([str(path)]) == 0
  out = capsys.readouterr().out
  # 1 of 3 episodes had the answer in a reply (EM 1 there); 1 of the other 2 right
  assert "| dynamic | 0.333 | 1.000 | 0.500 | 0.667 |" in out and "slm_cot" not in out
  assert asking_split.main([str(tmp_path / "missing.jsonl")]) == 2


def test_study_cell_lists_parse_and_refuse_bad_ones():
  import argparse
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import constraints
  import scaling
  assert scaling._cells("1:1,0.5:0.8") == [(1.0, 1.0), (0.5, 0.8)]
  assert constraints._cells("0.1:0.5,0:0") == [(0.1, 0.5), (0.0, 0.0)]
  for parse in (scaling._cells, constraints._cells):
    with pytest.raises(argparse.ArgumentTypeError, match="pairs"):
      parse("0.1:a")
    with pytest.raises(argparse.ArgumentTypeError, match="pairs"):
      parse("0.1")
  assert set(scaling.AXES) == {"layers", "knowledge"}


def _write_metrics(path, rows):
  path.mkdir(parents=True, exist_ok=True)
  with open(path / "metrics.jsonl", "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    f.write('{"step": 9, "rew')   # a killed run's partial last line is skipped


def _rl_rows():
  rows = [{"step": 0, "val/em": 0.25, "val/messages_per_episode": 1.0}]
  for s in range(1, 5):
    rows.append({"step": s, "reward": 0.1 * s, "em": 0.1 * s, "messages_per_episode": 1.0,
                 "leak_rate": 0.0, "groups_zero_advantage": 0.5 if s <= 2 else 0.0,
                 "group_reward_std": 0.2, "groups_without_correct": 0.5, "kl": 0.01 * s,
                 "step_time": 10.0})
  rows[2]["val/em"] = 0.5   # step 2 also validated
  return rows


def test_train_report_summarizes_windows_of_steps(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import train_report  # pylint: disable=import-outside-toplevel
  _write_metrics(tmp_path / "run", _rl_rows())
  rows = train_report.read_metrics(str(tmp_path / "run"))
  first, second = train_report.windows(rows, 2)
  assert first["steps"] == "1-2" and second["steps"] == "3-4"
  assert first["em"] == pytest.approx(0.15) and second["em"] == pytest.approx(0.35)
  assert first["groups_zero_advantage"] == 0.5 and second["groups_zero_advantage"] == 0.0
  assert first["kl"] == pytest.approx(0.02) and second["kl"] == pytest.approx(0.04)
  assert first["val"] == "0.500 @ 2" and second["val"] == "–"
  with pytest.raises(ValueError, match="--window"):
    train_report.windows(rows, 0)


def test_levers_summary_reads_the_validation_curve_and_diagnostics(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import levers  # pylint: disable=import-outside-toplevel
  _write_metrics(tmp_path / "lever", _rl_rows())
  row = levers.summarize("x", str(tmp_path / "lever"), ["python", "-m", "seekjax.train"], 42.0)
  assert row["val_curve"] == [(0, 0.25), (2, 0.5)]
  assert row["val_em_start"] == 0.25 and row["val_em_end"] == 0.5
  assert row["steps"] == 4 and row["kl_end"] == pytest.approx(0.04)
  assert row["groups_zero_advantage"] == pytest.approx(0.25)
  text = levers.write_report(str(tmp_path), [row], "note")
  assert "| x | 0.250 | 0.500 |" in text and (tmp_path / "levers.json").exists()


def test_lever_forks_keep_the_long_runs_lr_schedule():
  """A short fork of a long run keeps its rl.steps (the cosine schedule's length) and
  stops early; without --schedule_steps the fork's schedule is its own length."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import levers  # pylint: disable=import-outside-toplevel
  cmd = levers.lever_command("w", "long_lr3e-4", ["task.val_size=48"], 16, 80, "cold")
  assert "--config.rl.steps=80" in cmd and cmd[-1] == "--stop_after=16"
  assert "--fork_from=cold" in cmd and "--config.optim.lr=3e-4" in cmd
  short = levers.lever_command("w", "default", [], 8, 0, "cold")
  assert "--config.rl.steps=8" in short and not any(c.startswith("--stop_after") for c in short)



def test_lever_sweeps_pin_the_settings_their_levers_are_defined_against():
  """The default config moved to the long config's RL settings; a sweep still starts from
  the settings its lever names refer to (lr 2e-5, no gate...), and --set and each lever's
  own overrides come after them, so they win."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import levers  # pylint: disable=import-outside-toplevel
  common = levers.shared(48, 4) + ["sft.restate_reply=true"]
  assert "optim.lr=2e-5" in common and "reward.cost_gate=none" in common
  cmd = levers.lever_command("w", "gate_lr1e-4", common, 8, 0, "cold")
  lr = [c for c in cmd if c.startswith("--config.optim.lr=")]
  assert lr == ["--config.optim.lr=2e-5", "--config.optim.lr=1e-4"]   # the lever's is last
  restate = [c for c in cmd if c.startswith("--config.sft.restate_reply=")]
  assert restate[-1] == "--config.sft.restate_reply=true"


def test_subset_report_slices_the_same_questions_for_every_method(tmp_path, capsys):
  """experiments/subset_report.py: EM, messages and leak over a slice of held-out, and the
  paired differences there, against a direct computation."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import subset_report
  ems = {"dynamic": [0, 0, 1, 1, 1, 1], "cold_start": [1, 1, 0, 1, 0, 0],
         "static_interaction": [1, 1, 1, 0, 0, 0]}
  methods = {name: {"episodes": [
      dict(id=f"q{i}", em=e, f1=float(e), messages=1 + (name == "dynamic") * (i % 2),
           helper_tokens=3, private=i % 2 == 0, helper_errors=0, format_failure=0.0,
           leak=int(name == "static_interaction") if i % 2 == 0 else None, llm_leak=None,
           llm_judge_error=None, feedback_has_answer=bool(e)) for i, e in enumerate(v)]}
      for name, v in ems.items()}
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "results.json").write_text(json.dumps({"methods": methods}))
  assert subset_report.main([str(tmp_path), "--start", "2"]) == 0
  out = capsys.readouterr().out
  # questions 2-5: dynamic 4/4, cold_start 1/4, static 1/4; dynamic sends 1.5 messages
  assert "| dynamic | 4 | 1.000 [1.000, 1.000] | 1.50 | 0.000 (2) |" in out
  assert "| static_interaction | 4 | 0.250" in out and "1.000 (2) |" in out
  assert "| dynamic - cold_start | 4 | +0.750 |" in out
  methods["cold_start"]["episodes"][3]["id"] = "other"
  (tmp_path / "eval" / "results.json").write_text(json.dumps({"methods": methods}))
  with pytest.raises(SystemExit, match="other questions"):
    subset_report.main([str(tmp_path), "--start", "2"])
  with pytest.raises(SystemExit, match="no questions"):
    subset_report.main([str(tmp_path), "--start", "10"])


def test_trace_asking_tabulates_windows_from_episode_records(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import trace_asking  # pylint: disable=import-outside-toplevel
  # two steps, one group of 2 each: step 1 the asker is right (pushes toward asking),
  # step 2 the asker is wrong and pays the message cost (pushes away)
  rows = []
  for step, (asker_em, alone_em) in ((1, (1.0, 0.0)), (2, (0.0, 1.0))):
    for row, (asked, em) in enumerate(((1, asker_em), (0, alone_em))):
      comps = {"score": em, "message_cost": -0.1 * asked}
      reward = sum(comps.values())
      rows.append({"step": step, "row": row, "group": 0, "num_messages": asked, "em": em,
                   "reply_held": float(asked), "format_ok": 1.0, "leak": 0.0, "valid": 1.0,
                   "components": comps, "reward": reward, "advantage": 0.0})
  for step in (1, 2):   # GRPO advantages of each group of 2: +-1
    a, b = [r for r in rows if r["step"] == step]
    a["advantage"], b["advantage"] = (1.0, -1.0) if a["reward"] > b["reward"] else (-1.0, 1.0)
  (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                           + '{"step": 3, "ro')   # a partial last line
  steps = trace_asking.load(str(tmp_path))
  assert sorted(steps) == [1, 2]
  first = trace_asking.window_row(steps[1], 2)
  assert first["asked"] == 0.5 and first["em_asked"] == 1.0 and first["em_alone"] == 0.0
  assert first["push/total"] == pytest.approx(0.5)
  # rewards 0.9 and 0: centred +-0.45 -> advantages +-1, a scale of 1 / 0.45; the score
  # centred is +0.5 for the asker, the cost -0.05; the push is their mean over 2 episodes
  assert first["push/score"] == pytest.approx(0.5 * 0.5 / 0.45)
  assert first["push/message_cost"] == pytest.approx(-0.05 * 0.5 / 0.45)
  assert first["push/score"] + first["push/message_cost"] == pytest.approx(0.5)
  second = trace_asking.window_row(steps[2], 2)
  assert second["push/total"] == pytest.approx(-0.5)
  text = trace_asking.table(steps, 1)
  assert text.count("\n") == 3 and "| 1-1 |" in text and "push/score" in text
  with pytest.raises(SystemExit, match="no such file"):
    trace_asking.load(str(tmp_path / "missing"))


def test_helper_recall_counts_replies_that_hold_a_gold_alias():
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import helper_recall  # pylint: disable=import-outside-toplevel
  from seekjax.helpers.knowledge import KnowledgeHelper  # pylint: disable=import-outside-toplevel
  helper = KnowledgeHelper(["The capital of Eritrea is Asmara.", "The currency of Peru is the sol."],
                           entities=["Eritrea", "Peru"], top_k=1)
  examples = [
      {"question": "What is the capital of Eritrea?", "answers": ["Asmara"], "qtype": "capital"},
      {"question": "What currency does Peru use?", "answers": ["Peruvian sol", "PEN"],
       "qtype": "currency"},
      {"question": "My aunt lives in Eritrea. Its capital?", "answers": ["Asmara"],
       "qtype": "capital", "private_facts": ["the user's aunt lives in Eritrea"]}]
  assert helper_recall.recall_by_type(examples, helper) == {"capital": (1, 1), "currency": (0, 1)}
