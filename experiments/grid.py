"""Shared runner for the studies: a grid of config overrides -> train + evaluate per cell.

Each cell gets its own workdir under OUT/cells/<name>; a finished cell leaves
cell.json and is skipped on rerun (a partly trained cell resumes from its checkpoint),
so a killed grid continues where it stopped. The study writes OUT/results.json,
OUT/results.md and PNG plots.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from seekjax import configlib  # noqa: E402


def parse_args(description: str, default_config: str, add_arguments=None):
  """The studies' common flags; `add_arguments(parser)` adds a script's own."""
  ap = argparse.ArgumentParser(description=description)
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", default_config))
  ap.add_argument("--out", required=True)
  ap.add_argument("--tiny", action="store_true", help="a 2-cell smoke grid (tests)")
  ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides for every cell")
  if add_arguments is not None:
    add_arguments(ap)
  return ap.parse_args()


def number_list(kind=float):
  """An argparse type: '0.5,1' -> [0.5, 1.0] (kind=float) or '1,2' -> [1, 2] (kind=int)."""
  def parse(text: str) -> list:
    try:
      return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(
          f"expected comma-separated {kind.__name__}s, got {text!r}") from None
  return parse


def run_cell(name: str, config: str, overrides: list[str], out: str, methods=("dynamic",),
             eval_helper_overrides: list[str] | None = None, train_dir: str | None = None) -> dict:
  """Train + evaluate one cell (resumable). Returns {method: overall metrics}.

  train_dir: share one trained policy between cells (its checkpoint resumes/finishes
  once; each cell then only evaluates, e.g. with another helper). Each cell's evaluation
  (results, table, transcripts) goes to OUT/cells/<name>/eval.
  """
  from seekjax import evaluate, train  # pylint: disable=import-outside-toplevel
  cell_dir = os.path.join(out, "cells", name)
  done = os.path.join(cell_dir, "cell.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  cfg = configlib.load_config(config, overrides)
  print(f"[grid] cell {name}: {' '.join(overrides)}", file=sys.stderr, flush=True)
  workdir = train_dir or cell_dir
  train.train(cfg, workdir, overwrite=False)
  if eval_helper_overrides:
    cfg = configlib.apply_overrides(cfg, eval_helper_overrides)
  res = evaluate.evaluate(cfg, workdir, methods=tuple(methods), bootstrap=200,
                          out_dir=os.path.join(cell_dir, "eval"))
  os.makedirs(cell_dir, exist_ok=True)
  summary = {m: v["overall"] for m, v in res["results"]["methods"].items()}
  with open(done + ".tmp", "w") as f:
    json.dump(summary, f)
  os.replace(done + ".tmp", done)
  return summary


def write_table(out: str, rows: list[dict], columns: list[str], title: str) -> str:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])
                                  for c in columns) + " |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  print(text)
  return text


def line_plot(path: str, rows: list[dict], x: str, y: str, series: str, title: str) -> str:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for s in sorted({r[series] for r in rows}):
    pts = sorted((r[x], r[y]) for r in rows if r[series] == s)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{series}={s}")
  ax.set_xlabel(x)
  ax.set_ylabel(y)
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
