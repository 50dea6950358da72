"""Redaction of private details in what evaluation writes for analysis (transcripts).

An example's private strings are its `private_facts` (third-person sentences such as
"the user's sister Amina moved to Asmara") and its `private_spans` (the verbatim
private parts of its question: "Amina", "My sister", "after a messy divorce"). Each
one is replaced wherever it occurs in a text, as whole words and ignoring case, by
REDACTED. Longer strings go first, so a fact that contains a span goes as a whole.
"""
from __future__ import annotations

import re

REDACTED = "[REDACTED]"


def private_strings(example: dict) -> list[str]:
  """The example's private facts and spans, longest first, without blanks or repeats."""
  found = [s.strip() for s in list(example.get("private_facts") or []) +
           list(example.get("private_spans") or []) if isinstance(s, str) and s.strip()]
  return sorted(set(found), key=lambda s: (-len(s), s))


def redactor(strings) -> re.Pattern | None:
  """One pattern matching any of `strings` as whole words (None when there are none)."""
  strings = sorted({s for s in strings if s}, key=lambda s: (-len(s), s))
  if not strings:
    return None
  alternatives = "|".join(re.escape(s) for s in strings)
  return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def redact(value, pattern: re.Pattern | None):
  """`value` with every match of `pattern` replaced by REDACTED: strings, and the strings
  inside lists, tuples and dicts (values only); other values as they are."""
  if pattern is None or value is None:
    return value
  if isinstance(value, str):
    return pattern.sub(REDACTED, value)
  if isinstance(value, (list, tuple)):
    return type(value)(redact(v, pattern) for v in value)
  if isinstance(value, dict):
    return {k: redact(v, pattern) for k, v in value.items()}
  return value
