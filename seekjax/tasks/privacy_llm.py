"""LLM privacy synthesis: the paper's three-step recipe as one three-turn conversation.

Each example is one chat with the backend (PAPER_NOTES.md, "Privacy data synthesis"):

  step 1  generate personal information: a JSON object {"private_facts": [...]}, facts
          about the user in the third person, tied to the question's core entities and
          to the answer;
  step 2  reformulate the core fact so the answer is referred to only indirectly,
          through that personal information (free text);
  step 3  synthesize the new first-person question: a JSON object {"question",
          "answer", "private_spans"?}; its answer must be the original one.

Each step's request carries the earlier turns. A reply that is not the JSON a step
asks for ends the row there (no further request). The row is then checked
(``privacy_checks.row_problem``). The outcome of each example, kept or a drop reason
(``DROP_REASONS``), is counted in ``stats``. A ``cache`` (``privacy_cache.RowCache``)
records each outcome as soon as it is known and answers examples it already holds
without a request; a failed backend call is not recorded, so a rerun asks again.

The backend is any object with ``async acomplete(messages) -> (text, tokens, error)``
(``OpenAIHelper``, ``LocalLMHelper``), or an async callable ``(messages) -> str``.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re

from seekjax.tasks.privacy_checks import CHECKS, row_problem

SYSTEM_PROMPT = """\
You turn an ordinary question-answer pair into a privacy-sensitive one, in three steps. \
Follow each step exactly as asked, and reply in the format it asks for."""

STEP1_PROMPT = """\
Original question: {question}
Original answer: {answer}

Step 1. Generate personal information. Identify the core entities of the question and of
the answer. Invent one or more coherent facts about the user that tie to those entities
(a relative or friend with a first name, a sensitive personal detail). Write each fact in
the third person ("the user's ..."). Each fact will be stated in the new question, so
give each one a name, place or detail that the question can say.

Reply with one JSON object and nothing else:
{{"private_facts": ["the user's ...", "..."]}}"""

STEP2_PROMPT = """\
Step 2. Reformulate the core fact. Rewrite the fact behind the original question so that
the answer is referred to only indirectly, through the personal information. Keep the
question's core entities explicit and link them to the personal information. Reply with
the reformulated fact only."""

STEP3_PROMPT = """\
Step 3. Synthesize the new question. Ask about the personal information tied to the
answer, and combine it with the reformulated fact into one question, written by the user
in the first person. It must state every private fact of step 1. Its answer must be
exactly the original answer. Do not state the answer in the question.

Reply with one JSON object and nothing else:
{{"question": "<the new question>", "answer": "<the original answer, unchanged>",
 "private_spans": ["<exact phrases of the new question that reveal private details>"]}}"""

STEP_PROMPTS = (STEP1_PROMPT, STEP2_PROMPT, STEP3_PROMPT)
DROP_REASONS = ("backend_error", "no_json", "bad_fields") + CHECKS
# Outcomes that depend on the endpoint's health, not on the row: never cached.
TRANSIENT = frozenset({"backend_error"})
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def parse_reply_json(text: str) -> dict | None:
  """Returns the first JSON object found in ``text`` (code fences allowed), else None."""
  text = _THINK.sub("", text)
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


def parse_facts(parsed: dict | None) -> tuple[list[str] | None, str | None]:
  """Step 1's reply -> (the non-empty private facts, None), or (None, drop reason)."""
  if parsed is None:
    return None, "no_json"
  facts = parsed.get("private_facts")
  if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
    return None, "bad_fields"
  facts = [f.strip() for f in facts if f.strip()]
  return (facts, None) if facts else (None, "no_private_facts")


def parse_question(parsed: dict | None) -> tuple[dict | None, str | None]:
  """Step 3's reply -> ({question, answer, private_spans}, None), or (None, drop reason)."""
  if parsed is None:
    return None, "no_json"
  question, answer, spans = (parsed.get("question"), parsed.get("answer"),
                             parsed.get("private_spans", []))
  if not isinstance(question, str) or not question.strip() or not isinstance(answer, str):
    return None, "bad_fields"
  question = question.strip()
  spans = [s for s in spans if isinstance(s, str) and s.strip() and s in question] \
      if isinstance(spans, list) else []
  return {"question": question, "answer": answer, "private_spans": spans}, None


def private_row(example: dict, question: dict, facts: list[str], model: str) -> dict:
  """The private variant of ``example`` (schema of ``tasks/schema.py``)."""
  row = dict(example, question=question["question"], private_facts=list(facts),
             private_spans=question["private_spans"], id=f"{example['id']}#private")
  row["meta"] = dict(example.get("meta") or {}, source_id=example["id"],
                     source_question=example["question"], privacy_template="llm",
                     privacy_model=model, private=True)
  return row


class LLMPrivacySynthesizer:
  """Privacy variants written by an LLM backend in three steps, checked, drops counted.

  Attributes:
    stats: Counter with "kept" and one entry per drop reason (``DROP_REASONS``).
    requests: chat requests sent so far.
  """

  def __init__(self, backend, *, concurrency: int = 8, model: str = ""):
    if not (hasattr(backend, "acomplete") or callable(backend)):
      raise TypeError("backend needs `async acomplete(messages)` or must be an async "
                      "callable (messages) -> str")
    self.backend = backend
    self.concurrency = concurrency
    self.model = model
    self.stats: collections.Counter = collections.Counter()
    self.requests = 0

  @property
  def dropped(self) -> int:
    """Returns how many examples were dropped so far, over all reasons."""
    return sum(v for k, v in self.stats.items() if k != "kept")

  async def _ask(self, chat: list[dict]) -> str | None:
    """Returns the backend's reply to ``chat``, or None when the call failed."""
    self.requests += 1
    try:
      if hasattr(self.backend, "acomplete"):
        text, _, error = await self.backend.acomplete(chat)
        return None if error else text
      text = await self.backend(chat)
    except Exception:  # pylint: disable=broad-except - a failing backend drops one row
      return None
    return text if isinstance(text, str) else None

  async def synthesize_one(self, example: dict) -> tuple[dict | None, str]:
    """Returns (private row or None, outcome: "kept" or a drop reason); no cache."""
    answer = example["answers"][0] if example["answers"] else ""
    chat = [{"role": "system", "content": SYSTEM_PROMPT}]
    replies = []
    for step, prompt in enumerate(STEP_PROMPTS):
      chat.append({"role": "user", "content": prompt.format(question=example["question"],
                                                             answer=answer)})
      text = await self._ask(chat)
      if text is None:
        return None, "backend_error"
      chat.append({"role": "assistant", "content": text})
      replies.append(text)
      if step == 0:
        facts, reason = parse_facts(parse_reply_json(text))
        if reason:
          return None, reason
    question, reason = parse_question(parse_reply_json(replies[2]))
    if reason:
      return None, reason
    row = private_row(example, question, facts, self.model)
    reason = row_problem(row, example, answer=question["answer"])
    return (None, reason) if reason else (row, "kept")

  async def _one(self, example: dict, semaphore: asyncio.Semaphore, cache) -> dict | None:
    """One example through the cache and the recipe; counts its outcome."""
    if cache is not None and cache.has(example):
      row, outcome = cache.get(example)
    else:
      async with semaphore:
        row, outcome = await self.synthesize_one(example)
      if cache is not None and outcome not in TRANSIENT:
        cache.put(example, row, outcome)
    self.stats[outcome] += 1
    return row

  async def asynthesize(self, examples, cache=None) -> list[dict]:
    """Returns the kept private variants, in input order; updates ``stats``."""
    semaphore = asyncio.Semaphore(self.concurrency)
    rows = await asyncio.gather(*(self._one(e, semaphore, cache) for e in examples))
    return [r for r in rows if r is not None]

  def synthesize(self, examples, cache=None) -> list[dict]:
    """Returns ``asynthesize(examples)`` run to completion (not from a running loop)."""
    return asyncio.run(self.asynthesize(list(examples), cache))
