"""Scoring of one method's outputs: per-episode records, then summaries overall and by split.

A record is one evaluated question:
  id, qtype, popularity ("head" | "tail" | None), private (has private facts),
  answer (the scored text, None if none), em (the task score: exact match for QA),
  f1, messages, helper_tokens, helper_errors, helper_prompt_tokens and
  helper_completion_tokens (the usage a served helper reported; 0 where none),
  format_failure (no <answer>; None where the method has no answer format),
  leak (rule judge; None for examples without private facts),
  llm_leak (LLM judge when configured, else None), llm_judge_error,
  feedback_has_answer (a helper reply of the episode contains a gold alias as whole words;
  None when it sent no message).

The last one splits where EM is lost: in asking (no reply carried the answer) or in
answering (a reply did, and the SLM's answer still missed it).

Leak rates are taken over the episodes whose example has private facts (an episode
that sent nothing leaks nothing and counts as 0); the LLM judge's rate leaves out the
episodes it could not judge (counted in llm_judge_errors), never reading them as "no
leak". `llm_only` is scored by containment (`contains_answer`): see `baselines.llm_only`.
"""
from __future__ import annotations

import asyncio
import collections
import re

import numpy as np

from seekjax.eval import stats
from seekjax.rollout.pool import run_coroutine
from seekjax.tasks import f1, head_tail, normalize_answer, task_score

SCORING = ("answer", "containment")


def contains_answer(text: str | None, aliases) -> float:
  """1.0 when a gold alias appears in text as a whole-word run (after SQuAD normalisation)."""
  if not text:
    return 0.0
  words = normalize_answer(text).split()
  for alias in aliases:
    target = normalize_answer(alias).split()
    n = len(target)
    if n and any(words[i:i + n] == target for i in range(len(words) - n + 1)):
      return 1.0
  return 0.0


def alias_recall(text: str | None, aliases) -> float:
  """Best fraction of an alias's normalised tokens that occur in text (containment F1)."""
  if not text:
    return 0.0
  words = set(normalize_answer(text).split())
  best = 0.0
  for alias in aliases:
    target = normalize_answer(alias).split()
    if target:
      best = max(best, sum(t in words for t in target) / len(target))
  return best


_FEEDBACK = re.compile(r"<feedback>(.*?)</feedback>", re.S)
_TAG = re.compile(r"<[^<>]*>")


def feedback_text(transcript: str, scoring: str) -> str:
  """The helper replies in an episode's transcript, tags removed (llm_only's transcript
  is its reply)."""
  text = (transcript or "") if scoring == "containment" else " ".join(
      _FEEDBACK.findall(transcript or ""))
  return _TAG.sub(" ", text)


def feedback_has_answer(transcript: str, scoring: str, messages, aliases) -> bool | None:
  """Whether a helper reply of the episode holds a gold alias (None: it sent no message)."""
  if not messages:
    return None
  return bool(contains_answer(feedback_text(transcript, scoring), aliases))


def asking_stats(records: list[dict]) -> dict:
  """Asking vs answering over records with `em` and `feedback_has_answer`: the fraction of
  episodes whose replies held a gold answer (no message counts as not), EM there and EM
  on the others (None for an empty side)."""
  held = [r for r in records if r["feedback_has_answer"]]
  rest = [r for r in records if not r["feedback_has_answer"]]
  return dict(feedback_answer_rate=_mean([float(bool(r["feedback_has_answer"])) for r in records]),
              em_given_feedback_answer=_mean([r["em"] for r in held]),
              em_without_feedback_answer=_mean([r["em"] for r in rest]))


def score_run(run, examples, rule_judge, llm_judge=None) -> list[dict]:
  """Per-episode records (see the module docstring) for a MethodRun over examples."""
  if len(run.answers) != len(examples):
    raise ValueError(f"{run.name}: {len(run.answers)} outputs for {len(examples)} examples")
  if run.scoring not in SCORING:
    raise ValueError(f"{run.name}: unknown scoring {run.scoring!r}; valid: {SCORING}")
  llm_verdicts = {}
  if llm_judge is not None:
    cases = [i for i, ex in enumerate(examples) if ex["private_facts"] and run.messages[i]]
    llm_verdicts = dict(zip(cases, judge_many(
        llm_judge, [(list(run.messages[i]), examples[i]["private_facts"]) for i in cases])))
  records = []
  for i, ex in enumerate(examples):
    answer, messages = run.answers[i], list(run.messages[i])
    if run.scoring == "containment":
      em_i, f1_i, format_failure = (contains_answer(answer, ex["answers"]),
                                    alias_recall(answer, ex["answers"]), None)
    else:
      em_i = task_score(answer, ex)
      f1_i = f1(answer, ex["answers"]) if ex["answers"] else em_i
      format_failure = answer is None
    private = bool(ex["private_facts"])
    leak = llm_leak = llm_error = None
    if private:
      leak = bool(messages) and rule_judge.judge(messages, ex["private_facts"]).leak
      if llm_judge is not None:
        verdict = llm_verdicts.get(i)   # None: nothing was sent, so nothing leaked
        llm_error = verdict.error if verdict else None
        llm_leak = None if llm_error else bool(verdict and verdict.leak)
    has_answer = feedback_has_answer(run.transcripts[i], run.scoring, messages, ex["answers"])
    records.append(dict(
        id=ex["id"], qtype=ex["qtype"], popularity=head_tail(ex), private=private,
        answer=answer, em=float(em_i), f1=float(f1_i), messages=len(messages),
        helper_tokens=int(run.helper_tokens[i]), helper_errors=int(run.helper_errors[i]),
        helper_prompt_tokens=int(run.helper_prompt_tokens[i]),
        helper_completion_tokens=int(run.helper_completion_tokens[i]),
        format_failure=format_failure, leak=leak, llm_leak=llm_leak, llm_judge_error=llm_error,
        feedback_has_answer=has_answer))
  return records


def judge_many(judge, cases: list[tuple[list, list]], should_stop=None) -> list:
  """LeakVerdicts for (messages, private_facts) cases, concurrently when the judge is async.

  should_stop: None, or a callable that raises to abandon an async judge's calls (see
  `seekjax.rollout.pool.run_coroutine`).
  """
  if not cases:
    return []
  try:
    asyncio.get_running_loop()
    running = True
  except RuntimeError:
    running = False
  if running or not hasattr(judge, "ajudge"):
    return [judge.judge(m, f) for m, f in cases]

  async def all_cases():
    return await asyncio.gather(*(judge.ajudge(m, f) for m, f in cases))
  return run_coroutine(all_cases(), should_stop)


def _mean(values) -> float | None:
  return float(np.mean(values)) if len(values) else None


def group_stats(records: list[dict], ci: bool = False, num_resamples: int = 1000,
                seed: int = 0) -> dict:
  """Summary of a group of records; with ci, 95% bootstrap intervals on EM and leak rate."""
  em = [r["em"] for r in records]
  leaks = [float(r["leak"]) for r in records if r["leak"] is not None]
  llm = [float(r["llm_leak"]) for r in records if r["llm_leak"] is not None]
  fmt = [float(r["format_failure"]) for r in records if r["format_failure"] is not None]
  out = dict(
      n=len(records), n_private=len(leaks), em=_mean(em), f1=_mean([r["f1"] for r in records]),
      messages_per_episode=_mean([r["messages"] for r in records]),
      helper_tokens_per_episode=_mean([r["helper_tokens"] for r in records]),
      leak_rate=_mean(leaks), llm_leak_rate=_mean(llm),
      llm_judge_errors=sum(r["llm_judge_error"] is not None for r in records),
      format_failure_rate=_mean(fmt),
      helper_errors=int(sum(r["helper_errors"] for r in records)),
      helper_prompt_tokens=int(sum(r.get("helper_prompt_tokens", 0) for r in records)),
      helper_completion_tokens=int(sum(r.get("helper_completion_tokens", 0) for r in records)),
      **asking_stats(records))
  if ci:
    for key, values in (("em_ci", em), ("leak_rate_ci", leaks), ("llm_leak_rate_ci", llm)):
      interval = stats.bootstrap_ci(values, num_resamples, seed=seed)
      out[key] = None if interval is None else [interval["low"], interval["high"]]
  return out


def _split(records, key) -> dict:
  groups = collections.defaultdict(list)
  for r in records:
    if r[key] is not None:
      groups[r[key]].append(r)
  return {g: group_stats(groups[g]) for g in sorted(groups)}


def summarize(records: list[dict], num_resamples: int = 1000, seed: int = 0) -> dict:
  """{"overall": stats with CIs, "by_qtype": {qtype: stats}, "by_popularity": {...}}."""
  return {"overall": group_stats(records, ci=True, num_resamples=num_resamples, seed=seed),
          "by_qtype": _split(records, "qtype"),
          "by_popularity": _split(records, "popularity")}
