"""The embedded default with a longer RL phase: the README's results run (CPU, 86 min).

What it is for: an RL phase long enough to move the policy on the 2-core CPU box (160
steps), with its learning curve on a validation set carved from the train split (144
questions, greedy, every 20 steps) and the held-out split evaluated once at the end,
beside the hand-written paraphrase check. What it needs: nothing beyond the default.
160 steps, not 80: the 80-step run's curve was still rising when its cosine schedule ran
out, and a 160-step run beat its best validation point (0.410 at step 60 against 0.389),
under a rule written before it ran (docs/results/history.md, seventh session). Measured:
86 min on the 2-core AMD EPYC AVX2 box with empty caches (2026-12-03; docs/results/long/).

The cold start and the RL settings are the default's (set here again, so that this run
stays what it was if the default moves); the runs differ in length and in validation.
The cold start's answer turns quote the reply's sentence that holds the answer
(sft.restate_reply) instead of one fixed sentence. With it the cold
start's validation EM is 0.333 against 0.271, and 20 RL steps of this config's schedule
took it to 0.354 (without it: 0.271 -> 0.250; docs/results/levers.md, third sweep). The
held-out split is answered by the best point of the validation curve
(train.select_checkpoint="best_val"), not by the last step; 48 validation questions were
too few to choose (points one or two questions apart), hence 144, carved from a train
split of 544 so that 400 remain to train on. The RL settings come from the lever sweep
(experiments/levers.py: 8-step forks of that cold start, docs/results/levers.md). No lever
moved validation EM within 8 steps, so the choice rests on the training diagnostics:
- a message cost that counts only in groups with a correct episode (reward.cost_gate):
  most groups hold none, and there the cost alone used to teach the policy to stop asking;
- groups of 8 over 2 questions a step (16 episodes, as the default): fewer groups in which
  every episode gets the same reward;
- lr 1e-4: at the default 2e-5 the KL to the reference stays near 0;
- sampling temperature 0.7: more sampled episodes are correct (0.18 against 0.12 at 1.0),
  so more groups carry a signal.
The held-out split is all 444 questions (task.max_eval), so that the paired intervals
against cold_start and static_interaction are narrower than at the default's 96.
"""
from configs.smollm2_worldfacts import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.task.val_size = 144
  c.task.max_train = 544
  c.train.eval_every = 20
  c.reward.cost_gate = "any_correct"
  c.rl.group_size = 8
  c.rl.questions_per_step = 2
  c.optim.lr = 1e-4
  c.rollout.temperature = 0.7
  c.rl.steps = 160
  c.sft.restate_reply = True
  c.train.select_checkpoint = "best_val"
  c.task.max_eval = 444
  c.train.checkpoint_every = 10
  c.eval.paraphrase = True
  if arg == "tiny":
    c.rl.steps = 2
    c.train.eval_every = 1
  return c
