"""SLM knowledge: teach the SLM a seeded fraction of the world's facts before the cold start.

The CPU stand-in for a stronger SLM in the scaling study (`sft.knowledge`). A bigger SLM
differs from a smaller one mostly in what it knows; SmolLM2-135M knows almost none of the
world-facts answers (slm_cot EM 0.02), so without this every question pays for a message.

  taught facts   a seeded subset of the fact base's *named* facts (capitals, currencies,
                 languages, regions, neighbours; not populations or areas: exact counts
                 are not what a small LM memorizes), nested in the fraction, drawn over
                 the whole world, held-out entities included, as pre-training knowledge
                 would be. The held-out *questions* are never shown.
  fact rows      each taught fact as plain text, the loss on its value only ("... is
                 Asmara."), cut after MAX_VALUE_TOKENS tokens of it.
  recall demos   training examples whose supporting facts were all taught become
                 "answer alone" demos that recite the facts in <think> (demos.py), so the
                 cold start shows how to use what was taught (Allen-Zhu & Li's "mixed
                 training": facts for all entities, question-answering for some).

`recalled` measures what was learned: a fact counts as recalled when every value token has
probability > 0.5 under teacher forcing, so greedy decoding reproduces it.
"""
from __future__ import annotations

import re

import numpy as np

from seekjax.helpers.knowledge import known_subset
from seekjax.tasks.world_facts import is_count_fact

MAX_VALUE_TOKENS = 8
_SALT = 7919  # the taught subset is independent of the helper's (same seed, other draw)
_VALUE = re.compile(r"\b(?:is|are) (?:in the world region )?|\bborders with ")


def taught_facts(facts: list[str], fraction: float, seed: int) -> list[str]:
  """The named facts an SLM with knowledge `fraction` was taught (nested in fraction)."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"sft.knowledge: {fraction} is not a share of the fact base; expected a "
                     "value in [0, 1]")
  named = [f for f in facts if not is_count_fact(f)]
  return [named[i] for i in known_subset(len(named), fraction, seed + _SALT)]


def value_start(fact: str) -> int:
  """Character offset where the fact's value begins ("The capital of X is |Asmara.")."""
  m = _VALUE.search(fact)
  if m is None:
    raise ValueError(f"no value in fact {fact!r}")
  return m.end()


def fact_ids(tokenizer, fact: str) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32[T], mask int32[T]): the fact as plain text up to its value's first
  MAX_VALUE_TOKENS tokens (the loss is on those; the rest of a long value, e.g. a list of
  neighbours, would only widen the rows)."""
  k = value_start(fact)
  head = list(tokenizer.encode(fact[:k].rstrip()))
  value = list(tokenizer.encode(" " + fact[k:]))[:MAX_VALUE_TOKENS]
  return (np.asarray(head + value, np.int32),
          np.asarray([0] * len(head) + [1] * len(value), np.int32))


def known_examples(examples: list[dict], taught: list[str]) -> set:
  """Ids of the examples (not self-contained) whose supporting facts were all taught."""
  taught = set(taught)
  return {ex["id"] for ex in examples
          if not (ex.get("meta") or {}).get("self_contained")
          and (ex.get("meta") or {}).get("facts")
          and all(f in taught for f in ex["meta"]["facts"])}


def recalled(logprobs: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """bool[N]: rows whose every masked token has probability > 0.5 (greedy reproduces it)."""
  ok = (np.asarray(logprobs) > np.log(0.5)) | (np.asarray(mask) == 0)
  return ok.all(axis=-1)
