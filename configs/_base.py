"""The base config: every key a run config may set, with the embedded default's values.

Config files are built from `base_config()` (directly, or through another config file
via `load`) and only change its values. `configlib.load_config` checks each loaded
config against this base, so a key that a config file adds (a typo such as
`c.rl.klbeta = 0.5`) is refused in one line that names the key and the valid keys,
instead of being added silently and never read. A new setting belongs here first.
"""
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from seekjax import configlib

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name: str, arg: str = ""):
  """get_config(arg) of configs/<name>.py."""
  spec = importlib.util.spec_from_file_location(f"seekjax_cfg_{name}", os.path.join(HERE, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def base_config() -> ml_collections.ConfigDict:
  """The schema and defaults (= configs/smollm2_worldfacts.py, the embedded CPU default)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      path="smollm2-135m",        # embedded name, HF dir or .gguf
      dtype="float32",
      mesh_shape=(1, -1, 1),      # (data, fsdp, tensor)
      trainable="top_n",          # full | top_n | lora
      top_n=2,
      lora_rank=8,
      lora_alpha=16.0,
      lora_targets=("q", "v"),
      remat=False,
  ))

  c.task = ml_collections.ConfigDict(dict(
      name="world_facts_mix",     # world facts, public + private variants
      path="",                    # for file formats (hotpotqa, popqa, ...)
      private_fraction=0.5,
      eval_fraction=0.15,         # held-out split by entity
      max_train=400,
      max_eval=96,
  ))

  c.helper = ml_collections.ConfigDict(dict(
      kind="knowledge",           # knowledge | openai | local_lm
      # knowledge helper
      coverage=1.0,
      noise=0.0,
      top_k=2,                    # (also local_lm: facts retrieved into its prompt)
      style="terse",
      # openai helper (OpenAIHelper's own arguments)
      base_url="http://127.0.0.1:8000/v1",
      model="",                   # openai: the served model; local_lm: a model path ("" = the SLM)
      api_key_env="OPENAI_API_KEY",  # the NAME of the env var; never the key itself
      timeout=30.0,               # seconds per call (the pool's limit; openai: per request too)
      max_retries=3,
      # the rollout's helper pool (seekjax.rollout.pool)
      concurrency=32,             # calls in flight (openai: its connection limit too)
      on_outage="feedback_error",  # wait | feedback_error
  ))

  c.rollout = ml_collections.ConfigDict(dict(
      max_turns=2,
      max_new_tokens=64,
      max_message_tokens=40,
      max_feedback_tokens=64,
      temperature=1.0,
      top_k=0,
      top_p=1.0,
      max_steps_per_call=32,
      system_prompt=config_dict.placeholder(str),   # None: the protocol's default prompt
  ))

  c.reward = ml_collections.ConfigDict(dict(
      score="em",                 # em | f1 | task
      lambda_message=0.1,
      lambda_helper_tokens=0.0,
      lambda_leak=0.5,
      format_penalty=0.1,
      judge="rule",               # rule | llm
      helper_error_policy="zero_advantage",  # score | zero_advantage
  ))

  c.rl = ml_collections.ConfigDict(dict(
      steps=24,
      questions_per_step=4,
      group_size=4,
      advantage="grpo",           # grpo | drgrpo | rloo
      whiten=False,
      num_epochs=1,
      mini_batches=1,
      micro_batches=4,
      epsilon=0.2,
      epsilon_high=0.28,
      aggregation="token-mean",   # token-mean | seq-mean-token-mean | seq-mean-token-sum
      kl_method="k3",             # k1 | k2 | k3
      kl_beta=0.02,
      kl_in="loss",               # loss | reward
  ))

  c.sft = ml_collections.ConfigDict(dict(
      steps=40,
      batch_size=8,
      lr=3e-4,
      num_demos=96,
      need_fraction=0.2,
      knowledge=0.0,              # share of the world's named facts taught to the SLM before
                                  # the demos (scaling study's SLM strength; rl/knowledge.py)
      knowledge_steps=150,        # fact-only steps first (then one per demo step)
      knowledge_batch=64,
      decompose=False,            # two-hop demos ask one fact at a time (bridge, then fact);
                                  # on the 135M default it lowered EM (README, fix 3)
  ))

  c.optim = ml_collections.ConfigDict(dict(
      lr=2e-5,
      warmup_steps=2,
      weight_decay=0.0,
      clip_norm=1.0,
      b1=0.9,
      b2=0.99,
  ))

  c.train = ml_collections.ConfigDict(dict(
      checkpoint_every=8,
      keep_checkpoints=2,
      log_every=1,
      async_checkpoint=True,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      redact_private=True,        # transcripts written by evaluate hide each example's
                                  # private facts and spans behind "[REDACTED]"
  ))

  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False,           # or set SEEKJAX_DISTRIBUTED=1 / the usual JAX env vars
      coordinator_address="",
      num_processes=0,
      process_id=-1,
  ))
  return configlib.declare_base(c)
