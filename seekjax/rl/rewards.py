"""Episode rewards composed from the config: task score minus message, token, leak, format costs."""
from __future__ import annotations

import numpy as np

HELPER_ERROR_POLICIES = ("score", "zero_advantage")


def compute_rewards(*, task_scores, num_messages, helper_tokens, leaks, format_ok,
                    helper_errors, cfg):
  """Per-episode rewards (numpy float32[B]), their components, and a validity mask.

  reward = score - lambda_message * messages - lambda_helper_tokens * helper tokens
           - lambda_leak * leak - format_penalty * (1 - format_ok)
  `valid` is 0 for episodes whose helper failed when cfg.helper_error_policy is
  "zero_advantage": they are dropped from the loss rather than scored as if the helper
  had answered. Returns (rewards, components dict name -> float32[B], valid float32[B]).
  """
  if cfg.helper_error_policy not in HELPER_ERROR_POLICIES:
    raise ValueError(f"reward.helper_error_policy must be one of {HELPER_ERROR_POLICIES}, "
                     f"got {cfg.helper_error_policy!r}")
  f = lambda x: np.asarray(x, np.float32)  # noqa: E731
  components = {
      "score": f(task_scores),
      "message_cost": -cfg.lambda_message * f(num_messages),
      "helper_token_cost": -cfg.lambda_helper_tokens * f(helper_tokens),
      "leak_cost": -cfg.lambda_leak * f(leaks),
      "format_cost": -cfg.format_penalty * (1.0 - f(format_ok)),
  }
  rewards = sum(components.values())
  valid = np.ones_like(rewards)
  if cfg.helper_error_policy == "zero_advantage":
    valid = (f(helper_errors) == 0).astype(np.float32)
  return rewards.astype(np.float32), components, valid
