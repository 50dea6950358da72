"""The example dict every task produces: its fields, a constructor and a validator.

Every example carries the same keys, so pipelines, scorers and reports never guess:

  question       str   what the SLM is asked (the user's whole question)
  answers        list[str]  gold aliases; may be empty when a task scorer grades instead
  context        str   supporting text shown with the question; "" when there is none
  private_facts  list[str]  third-person facts about the user ([] for public examples)
  private_spans  list[str]  verbatim substrings of the question that are private
  task           str   source task ("world_facts", "hotpotqa", "reasoning_gym", ...)
  id             str   unique within a task
  qtype          str   question type ("capital", "two_hop_currency", "gsm8k", ...)
  popularity     float | None  higher = better known (log10 scale); None if unknown
  entity         str   the question's core entity; train/eval splits hash this
  meta           dict  task-specific extras (e.g. the reasoning-gym entry to re-score)
"""
from __future__ import annotations

EXAMPLE_KEYS = ("question", "answers", "context", "private_facts", "private_spans", "task", "id",
                "qtype", "popularity", "entity", "meta")


def make_example(*, question: str, answers: list[str], task: str, id: str, qtype: str,
                 entity: str, context: str = "", popularity: float | None = None,
                 private_facts: list[str] | None = None, private_spans: list[str] | None = None,
                 meta: dict | None = None) -> dict:
  """Returns a new example dict with every key of ``EXAMPLE_KEYS`` filled in."""
  return {
      "question": question,
      "answers": list(answers),
      "context": context,
      "private_facts": list(private_facts or []),
      "private_spans": list(private_spans or []),
      "task": task,
      "id": id,
      "qtype": qtype,
      "popularity": None if popularity is None else float(popularity),
      "entity": entity,
      "meta": dict(meta or {}),
  }


def validation_errors(example: dict) -> list[str]:
  """Returns a list of human-readable schema problems (empty when the example is valid)."""
  errors = [f"missing key {k!r}" for k in EXAMPLE_KEYS if k not in example]
  if errors:
    return errors
  for key in ("question", "context", "task", "id", "qtype", "entity"):
    if not isinstance(example[key], str):
      errors.append(f"{key} must be str, got {type(example[key]).__name__}")
  for key in ("answers", "private_facts", "private_spans"):
    value = example[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      errors.append(f"{key} must be a list of str")
  if isinstance(example["question"], str) and not example["question"].strip():
    errors.append("question is empty")
  if example["popularity"] is not None and not isinstance(example["popularity"], float):
    errors.append("popularity must be float or None")
  if not isinstance(example["meta"], dict):
    errors.append("meta must be a dict")
  return errors
