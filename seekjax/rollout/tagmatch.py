"""Detect a closing tag (e.g. "</message>") in sampled ids, whatever the tokenization.

A per-row KMP automaton over characters, lifted to tokens: for every automaton state q
and token id t, `table[q, t]` is the state after reading t's text, and `hit[q, t]`
says whether the pattern completed anywhere inside it. The tables are built once per
(tokenizer, pattern) on the host; inside the jitted loop detection is two gathers.
"""
from __future__ import annotations

import functools
import weakref

import numpy as np


def _kmp_failure(pattern: str) -> list[int]:
  fail = [0] * len(pattern)
  k = 0
  for i in range(1, len(pattern)):
    while k and pattern[i] != pattern[k]:
      k = fail[k - 1]
    if pattern[i] == pattern[k]:
      k += 1
    fail[i] = k
  return fail


def _step(pattern, fail, q, ch):
  """One character. Returns (new state, completed)."""
  while q and ch != pattern[q]:
    q = fail[q - 1]
  if ch == pattern[q]:
    q += 1
  if q == len(pattern):
    return fail[q - 1], True
  return q, False


def _run(pattern, fail, q, text):
  """`text` from state q. Returns (end state, completed anywhere)."""
  hit = False
  for ch in text:
    q, done = _step(pattern, fail, q, ch)
    hit |= done
  return q, hit


def build_tables(token_texts: list[str], pattern: str):
  """Returns (table int32[Q, V], hit bool[Q, V]) with Q = len(pattern).

  A character the pattern does not hold sends every state to 0, so only a token's text
  before its first such character depends on the state it starts in: the rest runs once
  from 0, not once per state (most of a vocabulary's tokens start with one).
  """
  n_states, vocab = len(pattern), len(token_texts)
  fail = _kmp_failure(pattern)
  chars = set(pattern)
  table = np.zeros((n_states, vocab), np.int32)
  hit = np.zeros((n_states, vocab), bool)
  for t, text in enumerate(token_texts):
    if not chars.intersection(text):
      continue  # resets every state to 0 and completes nothing
    cut = next((i for i, ch in enumerate(text) if ch not in chars), len(text))
    rest = _run(pattern, fail, 0, text[cut:]) if cut < len(text) else None
    for q in range(n_states):
      s, h = _run(pattern, fail, q, text[:cut])
      if rest is not None:
        s, h = rest[0], h or rest[1]
      table[q, t], hit[q, t] = s, h
  return table, hit


@functools.lru_cache(maxsize=8)
def _cached(token_texts: tuple, pattern: str):
  return build_tables(list(token_texts), pattern)


def token_texts(tokenizer, vocab_size: int) -> tuple:
  """The text each id decodes to on its own (special tokens give their literal text)."""
  n = min(vocab_size, tokenizer.vocab_size)
  texts = tokenizer.tok.decode_batch([[i] for i in range(n)], skip_special_tokens=False)
  return tuple(texts) + ("",) * (vocab_size - n)


# (vocab_size, pattern) -> tables, per live tokenizer: decoding a 49k vocabulary id by id
# takes about 0.1 s, which every rollout (each RL step, each evaluation) used to pay twice
_PER_TOKENIZER: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tag_tables(tokenizer, vocab_size: int, pattern: str):
  """Cached tables for one tokenizer and pattern: (int32[Q, V], bool[Q, V])."""
  per = _PER_TOKENIZER.setdefault(tokenizer, {})
  if (vocab_size, pattern) not in per:
    per[(vocab_size, pattern)] = _cached(token_texts(tokenizer, vocab_size), pattern)
  return per[(vocab_size, pattern)]
