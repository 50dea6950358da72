"""Qwen3-1.7B SLM on HotpotQA with an OpenAI-compatible helper (vLLM/SGLang/hosted), GPU or TPU.

What it is for: the paper-scale setting. What it needs:
  - a local HF checkpoint dir of Qwen3-1.7B (config.json + safetensors + tokenizer.json):
    --config.model.path=/path/to/Qwen3-1.7B
  - HotpotQA in its published JSON/JSONL layout: --config.task.path=/path/hotpot_train.json
  - an OpenAI-compatible endpoint for the helper LLM, e.g. vLLM serving Qwen3-32B:
    --config.helper.base_url=http://HOST:8000/v1 --config.helper.model=Qwen/Qwen3-32B,
    with the key (if any) in the env var named by helper.api_key_env.
Full-parameter training, FSDP over all devices, bf16.
"""
from configs.smollm2_worldfacts import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.model.path = "/path/to/Qwen3-1.7B"
  c.model.dtype = "bfloat16"
  c.model.trainable = "full"
  c.model.mesh_shape = (1, -1, 1)
  c.model.remat = True
  c.task.name = "hotpotqa"
  c.task.path = "/path/to/hotpot_train_v1.1.json"
  c.task.max_train = 100000
  c.task.max_eval = 1000
  c.helper.kind = "openai"
  c.helper.base_url = "http://127.0.0.1:8000/v1"
  c.helper.model = "Qwen/Qwen3-32B"
  c.helper.concurrency = 64
  c.helper.timeout = 120.0
  c.helper.max_tokens = 512
  # Qwen3 served by vLLM: short, direct replies (no thinking block in the feedback)
  c.helper.extra_body_json = '{"chat_template_kwargs": {"enable_thinking": false}}'
  c.reward.judge = "rule"
  c.rollout.max_turns = 3
  c.rollout.max_new_tokens = 512
  c.rollout.max_message_tokens = 128
  c.rollout.max_feedback_tokens = 384
  c.rollout.max_steps_per_call = 128
  c.rl.steps = 500
  c.rl.questions_per_step = 16   # 128 episodes a step fit one 80 GiB GPU (python -m seekjax.plan)
  c.rl.group_size = 8
  c.rl.mini_batches = 4
  c.rl.micro_batches = 8
  c.sft.steps = 200
  c.sft.batch_size = 32
  c.sft.lr = 1e-5
  c.rollout.system_prompt = None  # the protocol's full prompt (the CPU default shortens it)
  c.optim.lr = 1e-6
  c.optim.warmup_steps = 10
  c.train.checkpoint_every = 25
  c.train.keep_checkpoints = 3
  return c
