"""Transfer study: train with one helper, evaluate with helpers not seen in training.

Unseen helpers: KnowledgeHelper in another style, at lower coverage, with noise, and
(full grid) the in-process LocalLMHelper. Reports the EM drop against the training helper.

  python experiments/transfer.py --out runs/transfer [--tiny]
  python experiments/transfer.py --out runs/transfer --policy runs/default   # reuse a run

--policy: an already trained workdir of the same config (e.g. `make run`'s); its last
checkpoint is evaluated with each helper instead of training a new policy in OUT/policy.
"""
from __future__ import annotations

import os

from grid import parse_args, run_cell, write_table


def main():
  args = parse_args(__doc__.splitlines()[0], "smollm2_worldfacts.py",
                    lambda ap: ap.add_argument("--policy", help="a trained workdir to reuse"))
  base = list(args.overrides)
  helpers = {"train_helper": [], "verbose_style": ["helper.style=verbose"],
             "coverage_0.6": ["helper.coverage=0.6"], "noisy_0.2": ["helper.noise=0.2"]}
  if args.tiny:
    base = ["model.path=tiny-random", "model.trainable=full", "rl.steps=1", "sft.steps=1",
            "task.max_eval=4", "task.max_train=16", "rollout.max_new_tokens=16",
            "rl.questions_per_step=2", "rl.group_size=2", "rl.micro_batches=2",
            "sft.num_demos=4", "sft.batch_size=2"] + base
    helpers = {k: helpers[k] for k in ("train_helper", "verbose_style")}
  else:
    helpers["local_lm"] = ["helper.kind=local_lm"]
  rows = []
  for name, eval_over in helpers.items():
    # One trained policy (cell "policy"); each helper evaluates it in its own cell dir.
    res = run_cell(f"eval_{name}", args.config, base, args.out, eval_helper_overrides=eval_over,
                   train_dir=args.policy or os.path.join(args.out, "policy"))
    o = res["dynamic"]
    rows.append(dict(helper=name, em=o["em"], messages_per_episode=o["messages_per_episode"]))
  ref = rows[0]["em"]
  for r in rows:
    r["em_drop"] = ref - r["em"]
  write_table(args.out, rows, ["helper", "em", "em_drop", "messages_per_episode"],
              "Transfer to unseen helpers")
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.bar([r["helper"] for r in rows], [r["em"] for r in rows])
  ax.set_ylabel("EM")
  ax.tick_params(axis="x", rotation=30)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "transfer_em.png"), dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
