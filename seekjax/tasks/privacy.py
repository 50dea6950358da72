"""`task.privacy`: give a share of a task's examples private variants, checked, drops counted.

Modes:
  none      the examples as they are.
  template  ``TemplatePrivacySynthesizer``: world-facts questions (they carry a
            descriptor) get the full recipe; the QA files (hotpotqa, 2wiki, musique,
            popqa, gsm8k) get the generic wrappers, which add personal facts around the
            unchanged question.
  llm       ``LLMPrivacySynthesizer``: the three-step recipe through an OpenAI-compatible
            endpoint, each outcome cached (``privacy_cache.RowCache``).

Which examples become private depends only on (seed, example id) and ``fraction``, so
a rerun picks the same ones. A chosen example whose variant fails a check
(``privacy_checks``) is dropped from the split, not kept public; the others stay public.
Only examples with gold answers can be checked, so a task without them (reasoning-gym)
cannot take a privacy mode.
"""
from __future__ import annotations

import collections
import hashlib

from seekjax.tasks.privacy_templates import TemplatePrivacySynthesizer
from seekjax.tasks.privacy_checks import row_problem

PRIVACY_MODES = ("none", "template", "llm")


def is_chosen(example: dict, fraction: float, seed: int) -> bool:
  """Whether ``example`` gets a private variant: a stable hash of (seed, id) < fraction."""
  digest = hashlib.sha256(f"{seed}\x00privacy\x00{example['id']}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def chosen(examples, fraction: float, seed: int) -> list[dict]:
  """The examples that get private variants (see ``is_chosen``), in order."""
  return [e for e in examples if is_chosen(e, fraction, seed)]


def without_answers(examples) -> int:
  """How many examples have no gold alias (a privacy variant of them cannot be checked)."""
  return sum(not e["answers"] for e in examples)


def merge(examples, private_rows: list[dict], fraction: float, seed: int) -> list[dict]:
  """``examples`` in order, each chosen one replaced by its private row or left out."""
  by_source = {r["meta"]["source_id"]: r for r in private_rows}
  out = []
  for e in examples:
    if not is_chosen(e, fraction, seed):
      out.append(e)
    elif e["id"] in by_source:
      out.append(by_source[e["id"]])
  return out


def template_rows(examples, seed: int) -> tuple[list[dict], collections.Counter]:
  """(checked template variants of ``examples``, Counter of "kept" and drop reasons)."""
  synth, rows, stats = TemplatePrivacySynthesizer(seed), [], collections.Counter()
  for e in examples:
    row = synth.synthesize_one(e)
    reason = row_problem(row, e)
    stats[reason or "kept"] += 1
    if reason is None:
      rows.append(row)
  return rows, stats


def summary(stats: collections.Counter) -> str:
  """One line: "kept K of N; dropped D (reason=n, ...)"."""
  total = sum(stats.values())
  drops = {k: v for k, v in sorted(stats.items()) if k != "kept" and v}
  text = f"kept {stats['kept']} of {total}"
  if drops:
    text += f"; dropped {sum(drops.values())} (" + ", ".join(
        f"{k}={v}" for k, v in drops.items()) + ")"
  return text
