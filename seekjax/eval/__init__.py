"""Evaluation: the baselines and the learned policy on the eval split, metrics with CIs, tables.

`python -m seekjax.evaluate` drives it; the pieces are usable alone:
  baselines  the methods (slm_cot, llm_only, static_interaction, static_scrubbed, cascade,
             dynamic), each a function EvalContext -> MethodRun
  metrics    per-episode records and summaries (overall, by qtype, by head/tail)
  stats      seeded percentile-bootstrap confidence intervals
  results    the results.json document; report renders results.md
"""
from seekjax.eval.baselines import (DEFAULT_METHODS, METHODS, EvalContext, MethodRun,
                                    run_methods)
from seekjax.eval.metrics import contains_answer, score_run, summarize
from seekjax.eval.results import build_results, schema_errors
from seekjax.eval.scrub import scrub_question
from seekjax.eval.stats import bootstrap_ci

__all__ = ["DEFAULT_METHODS", "METHODS", "EvalContext", "MethodRun", "bootstrap_ci",
           "build_results", "contains_answer", "run_methods", "schema_errors", "score_run",
           "scrub_question", "summarize"]
