"""Rollout limits and sampling settings, as an ml_collections ConfigDict."""
from __future__ import annotations

import ml_collections


def rollout_config(**overrides) -> ml_collections.ConfigDict:
  """Defaults for `sj.rollout`; any field may be overridden by keyword.

  max_turns:          most messages an episode may send to the helper.
  max_new_tokens:     most tokens the SLM samples in one turn (between two feedbacks).
  max_message_tokens: most tokens inside one <message>; longer ones are refused.
  max_episode_tokens: most tokens after the prompt (SLM + feedback); None derives it.
  max_feedback_tokens: feedback longer than this is truncated (with a marker).
  temperature / top_k / top_p: sampling (temperature 0 is greedy).
  max_steps_per_call: decode steps before the loop returns to the host to inject replies.
  helper_timeout:     seconds before a helper call is abandoned (error "timeout").
  helper_concurrency: most helper calls in flight at once.
  on_outage:          what calls do while the helper is down: "wait" (pause, and retry when it
                      is back) or "feedback_error" (fail at once; the row reads the
                      "helper unavailable" feedback). See seekjax/rollout/faults.py.
  outage_failures:    this many consecutive connection/5xx failures start an outage...
  outage_after:       ...or a run of them (two or more) spanning more than this many seconds.
  max_outage_wait:    "wait" gives up after this many seconds of outage (then as feedback_error).
  outage_probe_min / outage_probe_max: seconds between probe calls during an outage
                      (doubling from min to max).
  group_size:         samples per question (GRPO groups); each prompt is prefilled once.
  blocking:           wait for each helper inside the callback (for benchmarks only).
  per_shard_decode:   with a mesh whose batch axes split the rows (and tensor = 1), run the
                      decode loop per shard, each shard's callback serving its own rows
                      (engine.per_shard_mesh; every device then holds the whole params while
                      decoding). False: one SPMD loop, one callback for the whole batch.
  """
  cfg = ml_collections.ConfigDict(dict(
      max_turns=3,
      max_new_tokens=256,
      max_message_tokens=64,
      max_episode_tokens=ml_collections.FieldReference(None, field_type=int),
      max_feedback_tokens=128,
      temperature=1.0,
      top_k=0,
      top_p=1.0,
      max_steps_per_call=64,
      helper_timeout=60.0,
      helper_concurrency=64,
      on_outage="wait",
      outage_failures=8,
      outage_after=10.0,
      max_outage_wait=300.0,
      outage_probe_min=0.25,
      outage_probe_max=2.0,
      group_size=1,
      system_prompt=ml_collections.FieldReference(None, field_type=str),
      blocking=False,
      per_shard_decode=True,
  ))
  for k, v in overrides.items():
    if k not in cfg:
      raise KeyError(f"unknown rollout config key {k!r}; valid keys: {sorted(cfg.keys())}")
    cfg[k] = v
  return cfg


def episode_budget(cfg) -> int:
  if cfg.max_episode_tokens is not None:
    return int(cfg.max_episode_tokens)
  return (cfg.max_turns + 1) * cfg.max_new_tokens + cfg.max_turns * (cfg.max_feedback_tokens + 8)


def validate(cfg) -> None:
  if cfg.max_turns < 0:
    raise ValueError(f"max_turns must be >= 0, got {cfg.max_turns}")
  if cfg.max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
  if cfg.group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {cfg.group_size}")
  if cfg.temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {cfg.temperature}")
