"""The learning curve: the policy, greedy, on a fixed validation set from the train split.

Every `train.eval_every` RL steps (and once before the first), the trainer has the
current policy answer the validation questions (`task.val_size` of them, set aside
from the train split by `setup.split_validation`, never trained on) as `evaluate`'s
`dynamic` does: greedy, one episode per question, scored by the same scorer and rule
leak judge. Its `val/*` metrics go on that step's metrics.jsonl row and to TensorBoard,
and `val_curve.png` in the workdir is redrawn from metrics.jsonl. The held-out split
is left for the end (`seekjax.evaluate`).

With `train.select_checkpoint="best_val"` the trainer also keeps the state of the best
point of the curve (`selection_key`: highest EM, then fewest messages per episode; a
later point must be strictly better) in WORKDIR/best_checkpoint, and `evaluate` answers
the held-out split with it: early stopping chosen on validation, never on held-out.
"""
from __future__ import annotations

import io
import time

from seekjax.eval import baselines, metrics
from seekjax.helpers import RuleLeakJudge
from seekjax.rl import cycle
from seekjax.run import metrics as metrics_lib
from seekjax.run import workdir as workdir_lib

# The curve's metrics: EM, messages per episode, leak rate (over the private questions;
# left out when there is none), and answer-format failures (no <answer>).
KEYS = ("em", "messages_per_episode", "leak_rate", "format_failure_rate")
PREFIX = "val/"
PLOT = "val_curve.png"


def validation_metrics(records: list[dict]) -> dict:
  """{"val/<key>": value} of `metrics.score_run` records; None values are left out."""
  summary = metrics.group_stats(records)
  out = {PREFIX + k: float(summary[k]) for k in KEYS if summary[k] is not None}
  out[PREFIX + "n"] = float(len(records))
  return out


def evaluate_policy(ctx: cycle.RunContext, trainable, examples: list[dict],
                    batch_size: int = 0) -> dict:
  """The `val/*` metrics (and val/seconds) of the policy `trainable` answering
  `examples` greedily.

  batch_size: most questions per rollout (0: all at once); the trainer passes its own
  rollout's row count, which is known to fit.
  """
  t0 = time.perf_counter()
  policy = cycle.rollout_policy(ctx, trainable)
  ectx = baselines.EvalContext(
      base_model=policy, policy_model=policy, examples=examples, helper=ctx.helper,
      rollout_cfg=baselines.with_settings(ctx.rollout_cfg, temperature=0.0, group_size=1),
      rng=0, batch_size=batch_size)
  run = baselines.dynamic(ectx)
  out = validation_metrics(metrics.score_run(run, examples, RuleLeakJudge()))
  out[PREFIX + "seconds"] = time.perf_counter() - t0
  return out


# What the validation points depend on besides the weights: the validation questions
# (task, seed), the helper, the model and its rollout (greedy, so not the sampling keys),
# and the rows a rollout takes. A fork whose source agrees on these reads the source's
# point at the forked step instead of answering the same questions again.
_SAME_FOR_POINTS = ("seed", "model.", "task.", "helper.", "rollout.")
_NOT_FOR_POINTS = ("rollout.temperature", "rollout.top_k", "rollout.top_p")


def _point_settings(config: dict) -> dict:
  flat = workdir_lib.flat({k: v for k, v in config.items() if k != workdir_lib.RUN_KEY})
  out = {k: v for k, v in flat.items()
         if k.startswith(_SAME_FOR_POINTS) and k not in _NOT_FOR_POINTS}
  rl = config.get("rl", {})
  out["rows"] = rl.get("questions_per_step", 0) * rl.get("group_size", 0)
  return out


def forked_point(source, config: dict, step: int) -> dict | None:
  """The `val/*` metrics of `source`'s validation point at `step` when `source` (the
  workdir a run was forked from) measured it with the same validation settings as
  `config` (a resolved config dict), else None. val/seconds becomes 0: nothing ran."""
  saved = workdir_lib.read_config(source)
  if saved is None or _point_settings(saved) != _point_settings(config):
    return None
  row = next((r for r in curve_rows(source) if r["step"] == step), None)
  if row is None:
    return None
  return dict({k: v for k, v in row.items() if k.startswith(PREFIX)}, **{PREFIX + "seconds": 0.0})


def selection_key(row: dict) -> tuple:
  """What `best_val` maximises over validation rows: EM, then fewer messages/episode."""
  return (row[PREFIX + "em"], -row.get(PREFIX + "messages_per_episode", 0.0))


def best_row(rows: list[dict]) -> dict | None:
  """The earliest of the validation rows with the highest `selection_key`."""
  best = None
  for row in sorted(rows, key=lambda r: r["step"]):
    if best is None or selection_key(row) > selection_key(best):
      best = row
  return best


def curve_rows(workdir) -> list[dict]:
  """The metrics.jsonl rows of `workdir` that hold validation metrics, by step."""
  path = workdir_lib.as_path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows = [r for r in metrics_lib.jsonl_rows(path.read_text())
          if isinstance(r.get(PREFIX + "em"), (int, float))]
  return sorted(rows, key=lambda r: r["step"])


def plot_curve(workdir) -> str | None:
  """Draw `val_curve.png` in `workdir` from its metrics.jsonl; its path (None: no rows)."""
  rows = curve_rows(workdir)
  if not rows:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  steps = [r["step"] for r in rows]
  panels = (("EM", ("em",)), ("messages / episode", ("messages_per_episode",)),
            ("rate", ("leak_rate", "format_failure_rate")))
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
  for ax, (label, keys) in zip(axes, panels):
    for key in keys:
      points = [(s, r.get(PREFIX + key)) for s, r in zip(steps, rows)]
      points = [(s, v) for s, v in points if isinstance(v, (int, float))]
      if points:
        ax.plot(*zip(*points), marker="o", label=key.replace("_", " "))
    if label != "messages / episode":
      ax.set_ylim(-0.02, 1.02)   # EM and rates live in [0, 1]
    ax.set_xlabel("RL step")
    ax.set_ylabel(label)
    if len(keys) > 1:
      ax.legend(fontsize="small")
  n = int(rows[-1].get(PREFIX + "n", 0))
  fig.suptitle(f"validation ({n} questions from the train split), greedy")
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=100)
  plt.close(fig)
  path = workdir_lib.as_path(workdir) / PLOT
  path.write_bytes(png.getvalue())
  return str(path)
