"""Tests for the world-facts task: cleaning, questions, fact base, popularity, determinism."""
import collections
import re

import pytest

from seekjax.tasks import (WORLD_QTYPES, exact_match, head_tail, load_countries, validation_errors,
                           world_fact_base, world_facts_examples)
from seekjax.tasks.scoring import normalize_answer
from seekjax.tasks.world_data import countries_by_code


@pytest.fixture(scope="module")
def examples():
  return world_facts_examples(seed=0)


@pytest.fixture(scope="module")
def by_id(examples):
  return {e["id"]: e for e in examples}


def test_every_qtype_present_with_valid_unique_examples(examples):
  counts = collections.Counter(e["qtype"] for e in examples)
  assert set(counts) == set(WORLD_QTYPES)
  assert counts["capital"] >= 200 and counts["two_hop_currency"] >= 200
  assert min(counts.values()) >= 100
  assert all(not validation_errors(e) for e in examples)
  assert len({e["id"] for e in examples}) == len(examples)
  assert all(e["task"] == "world_facts" and e["answers"] for e in examples)


def test_eritrea_one_and_two_hop(by_id):
  capital = by_id["world/capital/ERI"]
  assert "Eritrea" in capital["question"] and capital["answers"] == ["Asmara"]
  assert capital["meta"]["facts"] == ["The capital of Eritrea is Asmara."]
  assert capital["meta"]["descriptor"] == "the capital of Eritrea"
  currency = by_id["world/currency/ERI"]
  assert {"Eritrean nakfa", "nakfa", "ERN"} <= set(currency["answers"])
  two_hop = by_id["world/two_hop_currency/ERI"]
  assert "Asmara" in two_hop["question"] and "Eritrea" not in two_hop["question"]
  assert exact_match("the Nakfa", two_hop["answers"]) == 1.0
  assert by_id["world/population/ERI"]["answers"][:2] == ["6536000", "6,536,000"]


def test_cleaning_drops_odd_countryinfo_entries():
  countries = load_countries()
  names = {c.name for c in countries}
  assert len(countries) > 200
  assert not names & {"Wales", "Scotland", "Antarctica", "Serbia and Montenegro", "Burma"}
  assert len({c.code for c in countries}) == len(countries)  # duplicates (VAT, MMR) merged
  assert "Vatican City" in names
  by_code = countries_by_code()
  assert by_code["VAT"].capital == "Vatican City"  # countryinfo gives a one-element list
  assert by_code["MAC"].capital is None  # empty capital dropped, other fields kept
  assert by_code["MAC"].currencies[0].code == "MOP"
  fund_codes = {"BOV", "CHE", "CHW", "CLF", "USN", "USS", "UYI"}
  for c in countries:
    assert c.population > 0 and c.capital != ""
    assert c.capital is None or "/" not in c.capital
    assert not {x.code for x in c.currencies} & fund_codes
    for n in c.neighbours:  # borders kept only when both sides list them
      assert c.code in by_code[n].neighbours
  assert by_code["ABW"].languages == ("Dutch", "Papiamento")  # "pa" fixed for Aruba
  assert {"Astana", "Nur-Sultan"} <= set(by_code["KAZ"].capital_aliases)


def test_fact_base_supports_every_helper_question(examples):
  facts, entities = world_fact_base()
  assert "The capital of Eritrea is Asmara." in facts
  assert len(set(facts)) == len(facts) > 1000
  assert {"Eritrea", "Asmara", "China"} <= set(entities)
  fact_set = set(facts)
  for e in examples:
    if e["meta"]["self_contained"]:
      continue
    support = e["meta"]["facts"]
    assert support and set(support) <= fact_set, e["id"]
    text = f" {normalize_answer(' '.join(support))} "
    assert any(f" {normalize_answer(a)} " in text for a in e["answers"]), e["id"]


def test_compare_population_answer_is_the_larger_country(examples):
  by_name = {c.name: c for c in load_countries()}
  for e in (x for x in examples if x["qtype"] == "compare_population"):
    a, b = (by_name[n] for n in e["meta"]["entities"])
    bigger = a if a.population > b.population else b
    assert e["answers"][0] == bigger.name
    assert max(a.population, b.population) >= 1.25 * min(a.population, b.population)


def test_self_contained_questions_hold_their_answer(examples):
  for e in examples:
    if e["qtype"] == "self_reading":
      assert any(normalize_answer(a) in normalize_answer(e["question"]) for a in e["answers"])
    elif e["qtype"] == "self_arithmetic":
      x, y = (int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d|\d", e["question"])[:2])
      expected = x + y if "together" in e["question"] else x - y
      assert e["answers"][0] == str(expected), e["question"]
      assert "descriptor" not in e["meta"]


def test_head_tail_popularity(examples):
  buckets = collections.Counter(head_tail(e) for e in examples if e["qtype"] == "capital")
  assert buckets["head"] >= 50 and buckets["tail"] >= 50 and None not in buckets
  by_id = {e["id"]: e for e in examples}
  assert head_tail(by_id["world/capital/CHN"]) == "head"
  assert head_tail(by_id["world/capital/TUV"]) == "tail"
  assert by_id["world/capital/CHN"]["popularity"] > by_id["world/capital/ERI"]["popularity"]


def test_generation_is_deterministic_and_seed_dependent(examples):
  again = world_facts_examples(seed=0)
  assert again == examples
  other = world_facts_examples(seed=1)
  assert [e["answers"] for e in other if e["qtype"] == "capital"] == \
      [e["answers"] for e in examples if e["qtype"] == "capital"]
  changed = sum(a["question"] != b["question"] for a, b in zip(examples, other)
                if a["id"] == b["id"])
  assert changed > 300  # other phrasings / partner countries


def test_qtype_filter_keeps_examples_identical(examples):
  subset = world_facts_examples(seed=0, qtypes=["two_hop_language", "capital"])
  assert {e["qtype"] for e in subset} == {"capital", "two_hop_language"}
  full = {e["id"]: e for e in examples}
  assert all(full[e["id"]] == e for e in subset)
  with pytest.raises(ValueError, match="unknown world qtypes"):
    world_facts_examples(qtypes=["capitals"])


def test_countryinfo_loaded_once():
  assert load_countries() is load_countries()
