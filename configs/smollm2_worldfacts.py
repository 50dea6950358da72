"""The embedded default: SmolLM2-135M learns to ask a KnowledgeHelper about world facts (CPU).

What it is for: the README's main job (`make run`) on a 2-core CPU with no network: a
short supervised cold start, then GRPO with a KL penalty, within about 30 minutes
including the evaluation that `seekjax.main` runs after training.
What it needs: nothing but the package registry (the SLM is fetched with pip).
CPU choices, said out loud (configs/_base.py's values, plus the changes below): only the
top 2 layers (+ final norm) train; groups of 4; short episodes (a message budget of 2);
8 RL steps, so expect small effects.

Changes from the base:
- a short system prompt: every rollout, reference pass and update runs over the prompt,
  so a short one makes each step cheaper;
- a longer cold start at a higher lr (60 steps at 5e-4): with the base values the
  cold-started policy often wrote its think text into the answer, outside the protocol.
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
  c.rl.steps = 8
  if arg == "tiny":
    c.rl.steps = 2
  return c
