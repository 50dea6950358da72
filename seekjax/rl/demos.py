"""Cold-start demonstrations from task examples and a helper: the protocol, shown once.

Three patterns, after the paper's behaviours:
  answer alone    self-contained questions (and, optionally, ones the SLM already knows);
  ask, then answer  a minimal, privacy-safe <message> built from the example's public
                  descriptor (never from the user's personal details), the helper's real
                  feedback, then the answer;
  need exchange   a first message that lacks the entity, the helper's <need>, then a
                  message giving only the context it asked for.
A demo is kept only if the final feedback actually contains a gold answer, so the
cold start never teaches guessing past an unhelpful reply.
"""
from __future__ import annotations

import random

from seekjax import protocol
from seekjax.rl.sft import Demo
from seekjax.tasks import exact_match, normalize_answer


def _mentions_answer(text: str, answers) -> bool:
  norm = f" {normalize_answer(text)} "
  return any(f" {normalize_answer(a)} " in norm for a in answers if normalize_answer(a))


def _ask(helper, message, history):
  reply = helper.reply(message, history)
  return reply, protocol.format_feedback(reply)


def make_demo(example: dict, helper, *, knows_answer: bool = False,
              need_exchange: bool = False) -> Demo | None:
  """One demonstration for `example`, or None when no faithful demo can be made."""
  answers = example["answers"]
  if not answers:
    return None
  answer = answers[0]
  meta = example.get("meta") or {}
  if meta.get("self_contained") or knows_answer:
    why = ("The question itself gives what I need." if meta.get("self_contained")
           else "I know this.")
    return Demo(example["question"], [f"<think>{why}</think><answer>{answer}</answer>"], [])
  desc = meta.get("descriptor")
  if not desc or helper is None:
    return None
  message = f"What is {desc}?"
  turns, feedbacks, kinds, history = [], [], [], []
  if need_exchange:
    first = f"I need to know {desc.split(' of ')[0]} of a {meta.get('answer_kind') or 'place'}."
    reply, fb = _ask(helper, first, history)
    if reply.kind != "need":
      return None
    turns.append(f"<think>I need a fact I do not know.</think><message>{first}</message>")
    feedbacks.append(fb)
    kinds.append(reply.kind)
    history.append((first, reply))
    think = "The helper needs the entity; I give only that, not the user's details."
  else:
    think = "I do not know this fact; I ask without personal details."
  reply, fb = _ask(helper, message, history)
  if reply.kind != "info" or not _mentions_answer(reply.text, answers):
    return None
  turns.append(f"<think>{think}</think><message>{message}</message>")
  feedbacks.append(fb)
  kinds.append(reply.kind)
  turns.append(f"<think>The helper's information answers it.</think><answer>{answer}</answer>")
  return Demo(example["question"], turns, feedbacks, kinds)


def make_demos(examples: list[dict], helper, *, seed: int = 0, need_fraction: float = 0.2,
               known: set | None = None) -> list[Demo]:
  """Demos for as many examples as allow a faithful one. `known`: ids the SLM answers alone."""
  rng = random.Random(seed)
  out = []
  for ex in examples:
    demo = make_demo(ex, helper, knows_answer=bool(known and ex["id"] in known),
                     need_exchange=rng.random() < need_fraction)
    if demo is None and known is None:
      continue
    if demo is not None:
      out.append(demo)
  return out


def slm_knows(answers_alone: list, examples: list[dict]) -> set:
  """Ids of examples the SLM answered correctly on its own (for 'answer alone' demos)."""
  return {ex["id"] for pred, ex in zip(answers_alone, examples)
          if exact_match(pred, ex["answers"]) == 1.0}
