"""Markdown tables of evaluation results: the main table, then per-qtype and head/tail tables."""
from __future__ import annotations

MAIN_COLUMNS = ("method", "n", "EM", "F1", "messages/episode", "helper tokens/episode",
                "leak rate", "LLM-judge leak rate", "format failures", "helper errors")

SCORING_NOTE = (
    "`llm_only` is scored by containment: the helper (a fact-retrieval stand-in for an LLM) "
    "returns facts, not a short answer, so EM = 1 when a gold alias appears in its reply as "
    "whole words, and F1 = the best fraction of an alias's words present in the reply. It "
    "sends the whole question, private details included.")
WEIGHTS_NOTE = {"reference": "the SLM after the supervised cold start, before RL",
                "base": "the pretrained SLM", "policy": "the learned policy"}
LEAK_NOTE = ("Leak rate: fraction of episodes with private facts whose messages leak them "
             "(rule judge; n_private such episodes). 95% CIs: percentile bootstrap, "
             "{resamples} resamples, seed {seed}.")


def fmt(x, digits: int = 3) -> str:
  if x is None:
    return "–"
  if isinstance(x, bool):
    return str(x).lower()
  if isinstance(x, int):
    return str(x)
  return f"{x:.{digits}f}"


def with_ci(value, ci) -> str:
  if value is None:
    return "–"
  if not ci:
    return fmt(value)
  return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def main_table(methods: dict) -> str:
  """One row per method: method name first; EM and leak rate with 95% CIs."""
  rows = []
  for name, m in methods.items():
    o = m["overall"]
    rows.append([
        name, o["n"], with_ci(o["em"], o.get("em_ci")), fmt(o["f1"]),
        fmt(o["messages_per_episode"], 2), fmt(o["helper_tokens_per_episode"], 1),
        with_ci(o["leak_rate"], o.get("leak_rate_ci")) + f" (n={o['n_private']})",
        with_ci(o["llm_leak_rate"], o.get("llm_leak_rate_ci")),
        fmt(o["format_failure_rate"]), o["helper_errors"]])
  return table(MAIN_COLUMNS, rows)


def comparison_table(comparisons: dict | None) -> str:
  """One row per paired difference (`results.paired_comparisons`); "" when there is none."""
  rows = [[name, c["n"], fmt(c["mean"]), f"[{fmt(c['low'])}, {fmt(c['high'])}]",
           "yes" if c["low"] > 0 or c["high"] < 0 else "no"]
          for name, c in (comparisons or {}).items() if c]
  if not rows:
    return ""
  return table(("EM difference", "n", "mean", "95% CI", "excludes 0"), rows)


def paraphrase_table(results: dict) -> str:
  """Held-out EM beside EM on the paraphrase check, per method (results["paraphrase"]);
  "" without one. A policy that memorised the training templates drops in the second."""
  para = results.get("paraphrase")
  if not para:
    return ""
  variants = sorted({v for p in para.values() for v in p.get("by_variant", {})})
  rows = []
  for name, p in para.items():
    held = results["methods"].get(name, {}).get("overall", {})
    rows.append([name, fmt(held.get("em")), p["n"], with_ci(p["em"], p.get("em_ci"))]
                + [fmt(p.get("by_variant", {}).get(v)) for v in variants]
                + [fmt(p["messages_per_episode"], 2)])
  return table(["method", "held-out EM", "n", "paraphrase EM"]
               + [f"{v} EM" for v in variants] + ["messages/episode"], rows)


def split_table(methods: dict, key: str, label: str) -> str:
  """Rows = groups (question types or head/tail), columns = methods; cells EM / msgs / leak."""
  groups = sorted({g for m in methods.values() for g in m[key]})
  header = [label, "n"] + [f"{name} EM / msgs / leak" for name in methods]
  rows = []
  for g in groups:
    n = next((m[key][g]["n"] for m in methods.values() if g in m[key]), 0)
    cells = []
    for m in methods.values():
      s = m[key].get(g)
      cells.append("–" if s is None else
                   f"{fmt(s['em'], 2)} / {fmt(s['messages_per_episode'], 2)} / "
                   f"{fmt(s['leak_rate'], 2)}")
    rows.append([g, n] + cells)
  return table(header, rows)


def asking_table(methods: dict) -> str:
  """Where EM is lost: did a helper reply hold a gold answer (asking), and did the SLM then
  answer with it (answering)? Methods that never ask are left out; "" when none asks."""
  rows = []
  for name, m in methods.items():
    o = m["overall"]
    if o.get("feedback_answer_rate") is None or not o["messages_per_episode"]:
      continue
    rows.append([name, fmt(o["feedback_answer_rate"]), fmt(o["em_given_feedback_answer"]),
                 fmt(o["em_without_feedback_answer"]), fmt(o["em"])])
  if not rows:
    return ""
  return table(("method", "reply holds a gold answer", "EM there", "EM elsewhere", "EM"), rows)


# how the dynamic policy's checkpoint was chosen (train.select_checkpoint)
SELECTED = {"best_val": " (the best point of the validation curve)"}


def render(results: dict) -> str:
  """The whole results.md text from a results.json dict."""
  methods = results["methods"]
  meta = results["meta"]
  ckpt = meta["checkpoint_step"]
  lines = [
      "# seekjax evaluation", "",
      f"Model `{meta['model']}`, task `{meta['task']}` ({meta['split']} split, "
      f"{meta['num_examples']} "
      f"questions), helper `{meta['helper']}`, judge `{meta['judge']}`; dynamic policy: "
      + (f"checkpoint step {ckpt}{SELECTED.get(meta.get('checkpoint_selected'), '')}."
         if ckpt is not None else "base weights (no checkpoint)."),
      f"Greedy decoding. Baselines run on the {meta['baselines_on']} weights "
      f"({WEIGHTS_NOTE.get(meta['baselines_on'].split()[0], '')}).", "",
      main_table(methods), "",
      LEAK_NOTE.format(resamples=meta["bootstrap_resamples"], seed=meta["bootstrap_seed"]),
  ]
  if "llm_only" in methods:
    lines += ["", SCORING_NOTE]
  paired = comparison_table(results.get("comparisons"))
  if paired:
    lines += ["", "## Paired differences", "",
              "EM of the first method minus the second on the same questions; 95% CI by a "
              "paired bootstrap (question indices resampled jointly, "
              f"{meta['bootstrap_resamples']} resamples, seed {meta['bootstrap_seed']}).", "",
              paired]
  paraphrase = paraphrase_table(results)
  if paraphrase:
    lines += ["", "## Paraphrase check", "",
              "The same methods on hand-written questions in phrasings no training template "
              "uses (seekjax/tasks/data/world_paraphrase.jsonl); a drop from held-out shows "
              "template memorisation.", "", paraphrase]
  asking = asking_table(methods)
  if asking:
    lines += ["", "## Asking vs answering", "",
              "Fraction of episodes in which a helper reply contained a gold answer (whole "
              "words), EM on those episodes and on the others: a low first column is lost "
              "in asking, a low second one in answering from the reply.", "", asking]
  lines += ["", "## By question type (EM / messages per episode / leak rate)", "",
            split_table(methods, "by_qtype", "qtype"), "",
            "## By popularity (head / tail)", "",
            split_table(methods, "by_popularity", "popularity"), ""]
  return "\n".join(lines)
