"""Tests for privacy synthesis: template variety and invariants; the row checks; the LLM
recipe with a fake backend; the row cache and the private_qa reader."""
import asyncio
import collections
import json
import os

import pytest

from seekjax.tasks import (TEMPLATE_COUNT, LLMPrivacySynthesizer, RowCache,
                           TemplatePrivacySynthesizer, read_qa, row_problem,
                           validation_errors, world_facts_examples)
from seekjax.tasks import privacy
from seekjax.tasks.privacy_cache import dropped_path
from seekjax.tasks.privacy_templates import RELATIONS, FEMALE_NAMES, MALE_NAMES
from seekjax.tasks.scoring import normalize_answer
from seekjax.tasks.world_questions import SELF_CONTAINED_QTYPES


@pytest.fixture(scope="module")
def world():
  return world_facts_examples(seed=0)


@pytest.fixture(scope="module")
def private(world):
  return TemplatePrivacySynthesizer(seed=0).synthesize(world)


def _mentions(text, answer):
  return f" {normalize_answer(answer)} " in f" {normalize_answer(text)} "


def test_template_variants_keep_answers_and_schema(world, private):
  assert len(private) == len(world)
  for src, new in zip(world, private):
    assert not validation_errors(new)
    assert new["answers"] == src["answers"] and new["qtype"] == src["qtype"]
    assert new["id"] == src["id"] + "#private" and new["meta"]["source_id"] == src["id"]
    assert new["question"] != src["question"]
    assert len(new["private_facts"]) >= 2
    assert all(f.startswith("the user's ") for f in new["private_facts"])
    assert all(span in new["question"] for span in new["private_spans"])  # verbatim spans
  assert all(not e["private_facts"] for e in world)  # the source examples are untouched


def test_recipe_hides_the_answer_behind_personal_facts(world, private):
  checked = 0
  for src, new in zip(world, private):
    if src["qtype"] in SELF_CONTAINED_QTYPES:
      assert new["meta"]["privacy_template"].startswith("gen_")
      assert src["question"] in new["question"]
      continue
    # step 2: the answer is referred to only indirectly (unless the source already named it)
    for answer in src["answers"]:
      if not _mentions(src["question"], answer):
        assert not _mentions(new["question"], answer), (new["question"], answer)
    # the question's core entity stays explicit, via the descriptor
    assert src["meta"]["descriptor"] in new["question"]
    # step 1: a personal fact ties the user's person to the answer
    assert any(_mentions(f, src["answers"][0]) for f in new["private_facts"])
    checked += 1
  assert checked > 2000


def test_templates_are_varied_enough(private):
  used = collections.Counter(e["meta"]["privacy_template"] for e in private)
  assert TEMPLATE_COUNT >= 20 and len(used) >= 20
  spans = collections.Counter(s for e in private for s in e["private_spans"])
  assert spans.most_common(1)[0][1] < 0.1 * len(private)  # no string marks most questions
  names = collections.Counter(e["private_spans"][0] for e in private)
  assert len(names) >= 50
  # no shared 4-word phrase outside the descriptor appears in more than a third of them
  grams = collections.Counter()
  for e in private:
    text = e["question"].replace(e["meta"].get("descriptor", "\0"), " ")
    text = text.replace(e["meta"]["source_question"], " ")
    words = text.split()
    grams.update({" ".join(words[i:i + 4]) for i in range(len(words) - 3)})
  assert grams.most_common(1)[0][1] < len(private) / 3


def test_names_fit_gendered_relations(private):
  for e in private:
    name, rel_phrase = e["private_spans"][0], e["private_spans"][1].lower()
    gender = RELATIONS[rel_phrase[len("my "):]]
    if gender == "f":
      assert name in FEMALE_NAMES
    elif gender == "m":
      assert name in MALE_NAMES


def test_template_synthesis_is_deterministic(world, private):
  again = TemplatePrivacySynthesizer(seed=0).synthesize(world[:200])
  assert again == private[:200]
  other = TemplatePrivacySynthesizer(seed=1).synthesize(world[:200])
  assert sum(a["question"] != b["question"] for a, b in zip(private, other)) > 150


def _example(question="What is the capital of Eritrea?", answers=("Asmara",), qid="q1"):
  return {"question": question, "answers": list(answers), "context": "", "private_facts": [],
          "private_spans": [], "task": "world_facts", "id": qid, "qtype": "capital",
          "popularity": 6.8, "entity": "Eritrea", "meta": {}}


FACTS = ["the user's sister Amina moved to Asmara after a messy divorce"]
STEP3 = {"question": "My sister Amina moved to the capital of Eritrea after a messy divorce. "
                     "Which city does Amina live in now?",
         "answer": "Asmara", "private_spans": ["My sister Amina", "not in the question"]}


def _row(question=STEP3["question"], facts=FACTS, answers=("Asmara",)):
  return dict(_example(), question=question, private_facts=list(facts), answers=list(answers),
              id="q1#private", meta={"source_id": "q1"})


@pytest.mark.parametrize("row, answer, reason", [
    (_row(), None, None),
    (_row(), "Massawa", "answer_changed"),                       # the LLM's answer differs
    (_row(answers=("Massawa",)), None, "answer_changed"),         # the aliases were changed
    (_row(facts=[]), None, "no_private_facts"),
    (_row(facts=["  "]), None, "no_private_facts"),
    (_row(facts=FACTS + ["the user's brother Kofi owes money"]), None, "fact_not_in_question"),
    (_row(facts=["the user's sister lives in Asmara"]), None, "fact_not_in_question"),
    (_row(question="My sister Amina lives in Asmara after a messy divorce. Where?"), None,
     "answer_in_question"),
    (_row(question="My sister Amina lives in the capital of Eritrea. Is it ASMARA's?"), None,
     "answer_in_question"),
])
def test_row_checks(row, answer, reason):
  assert row_problem(row, _example(), answer) == reason


def test_the_answer_check_is_on_whole_words():
  row = _row(question="My sister Amina moved to the capital of Eritrea after a messy divorce. "
                      "Is it Asmarabad?")
  assert row_problem(row, _example()) is None


def _steps(facts_json, question_json):
  """A backend that answers the recipe's three steps from a script, recording each chat."""
  chats = []

  async def backend(chat):
    chats.append([dict(m) for m in chat])
    await asyncio.sleep(0)
    step = sum(m["role"] == "user" for m in chat)
    return {1: facts_json, 2: "Amina lives in the city that is the capital of Eritrea.",
            3: question_json}[step]
  return backend, chats


def test_llm_recipe_is_a_three_turn_conversation():
  backend, chats = _steps(json.dumps({"private_facts": FACTS}),
                          "Sure!\n```json\n" + json.dumps(dict(STEP3, answer="asmara")) + "\n```")
  synth = LLMPrivacySynthesizer(backend, model="m")
  (row,) = synth.synthesize([_example()])
  assert [sum(m["role"] == "user" for m in c) for c in chats] == [1, 2, 3]
  assert chats[2][:4] == chats[1][:4] and chats[1][:2] == chats[0][:2]   # each step carries the
  assert [m["role"] for m in chats[2]] == ["system", "user", "assistant", "user", "assistant",
                                           "user"]                      # earlier turns
  first = " ".join(chats[0][1]["content"].split())
  assert "Original answer: Asmara" in first and "third person" in first
  assert "Step 2" in chats[1][3]["content"] and "Do not state the answer" in chats[2][5]["content"]
  assert row["question"] == STEP3["question"] and row["answers"] == ["Asmara"]
  assert row["private_facts"] == FACTS and row["private_spans"] == ["My sister Amina"]
  assert row["id"] == "q1#private" and row["meta"]["source_question"] == _example()["question"]
  assert row["meta"]["privacy_model"] == "m" and not validation_errors(row)
  assert synth.stats == collections.Counter(kept=1) and synth.requests == 3


@pytest.mark.parametrize("facts_json, question_json, reason, requests", [
    ("I cannot help with that.", None, "no_json", 1),              # step 1 ends the row
    (json.dumps({"private_facts": "not a list"}), None, "bad_fields", 1),
    (json.dumps({"private_facts": [" "]}), None, "no_private_facts", 1),
    (json.dumps({"private_facts": FACTS}), "no JSON here", "no_json", 3),
    (json.dumps({"private_facts": FACTS}), json.dumps(dict(STEP3, answer="Massawa")),
     "answer_changed", 3),
    (json.dumps({"private_facts": FACTS}),
     json.dumps(dict(STEP3, question="My sister Amina lives in Asmara. Where?")),
     "answer_in_question", 3),
    (json.dumps({"private_facts": FACTS + ["the user's son Kofi is in rehab"]}),
     json.dumps(STEP3), "fact_not_in_question", 3),
])
def test_llm_drops_are_counted_by_reason(facts_json, question_json, reason, requests):
  backend, _ = _steps(facts_json, question_json)
  synth = LLMPrivacySynthesizer(backend)
  assert synth.synthesize([_example()]) == []
  assert synth.stats == collections.Counter({reason: 1}) and synth.requests == requests


def test_a_failed_backend_call_is_a_backend_error():
  class Failing:
    async def acomplete(self, messages):
      return "", None, "http_500"
  synth = LLMPrivacySynthesizer(Failing())
  assert synth.synthesize([_example()]) == [] and synth.stats == {"backend_error": 1}


def test_llm_synthesizer_rejects_non_backends():
  with pytest.raises(TypeError, match="acomplete"):
    LLMPrivacySynthesizer(object())


# ----------------------------------------------------------------------------- the row cache


def test_the_cache_answers_without_a_request_and_keeps_drops(tmp_path):
  path = tmp_path / "privacy" / "x.llm.jsonl"
  examples = [_example(qid="q1"), _example("What is the capital of Chad?", ["N'Djamena"], "q2")]
  backend, chats = _steps(json.dumps({"private_facts": FACTS}), json.dumps(STEP3))
  synth = LLMPrivacySynthesizer(backend)
  rows = synth.synthesize(examples, RowCache(path))
  assert [r["id"] for r in rows] == ["q1#private"] and synth.stats == {"kept": 1,
                                                                        "answer_changed": 1}
  asked = len(chats)
  again = LLMPrivacySynthesizer(backend)
  assert again.synthesize(examples, RowCache(path)) == rows
  assert len(chats) == asked and again.requests == 0 and again.stats == synth.stats
  drops = [json.loads(l) for l in dropped_path(path).read_text().splitlines()]
  assert drops == [{"source_id": "q2", "source_question": examples[1]["question"],
                    "reason": "answer_changed"}]
  # an edited source question is not answered from the cache
  assert not RowCache(path).has(dict(examples[0], question="What is Eritrea's capital?"))


def test_a_torn_last_line_is_dropped_and_the_file_stays_appendable(tmp_path):
  path = tmp_path / "rows.jsonl"
  row = dict(_row(), meta={"source_id": "q1", "source_question": _example()["question"]})
  path.write_text(json.dumps(row) + "\n" + '{"question": "My bro')
  cache = RowCache(path)
  assert len(cache) == 1 and cache.has(_example())
  cache.put(_example(qid="q2"), dict(row, id="q2#private", meta={"source_id": "q2"}), "kept")
  lines = [json.loads(l) for l in path.read_text().splitlines()]
  assert [l["id"] for l in lines] == ["q1#private", "q2#private"]


def test_the_reader_loads_cached_rows_with_their_private_facts(tmp_path):
  path = tmp_path / "rows.jsonl"
  backend, _ = _steps(json.dumps({"private_facts": FACTS}), json.dumps(STEP3))
  (row,) = LLMPrivacySynthesizer(backend).synthesize([_example()], RowCache(path))
  (loaded,) = read_qa(os.fspath(path), "private_qa", strict=True)
  assert loaded == row and loaded["private_facts"] == FACTS
  assert loaded["private_spans"] == ["My sister Amina"] and not validation_errors(loaded)


@pytest.mark.parametrize("field, value, problem", [
    ("private_facts", [], "lists no fact"), ("private_facts", "x", "must be list"),
    ("private_facts", [1], "list of strings"),
    ("answers", None, "must be list"), ("popularity", "high", "popularity"),
    ("meta", [1], "meta"), ("question", " ", "empty")])
def test_the_reader_refuses_a_bad_row_in_one_line(tmp_path, field, value, problem):
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps(dict(_row(), **{field: value})) + "\n")
  with pytest.raises(ValueError, match=problem) as e:
    read_qa(os.fspath(path), "private_qa", strict=True)
  assert str(e.value).startswith(f"{path}:1: ") and "\n" not in str(e.value)


def test_which_examples_are_made_private_is_stable_and_near_the_fraction():
  examples = [_example(qid=f"q{i}") for i in range(2000)]
  picked = privacy.chosen(examples, 0.3, seed=0)
  assert 500 < len(picked) < 700
  assert privacy.chosen(list(reversed(examples)), 0.3, seed=0) == list(reversed(picked))
  assert privacy.chosen(examples, 0.3, seed=1) != picked
  assert privacy.chosen(examples, 0.0, 0) == [] and len(privacy.chosen(examples, 1.0, 0)) == 2000
