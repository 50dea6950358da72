"""The main job on the embedded default: `python -m seekjax.main --workdir=DIR`.

Until the full pipeline lands (cold start, RL, evaluation), it loads SmolLM2-135M,
answers a few questions greedily and writes them to DIR/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import seekjax as sj

QUESTIONS = ["What is the capital of France?", "What is the capital of Eritrea?",
             "What currency is used in Japan?", "What is 17 + 25?"]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--workdir", default="runs/default")
  args = ap.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  t0 = time.perf_counter()
  model = sj.load_model("smollm2-135m", verbose=True)
  answers = sj.generate(model, QUESTIONS, max_new_tokens=32)
  out = os.path.join(args.workdir, "results.json")
  with open(out, "w") as f:
    json.dump({"model": model.name, "seconds": time.perf_counter() - t0,
               "answers": dict(zip(QUESTIONS, answers))}, f, indent=2)
  for q, a in zip(QUESTIONS, answers):
    print(f"Q: {q}\nA: {a}\n")
  print(f"results written to {os.path.abspath(out)}")


if __name__ == "__main__":
  main()
