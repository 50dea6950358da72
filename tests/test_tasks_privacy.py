"""Tests for privacy synthesis: template variety and invariants; LLM path with a fake backend."""
import asyncio
import collections
import json

import pytest

from seekjax.helpers.base import HelperReply
from seekjax.tasks import (TEMPLATE_COUNT, LLMPrivacySynthesizer, TemplatePrivacySynthesizer,
                           exact_match, validation_errors, world_facts_examples)
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


GOOD = {"question": "My sister Amina moved to the capital of Eritrea. Where does she live?",
        "answer": "Asmara", "private_facts": ["the user's sister Amina lives in Asmara"],
        "private_spans": ["My sister Amina", "not in the question"]}


class ScriptedHelper:
  """A fake LLM helper: replies from a script keyed by the original question."""

  def __init__(self, script):
    self.script = script
    self.prompts = []

  async def respond(self, message, history):
    self.prompts.append(message)
    assert history == []
    question = message.split("Original question: ", 1)[1].split("\n", 1)[0]
    action = self.script[question]
    if isinstance(action, Exception):
      raise action
    if isinstance(action, HelperReply):
      return action
    await asyncio.sleep(0)
    return HelperReply(kind="info", text=action)


def test_llm_synthesizer_keeps_valid_and_counts_drops():
  script = {
      "Q ok?": json.dumps(GOOD),
      "Q fenced?": "Sure!\n```json\n" + json.dumps(dict(GOOD, answer="asmara")) + "\n```",
      "Q changed?": json.dumps(dict(GOOD, answer="Massawa")),
      "Q leaked?": json.dumps(dict(GOOD, question="My sister lives in Asmara. Where?")),
      "Q nojson?": "I cannot help with that.",
      "Q fields?": json.dumps(dict(GOOD, private_facts="not a list")),
      "Q nofacts?": json.dumps(dict(GOOD, private_facts=["  "])),
      "Q error?": HelperReply(kind="info", text="", error="timeout"),
      "Q raises?": RuntimeError("boom"),
  }
  examples = [_example(q, qid=f"id{i}") for i, q in enumerate(script)]
  helper = ScriptedHelper(script)
  synth = LLMPrivacySynthesizer(helper, concurrency=3)
  kept = synth.synthesize(examples)
  assert [e["id"] for e in kept] == ["id0#private", "id1#private"]
  assert kept[0]["question"] == GOOD["question"] and kept[0]["answers"] == ["Asmara"]
  assert kept[0]["private_facts"] == GOOD["private_facts"]
  assert kept[0]["private_spans"] == ["My sister Amina"]  # spans not in the question dropped
  assert kept[0]["meta"]["source_question"] == "Q ok?"
  assert synth.stats == collections.Counter(
      kept=2, answer_changed=1, answer_in_question=1, no_json=1, bad_fields=1,
      no_private_facts=1, backend_error=1, exception=1)
  assert synth.dropped == 7
  prompt = " ".join(helper.prompts[0].split())
  assert "Original answer: Asmara" in prompt and "third person" in prompt
  assert '"private_facts"' in prompt and "Do not state the answer" in prompt


def test_llm_synthesizer_accepts_async_callable_and_multiple_aliases():
  async def backend(prompt):
    assert "Original answer: Eritrean nakfa" in prompt
    return json.dumps({"question": "My uncle Kofi was paid in the currency of Eritrea. Which?",
                       "answer": "Nakfa", "private_facts": ["the user's uncle Kofi was paid"]})
  synth = LLMPrivacySynthesizer(backend)
  (kept,) = synth.synthesize([_example("What currency is used in Eritrea?",
                                       ["Eritrean nakfa", "nakfa", "ERN"])])
  assert exact_match("nakfa", kept["answers"]) and synth.stats["kept"] == 1
  assert kept["private_spans"] == []


def test_llm_synthesizer_rejects_non_backends():
  with pytest.raises(TypeError, match="respond"):
    LLMPrivacySynthesizer(object())
