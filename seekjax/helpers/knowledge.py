"""KnowledgeHelper: a deterministic stand-in for a strong LLM, answering from a fact base.

This is NOT a language model. It retrieves facts with BM25 and phrases them with fixed
templates, so experiments can run on a CPU in milliseconds and vary the helper along
controlled axes:

  coverage  the fraction of facts it knows (a seeded subset; for one seed, a helper with
            higher coverage knows a superset of what a lower-coverage one knows)
  noise     the probability, fixed per message, that its top fact is swapped for a
            wrong one drawn from the whole fact base
  top_k     how many facts one reply carries (informativeness)
  style     "terse" or "verbose" phrasing

It behaves like the paper's helper in one more way: if ``entities`` is given and the
message names none of them (case-insensitive, on word boundaries), it replies with a
``<need>`` asking which entity is meant. It never repeats that request in an episode;
the second time it answers from the message as best it can.
"""
from __future__ import annotations

import hashlib
import logging
import re

import numpy as np

from seekjax.helpers.base import Helper, HelperReply, History

STYLES = ("terse", "verbose")
_ENTITY_BOOST = 1e6


def _tokenize(texts: list[str]) -> list[list[str]]:
  import bm25s  # pylint: disable=import-outside-toplevel  (lazy: bm25s initializes JAX's
  # backend on import, which must not happen before jax.distributed.initialize)
  return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def message_hash(seed: int, message: str) -> tuple[float, int]:
  """A deterministic (u in [0, 1), integer) pair for a message, independent of PYTHONHASHSEED."""
  digest = hashlib.sha256(f"{seed}\x00{message}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2 ** 64, int.from_bytes(digest[8:16], "big")


def entity_pattern(entities: list[str]) -> re.Pattern | None:
  """A case-insensitive regex matching any entity as whole words (longest first)."""
  names = sorted({e.strip() for e in entities if e and e.strip()}, key=len, reverse=True)
  if not names:
    return None
  return re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.I)


def known_subset(n: int, coverage: float, seed: int) -> np.ndarray:
  """Sorted indices of the round(coverage * n) facts a helper knows (nested in coverage)."""
  if not 0.0 <= coverage <= 1.0:
    raise ValueError(f"coverage must be in [0, 1], got {coverage}")
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:int(round(coverage * n))])


class FactIndex:
  """A BM25 index over a fixed list of facts, built once."""

  def __init__(self, facts: list[str]):
    self.facts = list(facts)
    import bm25s  # pylint: disable=import-outside-toplevel
    # bm25s sets its own logger to DEBUG; its index-building lines are noise in a run's log
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    self._bm25 = bm25s.BM25()
    if self.facts:
      self._bm25.index(_tokenize(self.facts), show_progress=False)

  def scores(self, query: str) -> np.ndarray:
    """float[len(facts)] BM25 scores of every fact for the query."""
    if not self.facts:
      return np.zeros((0,), np.float32)
    tokens = _tokenize([query])[0]
    if not tokens:
      return np.zeros((len(self.facts),), np.float32)
    return np.asarray(self._bm25.get_scores(tokens), np.float32)

  def top(self, query: str, k: int, boost: np.ndarray | None = None) -> list[int]:
    """Indices of up to k facts with positive score, best first (ties: lower index)."""
    s = self.scores(query)
    if boost is not None:
      s = s + boost
    order = np.argsort(-s, kind="stable")
    return [int(i) for i in order[:k] if s[i] > 0]


def _phrase(style: str, facts: list[str]) -> str:
  if style == "terse":
    return " ".join(facts)
  numbered = " ".join(f"({i + 1}) {f}" for i, f in enumerate(facts))
  return f"Here is what I know that is relevant: {numbered} I hope this helps with your next step."


def _need_text(style: str, kind: str) -> str:
  if style == "terse":
    return f"Which {kind} do you mean? Please name it."
  return (f"I cannot see your original question, so I need more context: which {kind} "
          "are you asking about? Please name it explicitly.")


def _unknown_text(style: str) -> str:
  return "I do not know." if style == "terse" else (
      "I am sorry, I could not find anything about that in what I know.")


class KnowledgeHelper(Helper):
  """A fact-base helper (a documented stand-in for an LLM; see the module docstring)."""

  name = "knowledge"

  def __init__(self, facts: list[str], entities: list[str] | None = None, coverage: float = 1.0,
               noise: float = 0.0, top_k: int = 2, seed: int = 0, style: str = "terse",
               entity_kind: str = "entity"):
    if style not in STYLES:
      raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if top_k < 1:
      raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0.0 <= noise <= 1.0:
      raise ValueError(f"noise must be in [0, 1], got {noise}")
    self.all_facts = list(facts)
    self.coverage, self.noise, self.top_k = coverage, noise, top_k
    self.seed, self.style, self.entity_kind = seed, style, entity_kind
    self.known_ids = known_subset(len(self.all_facts), coverage, seed)
    self.known = [self.all_facts[i] for i in self.known_ids]
    self.index = FactIndex(self.known)
    self.entities = list(entities) if entities else []
    self._entity_re = entity_pattern(self.entities)
    self._fact_entities = [self.named_entities(f) for f in self.known]

  def named_entities(self, text: str) -> set[str]:
    """The known entities named in text, lowercased."""
    if self._entity_re is None:
      return set()
    return {m.group(1).lower() for m in self._entity_re.finditer(text)}

  def knows(self, fact: str) -> bool:
    return fact in set(self.known)

  def lookup(self, message: str) -> list[str]:
    """The facts a reply would carry, before noise: top_k by BM25, facts that name an
    entity of the message first."""
    named = self.named_entities(message)
    boost = None
    if named:
      boost = np.array([_ENTITY_BOOST * bool(ents & named) for ents in self._fact_entities],
                       np.float32)
    return [self.known[i] for i in self.index.top(message, self.top_k, boost)]

  def _add_noise(self, message: str, facts: list[str]) -> list[str]:
    u, r = message_hash(self.seed, message)
    if not facts or u >= self.noise:
      return facts
    others = [f for f in self.all_facts if f not in facts]
    if not others:
      return facts
    return [others[r % len(others)]] + facts[1:]

  def reply(self, message: str, history: History = ()) -> HelperReply:
    """The synchronous core of ``respond``."""
    asked_before = any(r.kind == "need" for _, r in history)
    if self._entity_re is not None and not self.named_entities(message) and not asked_before:
      text = _need_text(self.style, self.entity_kind)
      return HelperReply("need", text, tokens=len(text.split()))
    facts = self._add_noise(message, self.lookup(message))
    text = _phrase(self.style, facts) if facts else _unknown_text(self.style)
    return HelperReply("info", text, tokens=len(text.split()))

  async def respond(self, message: str, history: History) -> HelperReply:
    return self.reply(message, history)
