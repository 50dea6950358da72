"""Scaling study: SLM strength x helper strength -> EM and messages per episode.

On CPU, helper strength is the KnowledgeHelper's coverage of the fact base, and SLM
strength is one of (--slm_axis):
  layers     how many top layers train (model.top_n): capacity, the same knowledge;
  knowledge  the share of the world's named facts taught to the SLM before the cold start
             (sft.knowledge, seekjax/coldstart/knowledge.py): what a bigger SLM mostly adds. Cells
             on this axis also evaluate slm_cot, to show how much the SLM answers alone.
On accelerators pass real grids instead, e.g. `model.path=...` per SLM and
`helper.base_url=...` per helper, as extra overrides.

  python experiments/scaling.py --out runs/scaling                       # 3 x 3 grid
  python experiments/scaling.py --out runs/scaling --slms 1,2,4 --helpers 0.5,1
  python experiments/scaling.py --out runs/knowledge --slm_axis knowledge --slms 0,0.5,1 --helpers 1
  python experiments/scaling.py --out runs/scaling --tiny      # 2-cell smoke grid

--cells restricts the grid to listed (SLM:COVERAGE) pairs, e.g. a cross through the
default instead of the full product: --cells 1:1,2:1,4:1,2:0.5.
"""
from __future__ import annotations

import argparse
import os

from grid import line_plot, number_list, parse_args, run_cell, write_table

# axis -> (config key, value type, column name, cell-name prefix, default values)
AXES = {"layers": ("model.top_n", int, "slm_trainable_layers", "slm", [1, 2, 4]),
        "knowledge": ("sft.knowledge", float, "slm_knowledge", "know", [0.0, 0.5, 1.0])}


def _cells(text: str) -> list[tuple[float, float]]:
  """'1:1,2:0.5' -> [(1.0, 1.0), (2.0, 0.5)] (the SLM value is cast per axis)."""
  try:
    return [(float(slm), float(coverage))
            for slm, coverage in (item.split(":") for item in text.split(","))]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected SLM:COVERAGE pairs, got {text!r}") from None


def _add_arguments(ap):
  ap.add_argument("--slm_axis", choices=sorted(AXES), default="layers",
                  help="what SLM strength is: trainable layers or taught knowledge")
  ap.add_argument("--slms", type=number_list(float),
                  help="SLM strengths, e.g. 1,2,4 (layers) or 0,0.5,1 (knowledge)")
  ap.add_argument("--helpers", type=number_list(float), help="helper coverages, e.g. 0.5,0.8,1")
  ap.add_argument("--cells", type=_cells, help="only these SLM:COVERAGE cells")


def main():
  args = parse_args(__doc__.splitlines()[0], "smollm2_worldfacts.py", _add_arguments)
  key, kind, column, prefix, default_slms = AXES[args.slm_axis]
  if args.tiny:
    slms, helpers = default_slms[1:2], [0.5, 1.0]
    base = ["model.path=tiny-random", "model.trainable=top_n", "rl.steps=1", "sft.steps=1",
            "task.max_eval=4", "task.max_train=16", "rollout.max_new_tokens=16",
            "rl.questions_per_step=2", "rl.group_size=2", "rl.micro_batches=2",
            "sft.num_demos=4", "sft.batch_size=2", "sft.knowledge_steps=2",
            "sft.knowledge_batch=8"]
  else:
    slms = args.slms or default_slms
    helpers = args.helpers or [0.5, 0.8, 1.0]
    base = []
  cells = args.cells or [(slm, coverage) for slm in slms for coverage in helpers]
  methods = ("dynamic", "slm_cot") if args.slm_axis == "knowledge" else ("dynamic",)
  rows = []
  for slm, coverage in cells:
    if kind is int and slm != int(slm):
      raise SystemExit(f"scaling.py: --slm_axis layers takes whole layer counts, got {slm}")
    slm = kind(slm)
    name = f"{prefix}{slm}_helper{coverage}"
    over = base + list(args.overrides) + [f"{key}={slm}", f"helper.coverage={coverage}"]
    res = run_cell(name, args.config, over, args.out, methods=methods)
    dyn = res["dynamic"]
    row = {column: slm, "helper_coverage": coverage, "em": dyn["em"],
           "messages_per_episode": dyn["messages_per_episode"],
           "leak_rate": dyn["leak_rate"] or 0.0}
    if "slm_cot" in res:
      row["slm_cot_em"] = res["slm_cot"]["em"]
    rows.append(row)
  columns = [column, "helper_coverage", "em", "messages_per_episode", "leak_rate"]
  columns += ["slm_cot_em"] if "slm_cot" in methods else []
  write_table(args.out, rows, columns, "Scaling: SLM x helper")
  for y in ("messages_per_episode", "em"):
    line_plot(os.path.join(args.out, f"scaling_{y}.png"), rows, column, y,
              "helper_coverage", f"{y} vs SLM strength")


if __name__ == "__main__":
  main()
