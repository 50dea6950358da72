"""Answer scoring: SQuAD-style normalisation, exact match, token F1, <answer> extraction.

Normalisation follows the SQuAD v1.1 evaluation script (lowercase, drop punctuation,
drop the articles a/an/the, collapse whitespace) with three documented extensions:

1. Unicode: text is NFKD-decomposed and combining marks are dropped, so accents fold
   ("Bogotá" == "Bogota", "Chișinău" == "Chisinau", full-width letters become ASCII);
   case is folded with ``str.casefold`` ("Straße" == "strasse"); every Unicode
   punctuation character (category P*) is dropped, not only ASCII punctuation; the
   Unicode minus sign (U+2212) counts as "-".
2. Numbers: thousands separators are dropped ("6,536,000" == "6536000"), a decimal
   point between digits is kept and trailing zeros trimmed ("3.50" == "3.5",
   "1000.0" == "1000"; plain SQuAD would turn "3.5" into "35"), and a minus sign that
   starts a number is kept ("-4" != "4").
3. ``exact_match`` and ``f1`` take the max over all answer aliases; an empty alias
   list scores 0.0.
"""
from __future__ import annotations

import collections
import re
import string
import unicodedata
from typing import Callable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")
_KEEP_DOT = "\uE000"  # private-use placeholders protect numeric '.' and '-' from stripping
_KEEP_MINUS = "\uE001"
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"


def _fold_unicode(text: str) -> str:
  """Returns text NFKD-decomposed with combining marks removed (accent folding)."""
  decomposed = unicodedata.normalize("NFKD", text)
  return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _trim_decimal(match: re.Match) -> str:
  """Returns a decimal token without trailing zeros ("3.50" -> "3.5", "7.0" -> "7")."""
  return match.group(0).rstrip("0").rstrip(".")


def _protect_numbers(text: str) -> str:
  """Returns text with numbers canonicalised and their '.'/'-' shielded from stripping."""
  text = _THOUSANDS_COMMA.sub("", text)
  text = _DECIMAL.sub(_trim_decimal, text)
  text = re.sub(r"(?<=\d)\.(?=\d)", _KEEP_DOT, text)
  return re.sub(r"(?:(?<=\s)|^)-(?=\d)", _KEEP_MINUS, text)


def _is_punctuation(ch: str) -> bool:
  """True for ASCII punctuation and every Unicode P* character."""
  return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
  """Returns the SQuAD-normalised form of ``text`` (see the module docstring)."""
  text = _fold_unicode(text).replace("\u2212", "-").casefold()
  text = _protect_numbers(text)
  text = "".join(ch for ch in text if not _is_punctuation(ch))
  text = text.replace(_KEEP_DOT, ".").replace(_KEEP_MINUS, "-")
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _as_aliases(answers) -> list[str]:
  """Returns the alias list (a lone string becomes a one-element list)."""
  if isinstance(answers, str):
    return [answers]
  return [a for a in answers if isinstance(a, str)]


def exact_match(prediction: str | None, answers) -> float:
  """Returns 1.0 if the normalised prediction equals any normalised alias, else 0.0.

  Args:
    prediction: the predicted answer text; None (no answer) scores 0.0.
    answers: one alias string or a list of alias strings.
  """
  if prediction is None:
    return 0.0
  pred = normalize_answer(prediction)
  return float(any(pred == normalize_answer(a) for a in _as_aliases(answers)))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
  """Returns SQuAD token F1 between two token lists (1.0 if both are empty)."""
  if not pred_tokens or not gold_tokens:
    return float(pred_tokens == gold_tokens)
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(pred_tokens)
  recall = overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def f1(prediction: str | None, answers) -> float:
  """Returns the SQuAD token-level F1 in [0, 1], max over aliases (0.0 for None)."""
  if prediction is None:
    return 0.0
  pred_tokens = normalize_answer(prediction).split()
  scores = [_token_f1(pred_tokens, normalize_answer(a).split()) for a in _as_aliases(answers)]
  return max(scores, default=0.0)


def extract_answer(text: str | None) -> str | None:
  """Returns the stripped body of the last complete ``<answer>…</answer>``, or None.

  "Complete" means an ``<answer>`` followed later by ``</answer>``. The body is taken
  from the last ``<answer>`` that precedes the last ``</answer>``, so a stray earlier
  opening tag never leaks into the answer. An unclosed trailing ``<answer>`` (for
  example a generation cut off by the token limit) is ignored: if it is the only
  answer tag the result is None, otherwise the last complete one wins. An empty
  ``<answer></answer>`` returns "" (an answer was given, and it is empty).
  """
  if not text:
    return None
  end = text.rfind(_ANSWER_CLOSE)
  if end < 0:
    return None
  start = text.rfind(_ANSWER_OPEN, 0, end)
  if start < 0:
    return None
  return text[start + len(_ANSWER_OPEN):end].strip()


# Task-specific scorers, keyed by the example's ``task`` field. A scorer takes
# (prediction: str, example: dict) and returns a float in [0, 1]. Tasks without an
# entry are scored by exact match against ``example["answers"]``.
_SCORERS: dict[str, Callable[[str, dict], float]] = {}


def register_scorer(task: str, scorer: Callable[[str, dict], float]) -> None:
  """Registers ``scorer`` for examples whose ``task`` equals ``task``; returns None."""
  _SCORERS[task] = scorer


def task_score(prediction: str | None, example: dict) -> float:
  """Returns the task score in [0, 1] of an extracted answer for one example.

  Dispatches on ``example["task"]``: a registered scorer (e.g. reasoning-gym's own
  ``score_answer``) when there is one, else ``exact_match`` over the aliases in
  ``example["answers"]``. ``prediction`` is the answer text (see ``extract_answer``);
  None means no answer and scores 0.0.
  """
  if prediction is None:
    return 0.0
  scorer = _SCORERS.get(example.get("task", ""))
  if scorer is not None:
    return float(scorer(prediction, example))
  return exact_match(prediction, example.get("answers", []))
