"""Scoring hooks for any answerer: task score per question type and per head/tail bucket.

``em_by_qtype(examples, answer_fn)`` is the measurement hook for "SLM alone" or
"KnowledgeHelper alone" baselines: ``answer_fn(questions: list[str]) -> list[str]``
returns one final answer per question (already extracted, e.g. with
``extract_answer``; None counts as no answer).
"""
from __future__ import annotations

import collections
from typing import Callable, Sequence

from seekjax.tasks.scoring import task_score
from seekjax.tasks.world_data import HEAD_POPULARITY

# task -> popularity at or above which an example is "head" (log10 scale).
#   world_facts: log10(population), head = 10 million people or more.
#   popqa: log10(1 + monthly page views of the subject), head = 1,000 views or more.
HEAD_THRESHOLDS = {"world_facts": HEAD_POPULARITY, "popqa": 3.0}


def head_tail(example: dict) -> str | None:
  """Returns "head", "tail", or None when the example has no popularity or threshold."""
  threshold = HEAD_THRESHOLDS.get(example.get("task", ""))
  popularity = example.get("popularity")
  if threshold is None or popularity is None:
    return None
  return "head" if popularity >= threshold else "tail"


def score_answers(examples: Sequence[dict], answer_fn: Callable[[list[str]], list],
                  batch_size: int = 64) -> list[float]:
  """Returns ``task_score`` of answer_fn's answer for each example, in order."""
  scores = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    answers = list(answer_fn([e["question"] for e in chunk]))
    if len(answers) != len(chunk):
      raise ValueError(f"answer_fn returned {len(answers)} answers for {len(chunk)} questions")
    scores.extend(task_score(a, e) for a, e in zip(answers, chunk))
  return scores


def mean_by(examples: Sequence[dict], scores: Sequence[float],
            key: Callable[[dict], str | None]) -> dict[str, float]:
  """Returns {group: mean score} over examples grouped by ``key`` (None groups skipped)."""
  sums, counts = collections.defaultdict(float), collections.Counter()
  for example, score in zip(examples, scores):
    group = key(example)
    if group is not None:
      sums[group] += score
      counts[group] += 1
  return {g: sums[g] / counts[g] for g in sorted(counts)}


def em_by_qtype(examples: Sequence[dict], answer_fn: Callable[[list[str]], list],
                batch_size: int = 64) -> dict[str, float]:
  """Returns {qtype: mean task score} plus "all" (EM for QA tasks, the task's scorer else)."""
  scores = score_answers(examples, answer_fn, batch_size)
  result = mean_by(examples, scores, lambda e: e["qtype"])
  result["all"] = sum(scores) / len(scores) if scores else 0.0
  return result


def em_by_popularity(examples: Sequence[dict], answer_fn: Callable[[list[str]], list],
                     batch_size: int = 64) -> dict[str, float]:
  """Returns {"head": score, "tail": score} over examples that have a bucket."""
  scores = score_answers(examples, answer_fn, batch_size)
  return mean_by(examples, scores, head_tail)
