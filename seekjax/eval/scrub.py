"""A fixed privacy-scrubbing rewrite of a question, for the `static_scrubbed` baseline.

It sees only the question text, never an example's labels (private_facts,
private_spans): what a fixed pipeline could do at test time. Rules, in order:

1. A person introduced through the user ("my sister Amina", "Amina, my best friend,")
   becomes "a person"; later mentions of that name become "the person" ("Amina's" ->
   "the person's").
2. Any other "my/our <noun>" loses the possessive ("my savings" -> "the savings").
3. First-person pronouns become third person ("I" -> "someone", "me" -> "them").

It does not remove sensitive details ("after a cancer diagnosis"); once nothing ties
them to the user, a request that carries them is no longer about the user.
"""
from __future__ import annotations

import re

_NAME = r"[A-Z][a-z]+(?:-[A-Z][a-z]+)?"
_NOUN = r"[a-z][a-z-]*(?:\s+[a-z][a-z-]*)?"   # one or two lowercase words: "best friend"
_MY = r"(?:[Mm]y|[Oo]ur)"
_INTRO_BEFORE = re.compile(rf"\b{_MY}\s+{_NOUN}\s+({_NAME})\b")        # my sister Amina
_INTRO_AFTER = re.compile(rf"\b({_NAME}),\s+{_MY}\s+{_NOUN},")         # Amina, my sister,
_POSSESSIVE = re.compile(rf"\b{_MY}\b")
_PRONOUNS = [(re.compile(r"\bI'm\b"), "someone is"), (re.compile(r"\bI've\b"), "someone has"),
             (re.compile(r"\bI'd\b"), "someone would"), (re.compile(r"\bI\b"), "someone"),
             (re.compile(r"\b(?:me|myself)\b", re.I), "them"),
             (re.compile(r"\b(?:we|us)\b", re.I), "they"),
             (re.compile(r"\b(?:mine|ours)\b", re.I), "theirs")]
_WORDS_NOT_NAMES = {"The", "A", "An", "In", "On", "Which", "What", "Who", "Where", "When", "How",
                    "Name", "My", "Our", "I"}


def scrub_question(question: str) -> str:
  """The question rewritten by the fixed rules of the module docstring."""
  names: list[str] = []

  def intro(match: re.Match) -> str:
    name = match.group(1)
    if name in _WORDS_NOT_NAMES:
      return match.group(0)
    names.append(name)
    return "a person"

  text = _INTRO_AFTER.sub(intro, question)
  text = _INTRO_BEFORE.sub(intro, text)
  for name in sorted(set(names), key=len, reverse=True):
    text = re.sub(rf"\b{re.escape(name)}'s\b", "the person's", text)
    text = re.sub(rf"\b{re.escape(name)}\b", "the person", text)
  text = _POSSESSIVE.sub("the", text)
  for pattern, repl in _PRONOUNS:
    text = pattern.sub(repl, text)
  text = re.sub(r"\s+", " ", text).strip()
  # Sentence starts capitalised again ("a person moved" -> "A person moved").
  return re.sub(r"(^|[.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
