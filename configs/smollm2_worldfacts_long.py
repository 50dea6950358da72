"""The embedded default with a longer RL phase: the README's results run (CPU, about 1.5 h).

What it is for: an RL phase long enough to move the policy on the 2-core CPU box, with its
learning curve on a validation set carved from the train split and the held-out split
evaluated once at the end. What it needs: nothing beyond the default.

The cold start is the default's, so the lever sweep (experiments/levers.py, forks of that
cold start) chose the RL settings on validation: a message cost that counts only in
groups with a correct episode, groups of 8 over 2 questions a step (16 episodes, as the
default), and lr 1e-4 (at the default 2e-5 the policy does not move in 8 steps).
"""
from configs.smollm2_worldfacts import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.task.val_size = 48
  c.train.eval_every = 10
  c.reward.cost_gate = "any_correct"
  c.rl.group_size = 8
  c.rl.questions_per_step = 2
  c.optim.lr = 1e-4
  c.rl.steps = 60
  c.train.checkpoint_every = 10
  c.eval.paraphrase = True
  if arg == "tiny":
    c.rl.steps = 2
    c.train.eval_every = 1
  return c
