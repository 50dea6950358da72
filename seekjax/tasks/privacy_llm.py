"""LLM privacy synthesis: send the paper's recipe prompt, parse JSON, keep only valid rows.

The backend is injectable: any object with ``async respond(message, history) ->
HelperReply`` (every seekjax helper), or any async callable ``(prompt) -> str``.
Each reply must be a JSON object {"question", "answer", "private_facts",
"private_spans"?}. A row is dropped, and the drop counted in ``stats`` by reason,
when the backend fails, the JSON is missing or malformed, the answer changed (it must
exact-match an original alias), the new question states the answer outright, or
there are no private facts.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re

from seekjax.helpers.base import HelperReply
from seekjax.tasks.scoring import exact_match, normalize_answer

RECIPE_PROMPT = """\
You turn an ordinary question-answer pair into a privacy-sensitive one.

Original question: {question}
Original answer: {answer}

Follow three steps.
1. Generate personal information. Identify the core entities of the question and of
   the answer. Invent one or more coherent facts about the user that tie to those
   entities. Write them in the third person ("the user's ...").
2. Reformulate the core fact. Rewrite the fact behind the question so that the answer
   is referred to only indirectly, through the personal information. Keep the
   question's core entities explicit and link them to the personal information.
3. Synthesize the new question. Ask about the personal information tied to the answer,
   and combine it with the reformulated fact into one question, written by the user in
   the first person. Its answer must be exactly the original answer. Do not state the
   answer in the question.

Reply with one JSON object and nothing else:
{{"question": "<the new question>", "answer": "<the original answer, unchanged>",
 "private_facts": ["the user's ...", "..."],
 "private_spans": ["<exact phrases of the new question that reveal private details>"]}}
"""

DROP_REASONS = ("backend_error", "exception", "no_json", "bad_fields", "answer_changed",
                "answer_in_question", "no_private_facts")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_reply_json(text: str) -> dict | None:
  """Returns the first JSON object found in ``text`` (code fences allowed), else None."""
  candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
  decoder = json.JSONDecoder()
  for candidate in candidates:
    for start in (i for i, ch in enumerate(candidate) if ch == "{"):
      try:
        value, _ = decoder.raw_decode(candidate, start)
      except json.JSONDecodeError:
        continue
      if isinstance(value, dict):
        return value
  return None


def _contains_phrase(haystack: str, needle: str) -> bool:
  """True if normalised ``needle`` occurs in normalised ``haystack`` on word boundaries."""
  needle = normalize_answer(needle)
  return bool(needle) and f" {needle} " in f" {normalize_answer(haystack)} "


def check_synthesis(parsed: dict | None, example: dict) -> tuple[dict | None, str | None]:
  """Returns (fields, None) for a valid reply, or (None, drop reason)."""
  if parsed is None:
    return None, "no_json"
  question, answer = parsed.get("question"), parsed.get("answer")
  facts, spans = parsed.get("private_facts"), parsed.get("private_spans", [])
  if not isinstance(question, str) or not question.strip() or not isinstance(answer, str):
    return None, "bad_fields"
  if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
    return None, "bad_fields"
  if not exact_match(answer, example["answers"]):
    return None, "answer_changed"
  leaked = [a for a in example["answers"]
            if _contains_phrase(question, a) and not _contains_phrase(example["question"], a)]
  if leaked:
    return None, "answer_in_question"
  facts = [f.strip() for f in facts if f.strip()]
  if not facts:
    return None, "no_private_facts"
  spans = [s for s in spans if isinstance(s, str) and s.strip() and s in question] \
      if isinstance(spans, list) else []
  return {"question": question.strip(), "private_facts": facts, "private_spans": spans}, None


class LLMPrivacySynthesizer:
  """Privacy variants written by an LLM backend, validated, failures dropped and counted.

  Attributes:
    stats: Counter with "kept" and one entry per drop reason (see ``DROP_REASONS``).
  """

  def __init__(self, backend, *, concurrency: int = 8, prompt: str = RECIPE_PROMPT):
    if not (hasattr(backend, "respond") or callable(backend)):
      raise TypeError("backend needs `async respond(message, history)` or must be an async "
                      "callable (prompt) -> str")
    self.backend = backend
    self.concurrency = concurrency
    self.prompt = prompt
    self.stats: collections.Counter = collections.Counter()

  @property
  def dropped(self) -> int:
    """Returns how many examples were dropped so far, over all reasons."""
    return sum(v for k, v in self.stats.items() if k != "kept")

  async def _ask(self, prompt: str) -> str | None:
    """Returns the backend's text, or None when it reported an error."""
    if hasattr(self.backend, "respond"):
      reply = await self.backend.respond(prompt, [])
      if isinstance(reply, HelperReply):
        return None if reply.error else reply.text
      return reply if isinstance(reply, str) else None
    reply = await self.backend(prompt)
    return reply if isinstance(reply, str) else None

  async def _one(self, example: dict, semaphore: asyncio.Semaphore) -> tuple[dict | None, str]:
    """Returns (private example or None, outcome: "kept" or a drop reason)."""
    answer = example["answers"][0] if example["answers"] else ""
    prompt = self.prompt.format(question=example["question"], answer=answer)
    async with semaphore:
      try:
        text = await self._ask(prompt)
      except Exception:  # pylint: disable=broad-except - a failing backend drops one row
        return None, "exception"
    if text is None:
      return None, "backend_error"
    fields, reason = check_synthesis(parse_reply_json(text), example)
    if fields is None:
      return None, reason
    new = dict(example, **fields, id=f"{example['id']}#private")
    new["meta"] = dict(example.get("meta") or {}, source_id=example["id"],
                       source_question=example["question"], privacy_template="llm", private=True)
    return new, "kept"

  async def asynthesize(self, examples) -> list[dict]:
    """Returns the kept private variants, in input order; updates ``stats``."""
    semaphore = asyncio.Semaphore(self.concurrency)
    results = await asyncio.gather(*(self._one(e, semaphore) for e in examples))
    for _, outcome in results:
      self.stats[outcome] += 1
    return [new for new, _ in results if new is not None]

  def synthesize(self, examples) -> list[dict]:
    """Returns ``asynthesize(examples)`` run to completion (not from a running loop)."""
    return asyncio.run(self.asynthesize(list(examples)))
