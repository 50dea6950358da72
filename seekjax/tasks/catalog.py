"""Named task builders, so a config can say ``task="world_facts_private"`` and get examples."""
from __future__ import annotations

from seekjax.tasks.paraphrase import world_paraphrase_examples
from seekjax.tasks.privacy_templates import TemplatePrivacySynthesizer
from seekjax.tasks.readers import FORMATS, read_qa
from seekjax.tasks.reasoning import DEFAULT_RG_TASKS, reasoning_examples
from seekjax.tasks.world_questions import SELF_CONTAINED_QTYPES, WORLD_QTYPES, world_facts_examples


def _world_private(seed: int = 0, qtypes=None) -> list[dict]:
  """Returns template privacy variants of the helper-dependent world questions."""
  qtypes = [q for q in (qtypes or WORLD_QTYPES) if q not in SELF_CONTAINED_QTYPES]
  return TemplatePrivacySynthesizer(seed).synthesize(world_facts_examples(seed, qtypes))


def _reasoning(seed: int = 0, names=DEFAULT_RG_TASKS, size_per_task: int = 100) -> list[dict]:
  """Returns reasoning-gym examples (see ``reasoning_examples``)."""
  return reasoning_examples(names, size_per_task, seed)


TASK_BUILDERS = {
    "world_facts": world_facts_examples,
    "world_facts_private": _world_private,
    "world_paraphrase": world_paraphrase_examples,
    "reasoning_gym": _reasoning,
}


def task_examples(name: str, **kwargs) -> list[dict]:
  """Returns the examples of a named task.

  Names: "world_facts" (kwargs: seed, qtypes), "world_facts_private" (seed, qtypes),
  "world_paraphrase" (the hand-written paraphrase check, `paraphrase.py`),
  "reasoning_gym" (seed, names, size_per_task), or a QA file format from ``FORMATS``
  (kwargs: path, strict).
  """
  if name in TASK_BUILDERS:
    return TASK_BUILDERS[name](**kwargs)
  if name in FORMATS:
    return read_qa(kwargs["path"], name, strict=kwargs.get("strict", False))
  known = sorted(TASK_BUILDERS) + list(FORMATS)
  raise ValueError(f"unknown task {name!r}; expected one of {known}")
