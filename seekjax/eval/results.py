"""The results.json document: built from scored method runs, validated, written with results.md.

Schema (version 1):
  schema_version: 1
  meta: model, task, split ("eval"), num_examples, helper, judge, checkpoint_step (int or
        null), baselines_on ("base" | "policy"), seed, bootstrap_resamples, bootstrap_seed,
        rollout (the greedy settings), notes {method: how it is scored}
  methods: {name: {
    scoring: "answer" | "containment", wall_time: seconds,
    overall: {n, n_private, em, em_ci [lo, hi], f1, messages_per_episode,
              helper_tokens_per_episode, leak_rate, leak_rate_ci, llm_leak_rate,
              llm_leak_rate_ci, llm_judge_errors, format_failure_rate, helper_errors;
              and, optional for readers (not in files written before 2026-11-29):
              feedback_answer_rate, em_given_feedback_answer, em_without_feedback_answer;
              helper_prompt_tokens, helper_completion_tokens: the usage the helper's
              server reported, summed over the episodes (0 without a server)},
    by_qtype: {qtype: the same keys without CIs}, by_popularity: {"head"|"tail": ...},
    episodes: [metrics.score_run records]}}
  paraphrase (optional; only with eval.paraphrase): {name: {n, em, em_ci,
    messages_per_episode, leak_rate, by_variant {one_hop|two_hop|private: em}}}, the
    methods on the hand-written paraphrase check (`split_summary`)
  comparisons (optional for readers): {"dynamic - cold_start" | "dynamic -
    static_interaction": {metric: "em", mean, low, high, n}}, the paired bootstrap
    interval of the EM difference on the same questions (`stats.paired_difference_ci`),
    for each pair whose methods both ran
Transcripts go to episodes.jsonl beside it, one line per (method, question): method, id,
question, answers (gold), answer, messages, transcript, private_facts. With
redact_private (config.eval.redact_private, the default), each example's private facts
and spans are replaced by "[REDACTED]" in its text fields there and in the episode
answers of results.json (`seekjax.eval.redact`); the returned results are not changed.
"""
from __future__ import annotations

import json
import os

from etils import epath

from seekjax.eval import metrics, redact as redact_lib, report, stats

SCHEMA_VERSION = 1
OVERALL_KEYS = ("n", "n_private", "em", "em_ci", "f1", "messages_per_episode",
                "helper_tokens_per_episode", "leak_rate", "leak_rate_ci", "llm_leak_rate",
                "llm_leak_rate_ci", "llm_judge_errors", "format_failure_rate", "helper_errors")
GROUP_KEYS = tuple(k for k in OVERALL_KEYS if not k.endswith("_ci"))
META_KEYS = ("model", "task", "split", "num_examples", "helper", "judge", "checkpoint_step",
             "baselines_on", "seed", "bootstrap_resamples", "bootstrap_seed", "rollout", "notes")
NOTES = {
    "slm_cot": "SLM alone, chain of thought, no helper (max_turns=0); EM on <answer>.",
    "llm_only": "helper alone on the whole question; containment EM (gold alias in the "
                "reply, whole words), F1 = alias-word recall; leaks by construction.",
    "static_interaction": "SLM sends the question once (forced), then answers; EM on <answer>.",
    "static_scrubbed": "as static_interaction, with the question scrubbed by fixed rules.",
    "cascade": "SLM alone, self-verification, static_interaction only where rejected.",
    "cold_start": "the RL reference weights (after the cold start, before RL), with the "
                  "dynamic policy's settings, greedy; EM on <answer>.",
    "dynamic": "the learned policy, greedy; EM on <answer>.",
}
COMPARISONS = (("dynamic", "cold_start"), ("dynamic", "static_interaction"))


def paired_comparisons(methods: dict, num_resamples: int = 1000, seed: int = 0) -> dict:
  """{"a - b": {metric, mean, low, high, n}} of the EM difference of each pair in
  COMPARISONS whose methods both ran; `methods` holds each one's episode records, in
  the examples' order (so row i of both is question i)."""
  out = {}
  for a, b in COMPARISONS:
    if a in methods and b in methods:
      ci = stats.paired_difference_ci([r["em"] for r in methods[a]["episodes"]],
                                      [r["em"] for r in methods[b]["episodes"]],
                                      num_resamples, seed=seed)
      out[f"{a} - {b}"] = dict(metric="em", **ci) if ci else None
  return out


def build_results(runs: dict, examples: list, rule_judge, llm_judge, meta: dict,
                  num_resamples: int = 1000, seed: int = 0) -> dict:
  """The results.json dict for {name: MethodRun} on the eval examples."""
  methods = {}
  for name, run in runs.items():
    records = metrics.score_run(run, examples, rule_judge, llm_judge)
    summary = metrics.summarize(records, num_resamples=num_resamples, seed=seed)
    methods[name] = dict(scoring=run.scoring, wall_time=float(run.wall_time), **summary,
                         episodes=records)
  meta = dict(meta, num_examples=len(examples), bootstrap_resamples=num_resamples,
              bootstrap_seed=seed, notes={k: NOTES[k] for k in runs if k in NOTES})
  return {"schema_version": SCHEMA_VERSION, "meta": meta, "methods": methods,
          "comparisons": paired_comparisons(methods, num_resamples, seed)}


SUMMARY_KEYS = ("n", "em", "em_ci", "messages_per_episode", "leak_rate")


def split_summary(results: dict, examples: list) -> dict:
  """{name: SUMMARY_KEYS, and EM by_variant} of another split's results (the paraphrase
  check), to stand beside the held-out table; each example's variant is its
  meta["variant"] (examples without one are left out of by_variant)."""
  variants = [(e.get("meta") or {}).get("variant") for e in examples]
  out = {}
  for name, m in results["methods"].items():
    groups = {}
    for v, r in zip(variants, m["episodes"]):
      if v is not None:
        groups.setdefault(v, []).append(r["em"])
    out[name] = dict({k: m["overall"][k] for k in SUMMARY_KEYS},
                     by_variant={v: sum(x) / len(x) for v, x in groups.items()})
  return out


def schema_errors(results: dict) -> list[str]:
  """Human-readable problems with a results.json dict (empty when it is well formed)."""
  errors = []
  if results.get("schema_version") != SCHEMA_VERSION:
    errors.append(f"schema_version must be {SCHEMA_VERSION}")
  errors += [f"meta.{k} missing" for k in META_KEYS if k not in results.get("meta", {})]
  methods = results.get("methods")
  if not isinstance(methods, dict) or not methods:
    return errors + ["methods must be a non-empty dict"]
  for name, m in methods.items():
    errors += [f"{name}.overall.{k} missing" for k in OVERALL_KEYS if k not in m.get("overall", {})]
    for split in ("by_qtype", "by_popularity"):
      for g, s in m.get(split, {}).items():
        errors += [f"{name}.{split}.{g}.{k} missing" for k in GROUP_KEYS if k not in s]
    if len(m.get("episodes", [])) != m.get("overall", {}).get("n"):
      errors.append(f"{name}: episodes and overall.n disagree")
  return errors


EPISODE_TEXT_KEYS = ("question", "answers", "answer", "messages", "transcript", "private_facts")


def episode_rows(runs: dict, examples: list, patterns: list) -> list[dict]:
  """episodes.jsonl rows; patterns[i]: the redaction pattern of example i (None: none)."""
  rows = []
  for name, run in runs.items():
    for i, ex in enumerate(examples):
      row = {"method": name, "id": ex["id"], "question": ex["question"],
             "answers": ex["answers"], "answer": run.answers[i], "messages": run.messages[i],
             "transcript": run.transcripts[i], "private_facts": list(ex["private_facts"])}
      rows.append({k: redact_lib.redact(v, patterns[i]) if k in EPISODE_TEXT_KEYS else v
                   for k, v in row.items()})
  return rows


def redacted_results(results: dict, patterns: list) -> dict:
  """results with each episode record's answer redacted (records follow the examples)."""
  methods = {}
  for name, m in results["methods"].items():
    episodes = [dict(r, answer=redact_lib.redact(r["answer"], patterns[i]))
                for i, r in enumerate(m["episodes"])]
    methods[name] = dict(m, episodes=episodes)
  return dict(results, methods=methods)


def write(results: dict, runs: dict, examples: list, outdir: str,
          redact_private: bool = True) -> dict:
  """Write results.json, results.md and episodes.jsonl under outdir; returns their paths.

  redact_private: hide each example's private facts and spans (module docstring).
  """
  out = epath.Path(outdir if "://" in str(outdir) else os.path.abspath(outdir))  # or gs://
  out.mkdir(parents=True, exist_ok=True)
  paths = {k: str(out / f) for k, f in
           (("json", "results.json"), ("md", "results.md"), ("episodes", "episodes.jsonl"))}
  patterns = [redact_lib.redactor(redact_lib.private_strings(ex)) if redact_private else None
              for ex in examples]
  (out / "results.json").write_text(
      json.dumps(redacted_results(results, patterns), indent=2, sort_keys=False))
  (out / "results.md").write_text(report.render(results))
  (out / "episodes.jsonl").write_text(
      "".join(json.dumps(row) + "\n" for row in episode_rows(runs, examples, patterns)))
  return paths
