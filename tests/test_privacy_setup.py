"""`task.privacy` in the run's set-up: the LLM recipe at a loopback endpoint, drops counted and
logged, crash and resume from the workdir's cache, templates on HotpotQA, the private_qa
reader, and private facts reaching the leak judge in RL and in evaluation."""
import collections
import json
import os
import types

import numpy as np
import pytest

from loopback_server import Behavior, loopback_server, loopback_server_module  # noqa: F401
from seekjax import configlib
from seekjax.eval.baselines import MethodRun
from seekjax.eval.metrics import score_run
from seekjax.helpers import RuleLeakJudge
from seekjax.rl.cycle import score_episodes
from seekjax.run import setup as setup_lib
from seekjax.tasks import read_qa
from seekjax.tasks.privacy_cache import dropped_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
NAMES = ("Zofia", "Tomasz", "Wanjiru", "Chidi", "Ximena", "Oskar", "Keiko", "Farid", "Dalia",
         "Nikhil", "Ingrid", "Emeka")
N = len(NAMES)


def _hotpot_row(i: int) -> dict:
  return {"_id": f"h{i}", "answer": f"Town{i}", "question": f"In which city was Band{i} formed?",
          "supporting_facts": [[f"Band{i}", 0]],
          "context": [[f"Band{i}", [f"Band{i} is a band from Town{i}."]]], "type": "bridge"}


@pytest.fixture
def hotpot_file(tmp_path):
  path = tmp_path / "hotpot.json"
  path.write_text(json.dumps([_hotpot_row(i) for i in range(N)]))
  return str(path)


# Row i's scripted outcome: 1 changes the answer, 2 lists no facts, 3 states the answer.
DROPS = {1: "answer_changed", 2: "no_private_facts", 3: "answer_in_question"}


def recipe_responder(request: dict) -> str:
  """Answers the recipe's three steps for the fixture's rows (and the start probe)."""
  chat = request.get("messages") or []
  users = [m["content"] for m in chat if m["role"] == "user"]
  if users == ["ping"]:
    return "pong"
  i = int(users[0].split("Band", 1)[1].split(" ", 1)[0])
  name = NAMES[i]
  if len(users) == 1:
    facts = [] if i == 2 else [f"the user's cousin {name} joined Band{i} after a messy divorce"]
    return json.dumps({"private_facts": facts})
  if len(users) == 2:
    return f"{name}'s band was formed in the city where Band{i} was formed."
  question = (f"My cousin {name} joined Band{i} after a messy divorce. In which city was "
              f"{name}'s band formed?")
  if i == 3:
    question += f" Was it Town{i}?"
  return json.dumps({"question": question, "answer": "Town99" if i == 1 else f"town{i}",
                     "private_spans": [f"My cousin {name}"]})


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


def _llm_cfg(server, hotpot_file, *more):
  return _cfg("task.name=hotpotqa", f"task.path={hotpot_file}", "task.privacy=llm",
              "task.private_fraction=1.0", "task.eval_fraction=0.5", "helper.kind=openai",
              f"helper.base_url={server.base_url}", "helper.model=m", "helper.api_key_env=",
              "helper.max_retries=0", "helper.concurrency=2", *more)


def _steps_by_row(server) -> collections.Counter:
  """Recipe requests the server answered, per fixture row."""
  out = collections.Counter()
  for call in server.calls:
    users = [m["content"] for m in (call.body or {}).get("messages", []) if m["role"] == "user"]
    if users != ["ping"] and call.behavior.kind == "ok":
      out[int(users[0].split("Band", 1)[1].split(" ", 1)[0])] += 1
  return out


def test_llm_privacy_through_an_endpoint_checks_counts_and_logs(loopback_server, hotpot_file,
                                                                tmp_path, capsys):
  loopback_server.responder = recipe_responder
  train, evaluation = setup_lib.build_task(_llm_cfg(loopback_server, hotpot_file), 0,
                                           tmp_path / "w")
  rows = train + evaluation
  assert train and evaluation
  assert sorted(r["meta"]["source_id"] for r in rows) == sorted(
      f"h{i}" for i in range(N) if i not in DROPS)
  for r in rows:
    i = int(r["meta"]["source_id"][1:])
    assert r["answers"] == [f"Town{i}"] and r["task"] == "hotpotqa"
    assert r["private_facts"] == [f"the user's cousin {NAMES[i]} joined Band{i} after a "
                                  "messy divorce"]
    assert NAMES[i] in r["question"] and f"Town{i}" not in r["question"]
  assert _steps_by_row(loopback_server) == {i: 3 if i != 2 else 1 for i in range(N)}
  lines = [l for l in capsys.readouterr().err.splitlines() if "privacy=llm" in l]
  assert lines == [f"[seekjax] task privacy=llm: kept {N - 3} of {N}; dropped 3 "
                   "(answer_changed=1, answer_in_question=1, no_private_facts=1); "
                   f"{3 * N - 2} requests"]


def test_a_crash_loses_nothing_and_a_rerun_asks_nothing_twice(loopback_server, hotpot_file,
                                                             tmp_path):
  """The endpoint dies after k requests (each later one fails): rows finished before are on
  disk; the rerun asks only for the rest, and the cache ends complete."""
  loopback_server.responder = recipe_responder
  cfg, workdir = _llm_cfg(loopback_server, hotpot_file), tmp_path / "w"
  k = 14
  loopback_server.script(*[Behavior("ok")] * k)
  loopback_server.default = Behavior("status", status=500)
  try:
    first = setup_lib.build_task(cfg, 0, workdir)
  finally:
    loopback_server.default = Behavior("ok")
  path = setup_lib.privacy_cache_path(cfg, workdir)
  cached = [json.loads(l)["meta"]["source_id"] for l in path.read_text().splitlines()]
  done_first = _steps_by_row(loopback_server)
  finished = {i for i in range(N) if f"h{i}" in cached or dropped_in(path, i)}
  assert 0 < len(cached) < N - len(DROPS)
  assert sum(len(s) for s in first) == len(cached)   # rows without an answer are left out
  loopback_server.calls.clear()
  second = setup_lib.build_task(cfg, 0, workdir)
  done_second = _steps_by_row(loopback_server)
  assert finished and not finished & set(done_second)            # nothing asked twice
  assert set(done_second) == set(range(N)) - finished
  lines = [json.loads(l) for l in path.read_text().splitlines()]
  assert sorted(l["meta"]["source_id"] for l in lines) == sorted(
      f"h{i}" for i in range(N) if i not in DROPS)                # complete, no duplicates
  assert sorted(r["id"] for s in second for r in s) == sorted(l["id"] for l in lines)
  assert setup_lib.build_task(cfg, 0, workdir) == second          # a third run: all cached
  assert set(done_first) | set(done_second) == set(range(N))


def dropped_in(path, i: int) -> bool:
  drops = dropped_path(path)
  return drops.exists() and any(json.loads(l)["source_id"] == f"h{i}"
                                for l in drops.read_text().splitlines())


def test_the_cached_rows_load_back_as_a_task(loopback_server, hotpot_file, tmp_path):
  loopback_server.responder = recipe_responder
  cfg = _llm_cfg(loopback_server, hotpot_file)
  train, evaluation = setup_lib.build_task(cfg, 0, tmp_path / "w")
  path = os.fspath(setup_lib.privacy_cache_path(cfg, tmp_path / "w"))
  loaded = read_qa(path, "private_qa", strict=True)
  assert sorted(loaded, key=lambda r: r["id"]) == sorted(train + evaluation,
                                                         key=lambda r: r["id"])
  again = setup_lib.build_task(_cfg("task.name=private_qa", f"task.path={path}",
                                    "task.eval_fraction=0.5"), 0)
  assert sorted(r["id"] for s in again for r in s) == sorted(r["id"] for r in loaded)
  assert all(r["private_facts"] for s in again for r in s)


def test_template_privacy_on_hotpotqa(hotpot_file, capsys):
  cfg = _cfg("task.name=hotpotqa", f"task.path={hotpot_file}", "task.privacy=template",
             "task.private_fraction=0.5", "task.eval_fraction=0.5")
  public = setup_lib.build_task(_cfg("task.name=hotpotqa", f"task.path={hotpot_file}",
                                     "task.eval_fraction=0.5"), 0)
  private = setup_lib.build_task(cfg, 0)
  by_id = {e["id"]: e for s in public for e in s}
  rows = [e for s in private for e in s]
  made = [e for e in rows if e["private_facts"]]
  assert 0 < len(made) < len(rows) == N
  for e in made:
    source = by_id[e["meta"]["source_id"]]
    assert source["question"] in e["question"] and e["answers"] == source["answers"]
    assert e["meta"]["privacy_template"].startswith("gen_")
  assert all(e == by_id[e["id"]] for e in rows if not e["private_facts"])
  assert f"task privacy=template: kept {len(made)} of {len(made)}" in capsys.readouterr().err
  assert setup_lib.build_task(cfg, 0) == private                  # deterministic


class Episodes(types.SimpleNamespace):
  """The fields of a rollout's episodes that scoring reads."""

  def __len__(self):
    return len(self.answers)


def _leaky_and_safe(example):
  name = example["private_spans"][0]
  return [f"My {example['private_spans'][1][3:]} {name} asks: where was the band formed?"], \
      ["In which city was the band formed?"]


def test_private_facts_reach_the_leak_judge_in_rl_and_evaluation(hotpot_file):
  cfg = _cfg("task.name=hotpotqa", f"task.path={hotpot_file}", "task.privacy=template",
             "task.private_fraction=1.0", "task.eval_fraction=0.5")
  train, evaluation = setup_lib.build_task(cfg, 0)
  example = (train + evaluation)[0]
  leaky, safe = _leaky_and_safe(example)
  episodes = Episodes(question_index=np.zeros(2, np.int32), answers=["x", "x"],
                      messages=[leaky, safe], transcripts=["", ""])
  scored = score_episodes(episodes, [example], "em", RuleLeakJudge())
  assert scored["leak"].tolist() == [1.0, 0.0]
  run = MethodRun(name="m", answers=["x", "x"], messages=[leaky, safe],
                  helper_tokens=np.zeros(2, np.int32), helper_errors=np.zeros(2, np.int32),
                  transcripts=["", ""])
  records = score_run(run, [example, example], RuleLeakJudge())
  assert [r["private"] for r in records] == [True, True]
  assert [r["leak"] for r in records] == [True, False]


@pytest.mark.parametrize("overrides, match", [
    (("task.privacy=template",), "world_facts_mix' has its own"),
    (("task.privacy=llm", "task.name=world_facts", "task.max_train=2", "task.max_eval=1"),
     "privacy_base_url: empty"),
    (("task.privacy=llm", "task.name=world_facts", "task.privacy_base_url=http://x/v1"),
     "privacy_model: empty"),
])
def test_privacy_settings_that_cannot_run_fail_in_one_line(overrides, match):
  with pytest.raises(setup_lib.RunSetupError, match=match) as e:
    setup_lib.build_task(_cfg(*overrides), 0)
  assert "\n" not in str(e.value)


def test_an_unreachable_privacy_endpoint_fails_in_one_line(hotpot_file, tmp_path):
  cfg = _cfg("task.name=hotpotqa", f"task.path={hotpot_file}", "task.privacy=llm",
             "task.privacy_base_url=http://127.0.0.1:9/v1", "task.privacy_model=m",
             "helper.max_retries=0", "task.privacy_api_key_env=")
  with pytest.raises(setup_lib.RunSetupError, match="privacy_base_url: .*unreachable") as e:
    setup_lib.build_task(cfg, 0, tmp_path / "w")
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("entry", ["train", "evaluate"])
def test_both_entry_points_give_the_task_their_workdir(entry, tmp_path, monkeypatch):
  """The LLM rows are cached in the run's workdir, so evaluation reuses training's rows."""
  import importlib
  main = importlib.import_module(f"seekjax.{entry}").main
  seen = []

  def build_task(cfg, seed, workdir=None, should_stop=None):
    seen.append(workdir)
    raise setup_lib.RunSetupError("stop after the task")
  monkeypatch.setattr(setup_lib, "build_task", build_task)
  workdir = tmp_path / "w"
  assert main([f"--config={TINY}", f"--workdir={workdir}"]) == 2
  assert seen == [str(workdir)]
