"""The paraphrase check: world-facts questions written by hand, in phrasings no template uses.

The held-out split asks about unseen countries in the training templates' words, so a
policy that memorised the templates still scores there. `world_paraphrase_examples()`
loads `data/world_paraphrase.jsonl`: one-hop, two-hop and private (a user's personal
facts around the question, as the privacy variants have) questions, each row naming the
world-facts example of the same fact (`source_id`), whose gold aliases it carries.
tests/test_paraphrase.py keeps the answers equal to countryinfo's (through the task's
own builder) and checks that no question matches a template. `evaluate` reports EM on
it beside held-out when `eval.paraphrase` is true; `task.name=world_paraphrase` loads it
as a task.

Row fields: id, question, answers, variant ("one_hop" | "two_hop" | "private"), qtype and
entity and popularity (the source's), source_id; private rows add private_facts and
private_spans.
"""
from __future__ import annotations

import json
import os

from seekjax.tasks.schema import make_example, validation_errors

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "world_paraphrase.jsonl")
TASK = "world_paraphrase"
VARIANTS = ("one_hop", "two_hop", "private")


def world_paraphrase_examples(seed: int = 0, path: str = PATH) -> list[dict]:
  """The paraphrase rows as example dicts, in file order (`seed` is unused: the rows are
  fixed; it is accepted as every task builder's argument)."""
  del seed
  out = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      if row.get("variant") not in VARIANTS:
        raise ValueError(f"{path}:{line_no}: variant must be one of {VARIANTS}")
      example = make_example(
          question=row["question"], answers=row["answers"], task=TASK, id=row["id"],
          qtype=row["qtype"], entity=row["entity"], popularity=row.get("popularity"),
          private_facts=row.get("private_facts"), private_spans=row.get("private_spans"),
          meta={"variant": row["variant"], "source_id": row["source_id"]})
      errors = validation_errors(example)
      if errors:
        raise ValueError(f"{path}:{line_no}: {errors[0]}")
      out.append(example)
  return out
