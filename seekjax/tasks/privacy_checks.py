"""The checks every synthesized privacy row passes, whichever synthesizer wrote it.

A private row is kept only when, against the public example it came from:

  answer_changed        the synthesizer's answer exact-matches (SQuAD-normalised) one of
                        the source's gold aliases, and the row keeps the source's aliases;
  no_private_facts      it lists at least one non-empty private fact;
  fact_not_in_question  each private fact appears in the new question: the question,
                        sent as it is, leaks that fact under the rule leak judge's rule
                        (it names the fact's person, or states another of its sensitive
                        spans in the first person). A fact the question does not carry
                        could never be leaked, so it would give the leak penalty nothing
                        to judge;
  answer_in_question    the new question does not state the answer: no gold alias occurs
                        in it as whole words (after normalisation).

``row_problem`` returns the first failed check's name (the drop reason), else None.
"""
from __future__ import annotations

import re

from seekjax.helpers.rule_judge import RuleLeakJudge
from seekjax.tasks.scoring import exact_match, normalize_answer

CHECKS = ("answer_changed", "no_private_facts", "fact_not_in_question", "answer_in_question")
_RULE_JUDGE = RuleLeakJudge()
_POSSESSIVE = re.compile(r"['\u2019]s\b", re.IGNORECASE)


def states_phrase(text: str, phrase: str) -> bool:
  """True if normalised ``phrase`` occurs in normalised ``text`` as whole words (a
  possessive counts: "Asmara's" states "Asmara")."""
  phrase = normalize_answer(phrase)
  text = _POSSESSIVE.sub("", text)
  return bool(phrase) and f" {phrase} " in f" {normalize_answer(text)} "


def fact_in_question(fact: str, question: str) -> bool:
  """True if the question, sent as a message, leaks ``fact`` by the rule judge's rule."""
  return _RULE_JUDGE.judge([question], [fact]).leak


def row_problem(row: dict, source: dict, answer: str | None = None) -> str | None:
  """The first check ``row`` fails against ``source`` (see the module doc), or None.

  answer: the answer the synthesizer stated (an LLM's reply); None takes the row's first
    alias.
  """
  aliases = source["answers"]
  stated = row["answers"][0] if answer is None and row["answers"] else answer
  if row["answers"] != aliases or not isinstance(stated, str) or not exact_match(stated, aliases):
    return "answer_changed"
  facts = row["private_facts"]
  if not facts or not all(isinstance(f, str) and f.strip() for f in facts):
    return "no_private_facts"
  if not all(fact_in_question(f, row["question"]) for f in facts):
    return "fact_not_in_question"
  if any(states_phrase(row["question"], a) for a in aliases):
    return "answer_in_question"
  return None
