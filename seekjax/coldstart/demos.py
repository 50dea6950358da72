"""Cold-start demonstrations from task examples and a helper: the protocol, shown once.

The patterns, after the paper's behaviours:
  answer alone    self-contained questions, and ones the SLM knows (it recites the
                  supporting facts in <think>: `sft.knowledge`, seekjax/coldstart/knowledge.py);
  ask, then answer  a minimal, privacy-safe <message> built from the example's public
                  descriptor (never from the user's personal details), the helper's real
                  feedback, then the answer;
  need exchange   a first message that lacks the entity, the helper's <need>, then a
                  message giving only the context it asked for.
  decomposition   (optional, `decompose=True`) a two-hop question asked one fact at a
                  time: the bridge entity first, then the second fact about the bridge
                  the helper named (the example's meta["hops"]).
A demo is kept only if the final feedback actually contains a gold answer, so the
cold start never teaches guessing past an unhelpful reply.

Those patterns need a world-facts example (a descriptor, a self-contained question, taught
facts or hops). Every other example (QA files, reasoning-gym) gets a demo from the
helper's own reply, kept only when its answer scores as gold (helper_demos.py).

Helpers are asked through their async interface, `respond(message, history)`, which
every helper has (`seekjax.helpers.base.Helper`): the demos of all examples are built
concurrently on one event loop. A call that raises counts as a failed reply (no demo).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import random
import re

from seekjax.coldstart import helper_demos
from seekjax.coldstart.sft import Demo
from seekjax.rollout.pool import run_coroutine
from seekjax.tasks import normalize_answer


def _mentions_answer(text: str, answers) -> bool:
  norm = f" {normalize_answer(text)} "
  return any(f" {normalize_answer(a)} " in norm for a in answers if normalize_answer(a))


_ask = helper_demos.ask_helper

_FINAL = re.compile(r"^<think>.*?</think>(<answer>(.*?)</answer>)$", re.S)
_REPLY = re.compile(r"<(?:info|need)>(.*?)</(?:info|need)>", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def answer_sentence(feedback: str, answer: str, max_words: int = 40) -> str | None:
  """The first sentence of a formatted feedback whose words contain `answer`, or None (no
  such sentence, or a longer one than `max_words`)."""
  body = _REPLY.search(feedback)
  text = body.group(1) if body else feedback
  for sentence in _SENTENCE_END.split(text.strip()):
    if _mentions_answer(sentence, [answer]) and len(sentence.split()) <= max_words:
      return sentence.strip()
  return None


def restate_reply(demo: Demo) -> Demo:
  """`demo` with its answer turn's think quoting the last reply's sentence that holds the
  answer ("The helper says: <sentence>"), so the cold start ties the answer to the part
  of the reply it comes from rather than to a fixed phrase. Demos that answer without
  asking, or whose answer no single sentence of the reply holds, come back unchanged."""
  final = _FINAL.match(demo.turns[-1]) if demo.turns else None
  if not demo.feedbacks or final is None:
    return demo
  sentence = answer_sentence(demo.feedbacks[-1], final.group(2))
  if sentence is None:
    return demo
  turns = demo.turns[:-1] + [f"<think>The helper says: {sentence}</think>{final.group(1)}"]
  return dataclasses.replace(demo, turns=turns)


def run_sync(coro, should_stop=None):
  """Run a coroutine to completion from sync code (in a worker thread when this thread
  already runs an event loop, e.g. in a notebook). should_stop: see `run_coroutine`."""
  try:
    asyncio.get_running_loop()
  except RuntimeError:
    return run_coroutine(coro, should_stop)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(asyncio.run, coro).result()


def make_demo(example: dict, helper, *, knows_answer: bool = False,
              need_exchange: bool = False, decompose: bool = False) -> Demo | None:
  """One demonstration for `example`, or None when no faithful demo can be made."""
  return run_sync(amake_demo(example, helper, knows_answer=knows_answer,
                             need_exchange=need_exchange, decompose=decompose))


async def _decomposed_demo(example: dict, helper, hops: dict) -> Demo | None:
  """Ask for the bridge, then for the fact about the bridge the helper named; None unless
  the first reply names an accepted bridge and the second contains a gold answer."""
  first = hops["first"]
  reply1, fb1 = await _ask(helper, first, [])
  if reply1.error is not None or reply1.kind != "info":
    return None
  bridge = next((b for b in hops["bridges"] if _mentions_answer(reply1.text, [b])), None)
  if bridge is None:
    return None
  second = hops["then"].format(x=bridge)
  reply2, fb2 = await _ask(helper, second, [(first, reply1)])
  answer = next((a for a in example["answers"] if _mentions_answer(reply2.text, [a])), None)
  if reply2.error is not None or reply2.kind != "info" or answer is None:
    return None
  turns = [f"<think>This needs two facts; I ask the first without personal details.</think>"
           f"<message>{first}</message>",
           f"<think>It is {bridge}. Now I ask the second fact.</think><message>{second}</message>",
           f"<think>The helper's information answers it.</think><answer>{answer}</answer>"]
  return Demo(example["question"], turns, [fb1, fb2], [reply1.kind, reply2.kind])


async def amake_demo(example: dict, helper, *, knows_answer: bool = False,
                     need_exchange: bool = False, decompose: bool = False) -> Demo | None:
  """`make_demo`, awaiting the helper."""
  answers = example["answers"]
  if not answers:
    return None
  answer = answers[0]
  meta = example.get("meta") or {}
  if decompose and meta.get("hops") and helper is not None and not knows_answer:
    return await _decomposed_demo(example, helper, meta["hops"])
  if meta.get("self_contained") or knows_answer:
    if meta.get("self_contained"):
      why = "The question itself gives what I need."
    else:  # recite the supporting facts when the example names them (knowledge.py)
      facts = list(meta.get("facts") or [])
      why = " ".join(["I know this:"] + facts) if facts else "I know this."
    return Demo(example["question"], [f"<think>{why}</think><answer>{answer}</answer>"], [])
  desc = meta.get("descriptor")
  if not desc or helper is None:
    return None
  message = f"What is {desc}?"
  turns, feedbacks, kinds, history = [], [], [], []
  if need_exchange:
    first = f"I need to know {desc.split(' of ')[0]} of a {meta.get('answer_kind') or 'place'}."
    reply, fb = await _ask(helper, first, history)
    if reply.error is not None or reply.kind != "need":
      return None
    turns.append(f"<think>I need a fact I do not know.</think><message>{first}</message>")
    feedbacks.append(fb)
    kinds.append(reply.kind)
    history.append((first, reply))
    think = "The helper needs the entity; I give only that, not the user's details."
  else:
    think = "I do not know this fact; I ask without personal details."
  reply, fb = await _ask(helper, message, history)
  if reply.error is not None or reply.kind != "info" or not _mentions_answer(reply.text, answers):
    return None
  turns.append(f"<think>{think}</think><message>{message}</message>")
  feedbacks.append(fb)
  kinds.append(reply.kind)
  turns.append(f"<think>The helper's information answers it.</think><answer>{answer}</answer>")
  return Demo(example["question"], turns, feedbacks, kinds)


class _Watched:
  """A helper that notes whether any of its calls failed in transport (an outcome to
  retry on a rerun, not to cache)."""

  def __init__(self, helper):
    self.helper, self.failed = helper, False

  async def respond(self, message, history):
    try:
      reply = await self.helper.respond(message, history)
    except Exception:
      self.failed = True
      raise
    self.failed |= helper_demos.transport_error(reply)
    return reply


def uses_descriptor(example: dict, knows: bool, decompose: bool) -> bool:
  """Whether a world-facts pattern (`amake_demo`) makes this example's demo."""
  meta = example.get("meta") or {}
  return bool(meta.get("descriptor") or meta.get("self_contained") or knows
              or (decompose and meta.get("hops")))


async def ademo_for(example: dict, helper, *, knows: bool, need: bool, decompose: bool,
                    ask: helper_demos.AskSettings) -> tuple[Demo | None, str | None]:
  """(demo, None) or (None, why it was dropped) for one example, by either path."""
  if not uses_descriptor(example, knows, decompose):
    if helper is None:
      return None, helper_demos.DROP_NO_HELPER
    return await helper_demos.areply_demo(example, helper, ask, need_exchange=need)
  watched = None if helper is None else _Watched(helper)
  demo = await amake_demo(example, watched, knows_answer=knows, need_exchange=need,
                          decompose=decompose)
  if demo is not None:
    return demo, None
  failed = watched is not None and watched.failed
  return None, helper_demos.DROP_HELPER_ERROR if failed else helper_demos.DROP_DESCRIPTOR


def build_demos(examples: list[dict], helper, *, seed: int = 0, need_fraction: float = 0.2,
                known: set | None = None, decompose: bool = False,
                ask: helper_demos.AskSettings | None = None, cache=None,
                should_stop=None) -> tuple[list[Demo], collections.Counter]:
  """(demos in example order, {reason: count} of dropped candidates).

  `known`: ids the SLM answers alone. `decompose`: two-hop examples with meta["hops"] get
  a decomposition demo. `ask`: how examples without a descriptor are asked. `cache`: a
  `demo_store.DemoCache`; examples it holds are not asked again, and each new outcome
  (but a helper error, which a rerun retries) is added to it as it comes. The helper
  calls of all examples run concurrently. `should_stop`: called while they run; it
  raises to abandon them (a stop signal); the cache keeps what had finished.
  """
  ask = ask or helper_demos.AskSettings()
  rng = random.Random(seed)
  plans = [(ex, bool(known and ex["id"] in known), rng.random() < need_fraction)
           for ex in examples]
  done = dict(cache.outcomes) if cache is not None else {}
  outcomes: dict[int, tuple] = {}

  async def one(i, ex, knows, need):
    demo, reason = await ademo_for(ex, helper, knows=knows, need=need, decompose=decompose,
                                   ask=ask)
    outcomes[i] = (demo, reason)
    if cache is not None and reason != helper_demos.DROP_HELPER_ERROR:
      cache.add(ex["id"], demo, reason)

  async def build_all():
    await asyncio.gather(*(one(i, ex, knows, need) for i, (ex, knows, need) in enumerate(plans)
                           if ex["id"] not in done))
  try:
    run_sync(build_all(), should_stop)
  finally:
    if cache is not None:
      cache.flush()
  demos, dropped = [], collections.Counter()
  for i, (ex, _, _) in enumerate(plans):
    demo, reason = done[ex["id"]] if ex["id"] in done else outcomes[i]
    if demo is not None:
      demos.append(demo)
    else:
      dropped[reason] += 1
  return demos, dropped


def make_demos(examples: list[dict], helper, *, seed: int = 0, need_fraction: float = 0.2,
               known: set | None = None, decompose: bool = False,
               should_stop=None) -> list[Demo]:
  """Demos for as many examples as allow a faithful one, in example order (`build_demos`
  without its drop counts and cache)."""
  return build_demos(examples, helper, seed=seed, need_fraction=need_fraction, known=known,
                     decompose=decompose, should_stop=should_stop)[0]
