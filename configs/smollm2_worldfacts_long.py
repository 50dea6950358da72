"""The embedded default, longer: more cold start, more RL steps, larger groups (CPU, hours).

What it is for: a more converged CPU result than the 30-minute default. What it needs:
nothing beyond the default.
"""
from configs.smollm2_worldfacts import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.model.top_n = 4
  c.task.max_train = 2000
  c.task.max_eval = 300
  c.sft.steps = 150
  c.sft.num_demos = 600
  c.rl.steps = 200
  c.rl.questions_per_step = 8
  c.rl.group_size = 8
  c.rl.micro_batches = 8
  c.train.checkpoint_every = 20
  return c
