"""Scaling study: SLM strength x helper strength -> EM and messages per episode.

On CPU, SLM strength is how many top layers train (top_n) and helper strength is the
KnowledgeHelper's coverage of the fact base. On accelerators pass real grids instead,
e.g. `model.path=...` per SLM and `helper.base_url=...` per helper, via --slms/--helpers.

  python experiments/scaling.py --out runs/scaling
  python experiments/scaling.py --out runs/scaling --tiny      # 2-cell smoke grid
"""
from __future__ import annotations

import os

from grid import line_plot, parse_args, run_cell, write_table


def main():
  args = parse_args(__doc__.splitlines()[0], "smollm2_worldfacts.py")
  if args.tiny:
    slms, helpers = [2], [0.5, 1.0]
    base = ["model.path=tiny-random", "model.trainable=top_n", "rl.steps=1", "sft.steps=1",
            "task.max_eval=4", "task.max_train=16", "rollout.max_new_tokens=16",
            "rl.questions_per_step=2", "rl.group_size=2", "rl.micro_batches=2",
            "sft.num_demos=4", "sft.batch_size=2"]
  else:
    slms, helpers = [1, 2, 4], [0.5, 0.8, 1.0]
    base = []
  rows = []
  for top_n in slms:
    for coverage in helpers:
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
