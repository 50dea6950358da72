"""Tasks and data: QA readers, the world-facts task, privacy synthesis, reasoning-gym, scoring.

Every task yields example dicts with one schema (``seekjax.tasks.schema``); grain
pipelines (``make_pipeline``) batch, shuffle, shard and checkpoint them.
"""
from seekjax.tasks.catalog import TASK_BUILDERS, task_examples
from seekjax.tasks.evaluation import (HEAD_THRESHOLDS, em_by_popularity, em_by_qtype, head_tail,
                                      score_answers)
from seekjax.tasks.pipeline import (entity_unit, example_entities, make_pipeline, pad_batch,
                                    split_by_entity, tokenize_transform)
from seekjax.tasks.privacy import PRIVACY_MODES
from seekjax.tasks.privacy_cache import RowCache
from seekjax.tasks.privacy_checks import row_problem
from seekjax.tasks.privacy_llm import STEP_PROMPTS, LLMPrivacySynthesizer
from seekjax.tasks.privacy_templates import TEMPLATE_COUNT, TemplatePrivacySynthesizer
from seekjax.tasks.readers import (FORMATS, MalformedRowError, MalformedRowWarning, QAFileError,
                                   ReadStats, read_qa, read_qa_with_stats)
from seekjax.tasks.reasoning import (DEFAULT_RG_TASKS, reasoning_examples, reasoning_gym_examples,
                                     score_reasoning_gym)
from seekjax.tasks.schema import EXAMPLE_KEYS, make_example, validation_errors
from seekjax.tasks.scoring import (exact_match, extract_answer, f1, normalize_answer,
                                   register_scorer, task_score)
from seekjax.tasks.world_data import HEAD_POPULARITY, Country, load_countries
from seekjax.tasks.world_facts import world_fact_base
from seekjax.tasks.world_questions import (ONE_HOP_QTYPES, SELF_CONTAINED_QTYPES, TWO_HOP_QTYPES,
                                           WORLD_QTYPES, world_facts_examples)

__all__ = [
    "Country", "DEFAULT_RG_TASKS", "EXAMPLE_KEYS", "FORMATS", "HEAD_POPULARITY", "HEAD_THRESHOLDS",
    "LLMPrivacySynthesizer", "MalformedRowError", "MalformedRowWarning", "ONE_HOP_QTYPES",
    "PRIVACY_MODES", "QAFileError", "ReadStats", "RowCache", "SELF_CONTAINED_QTYPES",
    "STEP_PROMPTS", "TASK_BUILDERS", "TEMPLATE_COUNT", "TWO_HOP_QTYPES",
    "TemplatePrivacySynthesizer", "WORLD_QTYPES", "em_by_popularity", "em_by_qtype", "entity_unit",
    "exact_match", "example_entities", "extract_answer", "f1", "head_tail", "load_countries",
    "make_example", "make_pipeline", "normalize_answer", "pad_batch", "read_qa",
    "read_qa_with_stats", "reasoning_examples", "reasoning_gym_examples", "register_scorer",
    "row_problem", "score_answers", "score_reasoning_gym", "split_by_entity", "task_examples",
    "task_score", "tokenize_transform", "validation_errors", "world_fact_base",
    "world_facts_examples",
]
