"""Scaling study: SLM strength x helper strength -> EM and messages per episode.

On CPU, SLM strength is how many top layers train (top_n) and helper strength is the
KnowledgeHelper's coverage of the fact base. On accelerators pass real grids instead,
e.g. `model.path=...` per SLM and `helper.base_url=...` per helper, as extra overrides.

  python experiments/scaling.py --out runs/scaling                       # 3 x 3 grid
  python experiments/scaling.py --out runs/scaling --slms 1,2,4 --helpers 0.5,1
  python experiments/scaling.py --out runs/scaling --tiny      # 2-cell smoke grid

--cells restricts the grid to listed (top_n:coverage) pairs, e.g. a cross through the
default instead of the full product: --cells 1:1,2:1,4:1,2:0.5.
"""
from __future__ import annotations

import argparse
import os

from grid import line_plot, number_list, parse_args, run_cell, write_table


def _cells(text: str) -> list[tuple[int, float]]:
  """'1:1,2:0.5' -> [(1, 1.0), (2, 0.5)]."""
  try:
    return [(int(top_n), float(coverage))
            for top_n, coverage in (item.split(":") for item in text.split(","))]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected TOP_N:COVERAGE pairs, got {text!r}") from None


def _add_arguments(ap):
  ap.add_argument("--slms", type=number_list(int), help="trainable top layers per SLM, e.g. 1,2,4")
  ap.add_argument("--helpers", type=number_list(float), help="helper coverages, e.g. 0.5,0.8,1")
  ap.add_argument("--cells", type=_cells, help="only these TOP_N:COVERAGE cells")


def main():
  args = parse_args(__doc__.splitlines()[0], "smollm2_worldfacts.py", _add_arguments)
  if args.tiny:
    slms, helpers = [2], [0.5, 1.0]
    base = ["model.path=tiny-random", "model.trainable=top_n", "rl.steps=1", "sft.steps=1",
            "task.max_eval=4", "task.max_train=16", "rollout.max_new_tokens=16",
            "rl.questions_per_step=2", "rl.group_size=2", "rl.micro_batches=2",
            "sft.num_demos=4", "sft.batch_size=2"]
  else:
    slms = args.slms or [1, 2, 4]
    helpers = args.helpers or [0.5, 0.8, 1.0]
    base = []
  cells = args.cells or [(top_n, coverage) for top_n in slms for coverage in helpers]
  rows = []
  for top_n, coverage in cells:
    name = f"slm{top_n}_helper{coverage}"
    over = base + list(args.overrides) + [f"model.top_n={top_n}", f"helper.coverage={coverage}"]
    res = run_cell(name, args.config, over, args.out)["dynamic"]
    rows.append(dict(slm_trainable_layers=top_n, helper_coverage=coverage, em=res["em"],
                     messages_per_episode=res["messages_per_episode"],
                     leak_rate=res["leak_rate"] or 0.0))
  write_table(args.out, rows, ["slm_trainable_layers", "helper_coverage", "em",
                               "messages_per_episode", "leak_rate"], "Scaling: SLM x helper")
  for y in ("messages_per_episode", "em"):
    line_plot(os.path.join(args.out, f"scaling_{y}.png"), rows, "slm_trainable_layers", y,
              "helper_coverage", f"{y} vs SLM strength")


if __name__ == "__main__":
  main()
