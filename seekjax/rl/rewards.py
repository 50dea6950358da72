"""Episode rewards composed from the config: task score minus message, token, leak, format costs.

    reward = score
             - lambda_message       * num_messages
             - lambda_helper_tokens * helper_tokens
             - lambda_leak          * leak
             - format_penalty       * (1 - format_ok)

Each term is returned on its own (as a signed component, so the components sum to the
reward) for logging. Episodes whose helper call failed are never silently scored as if
the helper had answered: `helper_error_policy` decides what happens to them.
  "score":          the episode is scored as it happened (the SLM saw a defined error
                    feedback and answered anyway); it stays in the loss.
  "zero_advantage": the episode is marked invalid (`valid` = 0); the trainer leaves it
                    out of the group baselines and gives it no gradient.
Host-side numpy: inputs are per-episode arrays of length B; outputs are float32[B].
"""
from __future__ import annotations

import numpy as np

from seekjax.configlib import ConfigError

HELPER_ERROR_POLICIES = ("score", "zero_advantage")
WEIGHTS = ("lambda_message", "lambda_helper_tokens", "lambda_leak", "format_penalty")


def _episode_array(name: str, x, size: int | None):
  """float32[B] copy of `x`; one-line ValueError on a wrong shape or non-finite value."""
  a = np.asarray(x, np.float32)
  if a.ndim != 1:
    raise ValueError(f"compute_rewards: {name} must be one value per episode [B], got shape "
                     f"{a.shape}")
  if size is not None and a.shape[0] != size:
    raise ValueError(f"compute_rewards: {name} has {a.shape[0]} episodes, task_scores has {size}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"compute_rewards: {name} has non-finite values at episodes "
                     f"{np.flatnonzero(~np.isfinite(a))[:8].tolist()}")
  return a


def check_reward_config(cfg) -> None:
  """Raises ConfigError (one line) unless cfg (`settings.RewardWeights` or the config.reward
  section) has non-negative weights and a known policy."""
  for key in WEIGHTS + ("helper_error_policy",):
    if getattr(cfg, key, None) is None:
      raise ConfigError(f"config.reward.{key}: missing")
  for key in WEIGHTS:
    value = getattr(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      raise ConfigError(f"config.reward.{key}: expected a non-negative number, got {value!r}")
  if cfg.helper_error_policy not in HELPER_ERROR_POLICIES:
    raise ConfigError(f"config.reward.helper_error_policy: expected one of "
                      f"{', '.join(HELPER_ERROR_POLICIES)}, got {cfg.helper_error_policy!r}")


def compute_rewards(task_scores, num_messages, helper_tokens, leaks, format_ok, cfg, *,
                    helper_errors):
  """Per-episode rewards, their signed components, and a validity mask.

  Args:
    task_scores: float[B], the task's score (EM, F1 or its own score in [0, 1]).
    num_messages: int[B], messages the SLM sent to the helper.
    helper_tokens: int[B], tokens of helper feedback the SLM received.
    leaks: float[B], 1 (or a judge's score) when a message leaked private information.
    format_ok: bool/float[B], 1 when the episode followed the protocol.
    cfg: the reward weights, `settings.RewardWeights` or the config.reward section
      (lambda_message, lambda_helper_tokens, lambda_leak, format_penalty,
      helper_error_policy).
    helper_errors: int[B], failed helper calls per episode (required: the caller must say).

  Returns:
    (rewards float32[B], components {name: float32[B]}, valid float32[B]) where the
    components score, message_cost, helper_token_cost, leak_cost, format_cost sum to
    rewards, and valid is 0 for episodes with helper errors under "zero_advantage".
  """
  check_reward_config(cfg)
  score = _episode_array("task_scores", task_scores, None)
  b = score.shape[0]
  arrays = {name: _episode_array(name, x, b) for name, x in (
      ("num_messages", num_messages), ("helper_tokens", helper_tokens), ("leaks", leaks),
      ("format_ok", format_ok), ("helper_errors", helper_errors))}
  components = {
      "score": score,
      "message_cost": np.float32(-cfg.lambda_message) * arrays["num_messages"],
      "helper_token_cost": np.float32(-cfg.lambda_helper_tokens) * arrays["helper_tokens"],
      "leak_cost": np.float32(-cfg.lambda_leak) * arrays["leaks"],
      "format_cost": np.float32(-cfg.format_penalty) * (1.0 - arrays["format_ok"]),
  }
  rewards = np.sum(np.stack(list(components.values())), axis=0).astype(np.float32)
  if cfg.helper_error_policy == "zero_advantage":
    valid = (arrays["helper_errors"] == 0).astype(np.float32)
  else:
    valid = np.ones(b, np.float32)
  return rewards, components, valid
