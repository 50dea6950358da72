"""The SLM's knowledge gap on the world-facts task, and the helper's upper bound.

For a seeded sample of world-facts questions (up to --per-type per question type):
  slm_alone   SmolLM2-135M-Instruct (the embedded default, float32), greedy, chat template,
              system prompt SYSTEM below, max --max-new-tokens tokens. Scored by EM over
              the aliases on the whole reply (first line, trailing period removed), and by
              containment (a gold alias appears as whole words in the reply).
  helper      the default KnowledgeHelper (configs/_base.py: coverage 1.0, noise 0, top_k 2,
              terse style) sent the full question, scored by containment: it returns facts,
              not answers (the llm_only row of the evaluation is scored the same way). This
              is the upper bound on what asking can give.

Results are split by question type and by head/tail popularity and written as JSON; a
Markdown table goes to stdout.

  .venv/bin/python benchmarks/knowledge_gap.py [--per-type 32] [--batch 32]
      [--out benchmarks/results/knowledge_gap.json]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import seekjax as sj
from seekjax import tasks
from seekjax.eval.metrics import contains_answer
from seekjax.helpers.knowledge import KnowledgeHelper
from seekjax.tasks.world_facts import world_fact_base

SYSTEM = "Answer the question with only the answer: a name, a word or a number. No sentences."


def sample(examples: list[dict], per_type: int, seed: int) -> list[dict]:
  """Up to `per_type` examples of each qtype, chosen with a seeded shuffle."""
  by_type = collections.defaultdict(list)
  for e in examples:
    by_type[e["qtype"]].append(e)
  rng = random.Random(seed)
  out = []
  for qtype in sorted(by_type):
    rows = list(by_type[qtype])
    rng.shuffle(rows)
    out.extend(rows[:per_type])
  return out


def clean(reply: str) -> str:
  """The first line of a reply without a trailing period (what EM is computed on)."""
  line = reply.strip().split("\n")[0].strip()
  return line[:-1] if line.endswith(".") else line


def slm_answers(model, questions: list[str], batch: int, max_new_tokens: int) -> list[str]:
  """Greedy replies of the SLM, in batches, with progress on stderr."""
  out = []
  for start in range(0, len(questions), batch):
    t0 = time.perf_counter()
    out += sj.generate(model, questions[start:start + batch], max_new_tokens=max_new_tokens,
                       temperature=0.0, system=SYSTEM)
    print(f"[knowledge_gap] slm {min(start + batch, len(questions))}/{len(questions)} "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
  return out


def tally(examples, scores: dict[str, list[float]]) -> dict:
  """{group: {"n", metric: mean}} for every qtype, head/tail bucket and "all"."""
  groups = collections.defaultdict(list)
  for i, e in enumerate(examples):
    groups[e["qtype"]].append(i)
    groups["all"].append(i)
    bucket = tasks.head_tail(e)
    if bucket:
      groups["popularity:" + bucket].append(i)
  return {g: {"n": len(idx), **{m: sum(v[i] for i in idx) / len(idx) for m, v in scores.items()}}
          for g, idx in sorted(groups.items())}


def markdown(table: dict) -> str:
  lines = ["| group | n | SLM alone EM | SLM alone contains | helper (full question) contains |",
           "|---|---:|---:|---:|---:|"]
  for g, row in table.items():
    lines.append(f"| {g} | {row['n']} | {row['slm_em']:.3f} | {row['slm_contains']:.3f} | "
                 f"{row['helper_contains']:.3f} |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--per-type", type=int, default=32)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--max-new-tokens", type=int, default=16)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="benchmarks/results/knowledge_gap.json")
  args = ap.parse_args(argv)
  if args.per_type < 1 or args.batch < 1:
    ap.error("--per-type and --batch must be >= 1")

  examples = sample(tasks.world_facts_examples(args.seed), args.per_type, args.seed)
  questions = [e["question"] for e in examples]
  print(f"[knowledge_gap] {len(examples)} questions over "
        f"{len({e['qtype'] for e in examples})} types", file=sys.stderr)
  facts, entities = world_fact_base()
  helper = KnowledgeHelper(facts, entities, coverage=1.0, noise=0.0, top_k=2, style="terse",
                           entity_kind="country")
  t0 = time.perf_counter()
  replies = [helper.reply(q).text for q in questions]
  helper_s = time.perf_counter() - t0
  model = sj.load_model("smollm2-135m")
  t0 = time.perf_counter()
  slm = slm_answers(model, questions, args.batch, args.max_new_tokens)
  slm_s = time.perf_counter() - t0
  scores = {
      "slm_em": [tasks.exact_match(clean(a), e["answers"]) for a, e in zip(slm, examples)],
      "slm_contains": [contains_answer(a, e["answers"]) for a, e in zip(slm, examples)],
      "helper_contains": [contains_answer(r, e["answers"]) for r, e in zip(replies, examples)],
  }
  table = tally(examples, scores)
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": "python benchmarks/knowledge_gap.py " + " ".join(argv or sys.argv[1:]),
      "system_prompt": SYSTEM, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
      "slm_seconds": slm_s, "helper_seconds": helper_s, "table": table,
      "examples": [{"id": e["id"], "qtype": e["qtype"], "question": q, "answers": e["answers"],
                    "slm": a, "helper": r}
                   for e, q, a, r in zip(examples, questions, slm, replies)],
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(markdown(table))
  print(f"written: {args.out}")
  return result


if __name__ == "__main__":
  main()
