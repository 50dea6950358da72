"""The paraphrase check fixture (seekjax/tasks/data/world_paraphrase.jsonl): gold answers
from countryinfo through the task's own builder, and no question in a template's words."""
import collections
import re

import pytest

from seekjax.tasks import load_countries, task_examples, world_facts_examples
from seekjax.tasks import privacy_templates as pt
from seekjax.tasks import world_questions as wq
from seekjax.tasks.paraphrase import world_paraphrase_examples
from seekjax.tasks.privacy_checks import row_problem, states_phrase

ROWS = world_paraphrase_examples()
SOURCES = {e["id"]: e for e in world_facts_examples(0)}


def _pattern(template: str) -> re.Pattern:
  """A template with each {slot} matching any text, anchored at both ends."""
  parts = re.split(r"\{[a-z]+\}", template)
  return re.compile("(?is)" + "(.+)".join(re.escape(p) for p in parts))


TEMPLATES = ([p for phrases in wq._PHRASES.values() for p in phrases]   # pylint: disable=protected-access
             + [q for kind in pt.KIND_TEMPLATES.values() for _, q, _ in kind]
             + [q for _, q in pt.GENERIC_TEMPLATES])
PATTERNS = [_pattern(t) for t in TEMPLATES]


def test_fixture_has_each_variant_and_loads_as_a_task():
  counts = collections.Counter(r["meta"]["variant"] for r in ROWS)
  assert counts["one_hop"] >= 8 and counts["two_hop"] >= 8 and counts["private"] >= 5
  assert len({r["id"] for r in ROWS}) == len(ROWS) >= 24
  assert task_examples("world_paraphrase") == ROWS
  assert all(bool(r["private_facts"]) == (r["meta"]["variant"] == "private") for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_gold_answers_are_countryinfos(row):
  source = SOURCES[row["meta"]["source_id"]]   # the same fact, from the task's own builder
  assert row["answers"] == source["answers"]
  assert (row["qtype"], row["entity"]) == (source["qtype"], source["entity"])
  if row["qtype"] == "capital":   # and straight from the cleaned countryinfo records
    country = next(c for c in load_countries() if c.name == row["entity"])
    assert row["answers"] == list(country.capital_aliases)


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_no_question_is_in_a_templates_words(row):
  q = row["question"]
  assert not [t for t, p in zip(TEMPLATES, PATTERNS) if p.fullmatch(q)]
  meta = SOURCES[row["meta"]["source_id"]]["meta"]
  assert meta["descriptor"].lower() not in q.lower()   # nor the privacy variants' phrase
  assert not any(states_phrase(q, a) for a in row["answers"])   # the answer is not given
  if row["meta"]["variant"] == "private":   # a private row passes the privacy rows' checks
    assert row_problem(row, SOURCES[row["meta"]["source_id"]]) is None


def test_the_template_patterns_catch_template_questions():
  """The check above has teeth: every generated question of every seed matches one."""
  for seed in (0, 1):
    for ex in world_facts_examples(seed, wq.ONE_HOP_QTYPES + wq.TWO_HOP_QTYPES)[::25]:
      assert any(p.fullmatch(ex["question"]) for p in PATTERNS), ex["question"]
  private = pt.TemplatePrivacySynthesizer(0).synthesize(list(SOURCES.values())[::97])
  assert all(any(p.fullmatch(e["question"]) for p in PATTERNS) for e in private)


def test_evaluate_reports_paraphrase_em_beside_held_out(tmp_path, capsys):
  import json
  import os
  from seekjax import evaluate as evaluate_lib
  from tests.test_train import TINY
  workdir = str(tmp_path / "run")
  assert evaluate_lib.main([f"--config={TINY}", f"--workdir={workdir}", "--config.task.max_eval=4",
                            "--config.eval.paraphrase=true", "--bootstrap=50",
                            "--methods=static_interaction,dynamic"]) == 0
  printed = capsys.readouterr().out
  res = json.load(open(os.path.join(workdir, "eval", "results.json")))
  assert res["methods"]["dynamic"]["overall"]["n"] == 4          # held-out as it was
  para = res["paraphrase"]
  assert set(para) == {"static_interaction", "dynamic"}
  assert para["dynamic"]["n"] == len(ROWS) and set(para["dynamic"]["by_variant"]) == {
      "one_hop", "two_hop", "private"}
  assert para["static_interaction"]["messages_per_episode"] == 1.0
  own = json.load(open(os.path.join(workdir, "eval", "paraphrase", "results.json")))
  assert own["meta"]["split"] == "paraphrase" and own["meta"]["task"] == "world_paraphrase"
  ids = [e["id"] for e in own["methods"]["dynamic"]["episodes"]]
  assert ids == [r["id"] for r in ROWS]
  assert own["methods"]["dynamic"]["overall"]["em"] == para["dynamic"]["em"]
  md = open(os.path.join(workdir, "eval", "results.md")).read()
  assert "## Paraphrase check" in md and "| dynamic |" in md.split("## Paraphrase check")[1]
  assert "| paraphrase EM |" in printed
