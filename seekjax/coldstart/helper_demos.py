"""Demonstrations for any task from the helper's own replies: ask, read its answer, keep gold.

For an example without a world-facts descriptor (a QA file, reasoning-gym, ...):
  message         privacy-safe: for an example with private facts, its public source
                  question (`meta["source_question"]`, set by the privacy synthesizers),
                  never the user's question; otherwise the question itself. A message that
                  still names a private span or leaks under the rule judge is not sent;
                  `AskSettings.answer_request` (for LLM helpers) is appended, so the
                  helper ends its reply with the short final answer;
  need exchange   (a seeded share of demos) a first message without the question, the
                  helper's <need>, then the message; a helper that answers the opener
                  with <info> gets the plain demo instead;
  answer          read from the helper's reply: its "Answer: ..." line (or <answer>)
                  when it gave one, else the whole reply when short, else a gold alias
                  the reply states (the knowledge helper's fact sentences).
The demo is kept only when that answer scores 1 under the task's scorer (`task_score`:
exact match, or reasoning-gym's own), so the cold start never teaches a wrong answer.
Each dropped candidate has a reason (`DROP_*`), counted by the caller.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Callable

from seekjax import protocol
from seekjax.coldstart.demo_store import demo_errors
from seekjax.coldstart.sft import Demo
from seekjax.helpers.rule_judge import RuleLeakJudge
from seekjax.tasks.scoring import extract_answer, normalize_answer, task_score

ANSWER_REQUEST = "End your reply with the short final answer on its own line, as 'Answer: ...'."
NEED_OPENER = "I have a question for you."
SHORT_REPLY_WORDS = 12       # a reply this short, with no "Answer:" line, is the answer itself
MAX_ANSWER_CHARS = 200

# Why a candidate was dropped. HELPER_ERROR is transient (retried on a rerun); the others
# are properties of the example and the helper's reply (a rerun would drop it again).
DROP_HELPER_ERROR = "helper error"
DROP_NOT_GOLD = "answer not gold"
DROP_NEED = "helper asked for context"
DROP_PRIVATE = "no privacy-safe message"
DROP_TOO_LONG = "message too long"
DROP_NO_TURNS = "rollout.max_turns=0"
DROP_INVALID = "not a valid protocol turn"
DROP_DESCRIPTOR = "no faithful descriptor demo"
DROP_NO_HELPER = "no helper"

_ANSWER_LINE = re.compile(r"(?:final\s+)?answer\s*(?:is)?\s*[:：]\s*(.+)", re.I)


@dataclasses.dataclass(frozen=True)
class AskSettings:
  """How the demos of examples without a descriptor are asked.

  answer_request: appended to the message ("" sends the message alone: the knowledge
    helper, whose reply is the answer's source).
  max_turns, max_message_tokens: the rollout's limits; a demo never shows more messages,
    or a longer message, than an episode may send (0: no token limit).
  count_tokens: the SLM tokenizer's length of a message.
  """

  answer_request: str = ANSWER_REQUEST
  max_turns: int = 2
  max_message_tokens: int = 0
  count_tokens: Callable[[str], int] = lambda text: len(text.split())


async def ask_helper(helper, message: str, history) -> tuple[protocol.HelperReply, str]:
  """(reply, formatted feedback); a helper that raises gives an error reply."""
  try:
    reply = await helper.respond(message, list(history))
  except asyncio.CancelledError:
    raise
  except Exception as e:  # noqa: BLE001 - one failed call costs one demo, not the run
    reply = protocol.HelperReply("info", protocol.HELPER_UNAVAILABLE_TEXT,
                                 error=f"exception:{type(e).__name__}")
  return reply, protocol.format_feedback(reply)


def transport_error(reply: protocol.HelperReply) -> bool:
  """The call failed (timeout, HTTP error, exception), as opposed to a readable reply."""
  return reply.error is not None and reply.error != protocol.MALFORMED


def leaks(message: str, example: dict) -> bool:
  """Whether a message names one of the example's private spans or leaks a private fact
  under the rule judge."""
  text = normalize_answer(message)
  spans = [normalize_answer(s) for s in example.get("private_spans") or []]
  if any(s and f" {s} " in f" {text} " for s in spans):
    return True
  facts = example.get("private_facts") or []
  return bool(facts) and RuleLeakJudge().judge([message], facts).leak


def safe_message(example: dict) -> str | None:
  """The privacy-safe question to send for `example`, or None when it has none."""
  private = bool(example.get("private_facts") or example.get("private_spans"))
  meta = example.get("meta") or {}
  message = (meta.get("source_question") if private else example["question"]) or ""
  message = " ".join(message.split())
  if not message or (private and leaks(message, example)):
    return None
  return message


def _clean(answer: str) -> str:
  """The first line of an answer, without markdown emphasis, quotes or a final period."""
  line = answer.strip().splitlines()[0] if answer.strip() else ""
  return line.strip().rstrip(".").strip("*_`\"' ").rstrip(".").strip()


def _mentioned_gold(text: str, answers) -> str | None:
  norm = f" {normalize_answer(text)} "
  return next((a for a in answers if normalize_answer(a)
               and f" {normalize_answer(a)} " in norm), None)


def reply_answer(text: str, example: dict) -> str | None:
  """The final answer a demo takes from the helper's reply (module docstring), or None.

  An explicit answer (an "Answer: ..." line, an <answer> tag) is the only candidate when
  present, so a demo never overrides what the helper concluded.
  """
  explicit = extract_answer(text)
  lines = _ANSWER_LINE.findall(text or "")
  if explicit is None and lines:
    explicit = lines[-1]
  if explicit is not None:
    answer = _clean(explicit)[:MAX_ANSWER_CHARS]
    return answer if answer and is_gold(answer, example) else None
  short = _clean(text or "")
  if short and len(short.split()) <= SHORT_REPLY_WORDS and is_gold(short, example):
    return short
  gold = _mentioned_gold(text or "", example.get("answers") or [])
  return gold if gold is not None and is_gold(gold, example) else None


def is_gold(answer: str, example: dict) -> bool:
  """Whether `answer` scores full marks under the example's task scorer."""
  try:
    return task_score(answer, example) >= 1.0
  except Exception:  # noqa: BLE001 - a scorer that cannot read an answer does not accept it
    return False


async def areply_demo(example: dict, helper, settings: AskSettings,
                      need_exchange: bool = False) -> tuple[Demo | None, str | None]:
  """(demo, None), or (None, the DROP_* reason) for one example (module docstring)."""
  if settings.max_turns < 1:
    return None, DROP_NO_TURNS
  safe = safe_message(example)
  if safe is None:
    return None, DROP_PRIVATE
  message = f"{safe} {settings.answer_request}".strip()
  if settings.max_message_tokens and settings.count_tokens(message) > settings.max_message_tokens:
    return None, DROP_TOO_LONG
  private = bool(example.get("private_facts") or example.get("private_spans"))
  without = " without the personal details" if private else ""
  turns, feedbacks, kinds, history = [], [], [], []
  think = f"I cannot answer this alone; I ask the helper{without}."
  if need_exchange and settings.max_turns >= 2:
    reply, fb = await ask_helper(helper, NEED_OPENER, [])
    if transport_error(reply):
      return None, DROP_HELPER_ERROR
    if reply.kind == "need":
      turns.append(f"<think>I need help with a question.</think><message>{NEED_OPENER}</message>")
      feedbacks.append(fb)
      kinds.append(reply.kind)
      history.append((NEED_OPENER, reply))
      think = f"The helper needs the question; I give it{without}."
  reply, fb = await ask_helper(helper, message, history)
  if transport_error(reply):
    return None, DROP_HELPER_ERROR
  if reply.kind == "need":
    return None, DROP_NEED
  answer = reply_answer(reply.text, example)
  if answer is None:
    return None, DROP_NOT_GOLD
  turns.append(f"<think>{think}</think><message>{message}</message>")
  feedbacks.append(fb)
  kinds.append(reply.kind)
  turns.append(f"<think>The helper's reply gives the answer.</think><answer>{answer}</answer>")
  demo = Demo(example["question"], turns, feedbacks, kinds)
  return (demo, None) if demo_errors(demo) is None else (None, DROP_INVALID)
