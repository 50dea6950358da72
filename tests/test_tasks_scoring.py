"""Tests for seekjax.tasks.scoring: normalisation, EM, F1, answer extraction, dispatch."""
import pytest

from seekjax.tasks import scoring
from seekjax.tasks.scoring import exact_match, extract_answer, f1, normalize_answer, task_score


@pytest.mark.parametrize("text,expected", [
    ("The Eritrean Nakfa!", "eritrean nakfa"),
    ("  a   cat,  an apple; the END ", "cat apple end"),
    ("Bogotá", "bogota"),
    ("São Tomé", "sao tome"),
    ("«Paris»", "paris"),
    ("Ｐａｒｉｓ", "paris"),  # full-width letters fold under NFKD
    ("Washington, D.C.", "washington dc"),
    ("6,536,000", "6536000"),
    ("3.50", "3.5"),
    ("1000.0", "1000"),
    ("-4", "-4"),
    ("The answer is 5.", "answer is 5"),
    ("theory", "theory"),  # articles only as whole words
    ("Straße", "strasse"),  # casefold, not lower
    ("\u22124", "-4"),  # Unicode minus sign
])
def test_normalize_answer_hand_computed(text, expected):
  assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction,answers,expected", [
    ("the Nakfa", ["Eritrean nakfa", "nakfa"], 1.0),  # article + second alias
    ("Nakfa.", "nakfa", 1.0),  # a single alias string works too
    ("Bogota", ["Bogotá"], 1.0),
    ("6536000", ["6,536,000"], 1.0),
    ("3.5", ["3.50"], 1.0),
    ("35", ["3.5"], 0.0),  # plain SQuAD would call these equal; we keep the decimal point
    ("4", ["-4"], 0.0),
    ("Asmara", ["Addis Ababa", "Djibouti"], 0.0),
    ("Asmara", [], 0.0),
    (None, ["Asmara"], 0.0),
    ("", ["the"], 1.0),  # both normalise to the empty string
])
def test_exact_match(prediction, answers, expected):
  assert exact_match(prediction, answers) == expected


def test_f1_hand_computed():
  # pred tokens [capital, city, asmara] vs [asmara]: P = 1/3, R = 1 -> F1 = 0.5
  assert f1("the capital city Asmara", ["Asmara"]) == pytest.approx(0.5)
  # max over aliases: [new, york, city] vs [new, york]: P = 2/3, R = 1 -> 0.8; vs [nyc] -> 0
  assert f1("New York City", ["NYC", "New York"]) == pytest.approx(0.8)
  # repeated tokens count once per occurrence: [a1, a1] vs [a1]: P = 1/2, R = 1 -> 2/3
  assert f1("paris paris", ["Paris"]) == pytest.approx(2 / 3)
  assert f1("Berlin", ["Paris"]) == 0.0
  assert f1(None, ["Paris"]) == 0.0
  assert f1("Paris", []) == 0.0
  assert f1("6,536,000 people", ["6536000"]) == pytest.approx(2 / 3)


def test_f1_is_one_exactly_when_em_is_one():
  pairs = [("The Nakfa", ["nakfa"]), ("nakfa coins", ["nakfa"]), ("Bogotá!", ["bogota"])]
  for prediction, answers in pairs:
    assert (f1(prediction, answers) == 1.0) == (exact_match(prediction, answers) == 1.0)


@pytest.mark.parametrize("text,expected", [
    ("<think>hm</think><answer> Asmara </answer>", "Asmara"),
    ("<answer>Addis</answer> wait <answer>Asmara</answer>", "Asmara"),  # last complete tag
    ("<answer>Asmara</answer> then <answer>unfinished", "Asmara"),  # unclosed tail ignored
    ("<answer>cut off by the token limit", None),  # only an unclosed tag
    ("no tags at all", None),
    ("", None),
    (None, None),
    ("<answer></answer>", ""),  # an empty answer is an answer
    ("<answer>a <answer>b</answer>", "b"),  # a stray opening tag never leaks in
    ("</answer><answer>x", None),  # a close before any open is not an answer
    ("<answer>line one\nline two</answer>", "line one\nline two"),
])
def test_extract_answer(text, expected):
  assert extract_answer(text) == expected


def test_task_score_dispatches_to_registered_scorer_else_em():
  qa = {"task": "world_facts", "answers": ["Asmara"]}
  assert task_score("asmara", qa) == 1.0
  assert task_score("Massawa", qa) == 0.0
  assert task_score(None, qa) == 0.0
  scoring.register_scorer("test_len_scorer", lambda p, e: min(1.0, len(p) / 10))
  try:
    custom = {"task": "test_len_scorer", "answers": ["ignored"]}
    assert task_score("abcde", custom) == pytest.approx(0.5)
    assert task_score("ignored", custom) == pytest.approx(0.7)  # not EM: the scorer decides
  finally:
    del scoring._SCORERS["test_len_scorer"]  # pylint: disable=protected-access
