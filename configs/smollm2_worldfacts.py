"""The embedded default: SmolLM2-135M learns to ask a KnowledgeHelper about world facts (CPU).

What it is for: the README's main job (`make run`) on a 2-core CPU with no network: a
short supervised cold start, then GRPO with a KL penalty, within about 30 minutes
including the evaluation that `seekjax.main` runs after training.
What it needs: nothing but the package registry (the SLM is fetched with pip).
CPU choices, said out loud (configs/_base.py's values, plus the changes below): only the
top 2 layers (+ final norm) train; short episodes (a message budget of 2); 60 RL steps of
16 episodes, so expect small effects.

Changes from the base:
- a short system prompt: every rollout, reference pass and update runs over the prompt,
  so a short one makes each step cheaper;
- a longer cold start at a higher lr (60 steps at 5e-4): with the base values the
  cold-started policy often wrote its think text into the answer, outside the protocol.
- the cold start's answer turns quote the reply's sentence that holds the answer
  (sft.restate_reply), and the RL settings of the long config
  (configs/smollm2_worldfacts_long.py): a message cost that counts only in groups with a
  correct episode, groups of 8 over 2 questions, lr 1e-4, sampling temperature 0.7.
  Chosen on validation (docs/results/levers.md, third sweep: validation EM 0.333 -> 0.354
  after 20 steps of an 80-step lr schedule); with the base's RL settings and cold start,
  8 steps left the cold start where it was.
- 60 RL steps, not 20: on the long config's validation curves (same cold start and RL
  settings) step 20 sat at or below step 0 (0.354 and 0.333 against 0.347), and step 60
  was above it in both runs (0.389 with an 80-step schedule, 0.410 with a 160-step one);
  20 steps left held-out EM below the cold start's (-0.010 on 96 questions); 60 steps
  gave +0.094 [+0.021, +0.167] (docs/results/history.md, eighth session). Measured: 39 min
  on a slow stretch of the 2-core box with tests sharing it for 13 min; about 23 min at
  the box's faster step rate.
"""
from configs import _base


CPU_SYSTEM_PROMPT = (
    "Answer the question. Think in <think></think>, then write <answer>short answer</answer>, "
    "or ask a stronger helper with <message>your question</message>. The helper cannot see "
    "the question; never share the user's personal details. Its reply comes in "
    "<feedback></feedback>.")


def get_config(arg: str = ""):
  c = _base.get_config()
  c.rollout.system_prompt = CPU_SYSTEM_PROMPT
  c.sft.steps = 60
  c.sft.lr = 5e-4
  c.rl.steps = 60
  c.sft.restate_reply = True
  c.reward.cost_gate = "any_correct"
  c.rl.group_size = 8
  c.rl.questions_per_step = 2
  c.optim.lr = 1e-4
  c.rollout.temperature = 0.7
  if arg == "tiny":
    c.rl.steps = 2
  return c
