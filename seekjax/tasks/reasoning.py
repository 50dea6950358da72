"""reasoning-gym tasks as a second domain, scored by each generator's own ``score_answer``.

Examples carry ``task="reasoning_gym"``, ``qtype=<generator name>`` and in ``meta``
the generator name, its config (size, seed, extra kwargs) and the full entry, so
``score_reasoning_gym`` can rebuild the dataset (cached per config) and call
``ds.score_answer(prediction, entry)``. ``task_score`` finds that scorer through the
registry in ``scoring.py``. reasoning_gym is imported lazily (its import takes seconds).

All generators in ``DEFAULT_RG_TASKS`` were checked to run offline with no downloads,
in about 1 ms per example or less.
"""
from __future__ import annotations

import functools
import json

from seekjax.tasks.schema import make_example
from seekjax.tasks.scoring import register_scorer

TASK = "reasoning_gym"
DEFAULT_RG_TASKS = ("gsm_symbolic", "basic_arithmetic", "chain_sum", "propositional_logic",
                    "syllogism", "leg_counting")


@functools.lru_cache(maxsize=64)
def _dataset(name: str, size: int, seed: int, config_json: str):
  """Returns the reasoning-gym dataset for this exact config (cached)."""
  import reasoning_gym  # pylint: disable=import-outside-toplevel
  return reasoning_gym.create_dataset(name, size=size, seed=seed, **json.loads(config_json))


def reasoning_gym_examples(name: str, size: int, seed: int = 0, **config) -> list[dict]:
  """Returns ``size`` examples from reasoning-gym generator ``name`` (deterministic in seed).

  ``config`` is passed to ``reasoning_gym.create_dataset`` (e.g. difficulty knobs) and
  must be JSON-serialisable. Each example's ``answers`` is the generator's reference
  answer (or its ``example_answer`` when the task has many correct answers, as in
  propositional_logic); grading should go through ``task_score``, not EM.
  """
  config_json = json.dumps(config, sort_keys=True)
  ds = _dataset(name, size, seed, config_json)
  examples = []
  for i in range(size):
    entry = ds[i]
    answer = entry.get("answer")
    if not isinstance(answer, str):
      answer = (entry.get("metadata") or {}).get("example_answer")
    qid = f"rg/{name}/{seed}/{i}"
    meta = {"rg_name": name, "rg_size": size, "rg_seed": seed, "rg_config": config_json,
            "entry": entry}
    examples.append(make_example(question=entry["question"],
                                 answers=[answer] if isinstance(answer, str) else [],
                                 task=TASK, id=qid, qtype=name, entity=qid, meta=meta))
  return examples


def reasoning_examples(names=DEFAULT_RG_TASKS, size_per_task: int = 100,
                       seed: int = 0) -> list[dict]:
  """Returns ``size_per_task`` examples from each generator in ``names``, task by task."""
  return [e for name in names for e in reasoning_gym_examples(name, size_per_task, seed)]


def score_reasoning_gym(prediction: str, example: dict) -> float:
  """Returns the generator's own score in [0, 1] for ``prediction`` on this example."""
  meta = example["meta"]
  ds = _dataset(meta["rg_name"], meta["rg_size"], meta["rg_seed"], meta["rg_config"])
  return float(ds.score_answer(prediction, entry=meta["entry"]))


register_scorer(TASK, score_reasoning_gym)
