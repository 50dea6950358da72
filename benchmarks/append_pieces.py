"""Feedback appends in pieces of the chunk width against one append of the whole chunk.

A rollout appends each helper reply (`host.feedback_ids`, at most max_feedback_tokens =
64 ids on the default) into the KV cache of the rows that asked. The chunk width was the
longest feedback's (64); appends now go in pieces of half that (32,
`rollout.config.chunk_width`), one after the other (`engine.append_pieces`), so that a
short reply costs one 32-wide piece. This times both on SmolLM2-135M (float32, a 640-slot
cache, rows at position 150 as after a prompt and a turn) with the default's own
feedback: the KnowledgeHelper's replies to 60 questions about 20 countries (capital,
population, currency), formatted and tokenized as the rollout does.

For each append batch size N (the rollout appends to 1, 2, 4, 8 or 16 rows,
`compaction.append_sizes`) it appends --groups groups of N replies, each form in turn,
--reps times, and reports the median seconds of all groups' appends per form and their
ratio. Programs are compiled first (not timed).

  .venv/bin/python benchmarks/append_pieces.py [--reps 3] [--groups 12]
      [--out benchmarks/results/append_pieces.json]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seekjax import configlib, protocol  # noqa: E402
from seekjax.models.api import load_model  # noqa: E402
from seekjax.rollout import engine  # noqa: E402
from seekjax.rollout.host import feedback_ids  # noqa: E402
from seekjax.run.helper_setup import build_helper  # noqa: E402
from chunk_windows import prefilled  # noqa: E402  (this directory, on the path when run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTRIES = ["Kenya", "Peru", "Norway", "Vietnam", "Chile", "Ghana", "Nepal", "Hungary",
             "Bolivia", "Iceland", "Senegal", "Mongolia", "Portugal", "Uganda", "Jordan",
             "Ecuador", "Finland", "Zambia", "Laos", "Tunisia"]
TEMPLATES = ["What is the capital of {}?", "What is the population of {}?",
             "Which currency does {} use?"]


def feedback_lengths(tok, max_tokens: int) -> list[list[int]]:
  """The default helper's replies to the questions, as the ids a rollout appends."""
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "smollm2_worldfacts.py"))
  helper = build_helper(cfg.helper)
  out = []
  for c in COUNTRIES:
    for t in TEMPLATES:
      reply = asyncio.run(helper.respond(t.format(c), ()))
      text = protocol.format_feedback(reply, special_tokens=tok.special_tokens)
      out.append(feedback_ids(tok, text, reply.kind, max_tokens))
  return out


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--groups", type=int, default=12)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  model = load_model("smollm2-135m")
  tok = model.tokenizer
  replies = feedback_lengths(tok, 64)
  lengths = [len(r) for r in replies]
  print(f"feedback ids: {len(lengths)} replies, median {statistics.median(lengths)}, "
        f"max {max(lengths)}, <= 32: {np.mean(np.asarray(lengths) <= 32):.2f}", flush=True)
  params, spec, _, state = prefilled(model, np.random.RandomState(0))   # 16 rows at position 150, as chunk_windows
  forms = {"one 64-wide chunk": 64, "pieces of 32": 32}
  results = {}
  for n in (1, 2, 4, 8, 16):
    groups = []
    for g in range(args.groups):
      ids = [replies[(g * n + j) % len(replies)] for j in range(n)]
      lens = np.asarray([len(i) for i in ids], np.int32)
      groups.append((ids, lens))

    def run(width, ids, lens, n=n):
      pieces = -(-int(lens.max()) // width)
      chunk = np.zeros((n, width * pieces), np.int32)
      for j, i in enumerate(ids):
        chunk[j, :len(i)] = i
      rows = jax.block_until_ready(engine.take_rows(state, jnp.arange(n, dtype=jnp.int32),
                                                    spec=spec))
      t = time.perf_counter()
      jax.block_until_ready(engine.append_pieces(params, rows, chunk, lens, spec=spec,
                                                 width=width).length)
      return time.perf_counter() - t

    for width in forms.values():   # compile both programs (not timed)
      run(width, *groups[0])
    times = {name: [] for name in forms}
    for _ in range(args.reps):
      for name, width in forms.items():
        times[name].append(sum(run(width, ids, lens) for ids, lens in groups))
    r = {name: {"seconds": t, "median_s": statistics.median(t)} for name, t in times.items()}
    r["pieces_32"] = sum(-(-int(lens.max()) // 32) for _, lens in groups)
    ratio = r["one 64-wide chunk"]["median_s"] / r["pieces of 32"]["median_s"]
    r["ratio_one_over_pieces"] = ratio
    results[n] = r
    print(f"{n:2d} rows x {args.groups} groups: one chunk {r['one 64-wide chunk']['median_s']:.2f} s, "
          f"pieces {r['pieces of 32']['median_s']:.2f} s ({r['pieces_32']} pieces of 32 for "
          f"{args.groups} appends), one/pieces {ratio:.2f}x", flush=True)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"), "reps": args.reps, "groups": args.groups,
                 "load_average": os.getloadavg(), "feedback_lengths": lengths,
                 "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
