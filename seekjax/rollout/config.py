"""Rollout limits and sampling settings, as an ml_collections ConfigDict.

One source of defaults: configs/_base.py (its `rollout` section and the helper pool's
keys of its `helper` section), so `sj.rollout_config()` and a run's rollout agree.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import _base
from seekjax.shapes import bucket

# Rollout keys read from a run config's helper section: {rollout key: helper key}.
POOL_KEYS = dict(helper_timeout="timeout", helper_concurrency="concurrency",
                 on_outage="on_outage", outage_failures="outage_failures",
                 outage_after="outage_after", max_outage_wait="max_outage_wait",
                 outage_probe_min="outage_probe_min", outage_probe_max="outage_probe_max")


def from_run_config(cfg, group_size: int = 1) -> ml_collections.ConfigDict:
  """The rollout settings of a run config: config.rollout plus the helper pool's keys of
  config.helper (see configs/_base.py for each); `group_size` samples per question."""
  d = dict(cfg.rollout.to_dict(), group_size=group_size, prompt_width=0, cache_length=0,
           **{k: cfg.helper[h] for k, h in POOL_KEYS.items()})
  for k, (default, _) in _base.SCHEMA["rollout"].items():
    if isinstance(default, _base.optional):   # keep the type of a None default
      d[k] = config_dict.placeholder(default.type) if d[k] is None else d[k]
  return ml_collections.ConfigDict(d)


def rollout_config(**overrides) -> ml_collections.ConfigDict:
  """Settings for `sj.rollout`: configs/_base.py's defaults (one episode per question),
  any field overridden by keyword (`rollout_config(max_turns=3, temperature=0.0)`)."""
  cfg = from_run_config(_base.get_config())
  for k, v in overrides.items():
    if k not in cfg:
      raise KeyError(f"unknown rollout config key {k!r}; valid keys: {sorted(cfg.keys())}")
    cfg[k] = v
  return cfg


def episode_budget(cfg) -> int:
  """Most tokens an episode holds after its prompt: rollout.max_episode_tokens, or what
  the turns allow: (max_turns + 1) SLM turns of max_new_tokens (a message each, then the
  answer) and max_turns feedback chunks of max_feedback_tokens (+ 8 for their tags)."""
  if cfg.max_episode_tokens is not None:
    return int(cfg.max_episode_tokens)
  return (cfg.max_turns + 1) * cfg.max_new_tokens + cfg.max_turns * (cfg.max_feedback_tokens + 8)


def prompt_width(prompt_lengths, cfg) -> int:
  """The width of a rollout's prompt buffer: the longest prompt, bucketed, and at least
  `prompt_width` (0 when unset; the run's set-up sets it from the task's longest prompt,
  so every rollout of a run has one prompt width and one cache length)."""
  return max(bucket(max(prompt_lengths)), int(getattr(cfg, "prompt_width", 0) or 0))


def cache_length(prompt_lengths, cfg) -> int:
  """The KV cache's slots (the rollout's buffer length L): the prompt width
  (`prompt_width`, already a power of two) plus the episode budget, rounded up to a
  multiple of 128, so there is one length per prompt width; never sized from the model's
  context. Not the next power of two: on the default (256 + 336) that would be 1024
  slots where 640 hold every episode, and the buffer's width is what the update, the
  captured hidden states and the cache pay for. The memory plan sizes its kv cache row
  with this.

  A larger `cache_length` (0 when unset) raises it: rollouts with other budgets or
  prompts (the evaluation's methods) then share one cache length, and with it every
  compiled program (the budget is a value of the state, not a shape)."""
  n = prompt_width(prompt_lengths, cfg) + episode_budget(cfg)
  return max(-(-n // 128) * 128, int(getattr(cfg, "cache_length", 0) or 0))


def update_widths(cache_len: int, cfg) -> tuple[int, ...]:
  """The widths an RL update may take, each compiled once (on a run's first step, by
  `rl.cycle.warm_update`): a ladder of multiples of 64 from the run's prompt width + 64
  up to the rollout's buffer length, each about 1.2x the one before, so a step runs its
  update within about 20% of its longest episode (320, 384, 512, 640 on the default).
  Without a run's prompt width (0: rollouts outside a run), every power of two from 64
  below the buffer length, and the buffer length."""
  prompts = int(getattr(cfg, "prompt_width", 0) or 0)
  if not prompts:
    return tuple(w for w in (64 << i for i in range(32)) if w < cache_len) + (cache_len,)
  out, w = [], -(-(prompts + 64) // 64) * 64
  while w < cache_len:
    out.append(w)
    w = -(-int(w * 1.2) // 64) * 64
  return tuple(out) + (cache_len,)


def chunk_width(cfg) -> int:
  """The width every piece of a feedback append is padded to: half of max_feedback_tokens
  (a chunk holds at most that many ids, `host.feedback_ids`) rounded up to a power of
  two, at least 32. A longer chunk goes in two pieces (`engine.append_pieces`), so one
  width serves the whole run, the append step compiles once, and the many short replies
  (21-31 tokens for half of the default's) cost half of a full-width append."""
  return bucket(-(-int(cfg.max_feedback_tokens) // 2), 32)


def loss_positions(cfg) -> int:
  """The loss positions (SLM-sampled tokens) an episode's update reads: its turns' worth
  ((max_turns + 1) x max_new_tokens, at most the episode budget) rounded up to a multiple
  of 16. An episode with more (messages refused and retried) takes twice as many. Outside a
  run (no prompt width, as in `update_widths`), 16: each batch's own count decides."""
  if not int(getattr(cfg, "prompt_width", 0) or 0):
    return 16
  n = min((cfg.max_turns + 1) * cfg.max_new_tokens, episode_budget(cfg))
  return -(-n // 16) * 16   # not a power of two: the LM head runs on every one, every row


def validate(cfg) -> None:
  if cfg.max_turns < 0:
    raise ValueError(f"max_turns must be >= 0, got {cfg.max_turns}")
  if cfg.max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
  if cfg.group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {cfg.group_size}")
  if cfg.temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {cfg.temperature}")
