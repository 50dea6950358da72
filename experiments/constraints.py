"""Constraint study: sweep lambda_message and lambda_leak; EM-messages and EM-leak frontiers.

The baselines (slm_cot, static_interaction) are evaluated once and drawn as reference points.

  python experiments/constraints.py --out runs/constraints [--tiny]
  python experiments/constraints.py --out runs/c --cells 0.1:0.5,0.1:0 optim.lr=1e-4

--cells restricts the 3 x 3 grid to listed LAMBDA_MESSAGE:LAMBDA_LEAK pairs (the first
listed cell also evaluates the baselines); trailing KEY=VALUE overrides apply to every cell.
"""
from __future__ import annotations

import argparse
import os

from grid import parse_args, run_cell, write_table


def _cells(text: str) -> list[tuple[float, float]]:
  """'0.1:0.5,0:0' -> [(0.1, 0.5), (0.0, 0.0)]."""
  try:
    return [(float(lm), float(ll)) for lm, ll in (item.split(":") for item in text.split(","))]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected LAMBDA_MESSAGE:LAMBDA_LEAK pairs, got {text!r}") from None


def _add_arguments(ap):
  ap.add_argument("--cells", type=_cells, help="only these LAMBDA_MESSAGE:LAMBDA_LEAK cells")


def main():
  args = parse_args(__doc__.splitlines()[0], "smollm2_worldfacts.py", _add_arguments)
  if args.tiny:
    grid = [(0.0, 0.0), (0.5, 1.0)]
    base = ["model.path=tiny-random", "model.trainable=full", "rl.steps=1", "sft.steps=1",
            "task.max_eval=4", "task.max_train=16", "rollout.max_new_tokens=16",
            "rl.questions_per_step=2", "rl.group_size=2", "rl.micro_batches=2",
            "sft.num_demos=4", "sft.batch_size=2"]
  else:
    grid = [(lm, ll) for lm in (0.0, 0.1, 0.3) for ll in (0.0, 0.5, 1.0)]
    base = []
  grid = args.cells or grid
  rows = []
  for i, (lm, ll) in enumerate(grid):
    methods = ("dynamic", "slm_cot", "static_interaction") if i == 0 else ("dynamic",)
    res = run_cell(f"msg{lm}_leak{ll}", args.config, base + list(args.overrides) +
                   [f"reward.lambda_message={lm}", f"reward.lambda_leak={ll}"], args.out,
                   methods=methods)
    for method, o in res.items():
      rows.append(dict(method=method, lambda_message=lm, lambda_leak=ll, em=o["em"],
                       messages_per_episode=o["messages_per_episode"],
                       leak_rate=o["leak_rate"] or 0.0))
  write_table(args.out, rows, ["method", "lambda_message", "lambda_leak", "em",
                               "messages_per_episode", "leak_rate"], "Constraints sweep")
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  for x, fname in (("messages_per_episode", "frontier_messages.png"),
                   ("leak_rate", "frontier_leak.png")):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
      marker = "o" if r["method"] == "dynamic" else "s"
      label = (f"{r['method']} λm={r['lambda_message']} λl={r['lambda_leak']}"
               if r["method"] == "dynamic" else r["method"])
      ax.scatter(r[x], r["em"], marker=marker, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel("EM")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, fname), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
  main()
