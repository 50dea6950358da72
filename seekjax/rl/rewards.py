"""Episode rewards composed from the config: task score minus message, token, leak, format costs.

    reward = score
             + reply_held * max(reply_credit - score, 0)
             - lambda_message       * num_messages
             - lambda_helper_tokens * helper_tokens
             - lambda_leak          * leak
             - format_penalty       * (1 - format_ok)

`reply_credit` is partial credit: an episode whose helper reply held a gold answer
scores at least `reply_credit`, so that, in a group where no episode answered right, the
episodes that asked the question whose reply holds the answer rank above those that did
not (a correct episode gets nothing more, so asking still costs where answering alone
pays). It needs `reply_held` from the caller, 1 where a reply held a gold alias.

Each term is returned on its own (as a signed component, so the components sum to the
reward) for logging. Episodes whose helper call failed are never silently scored as if
the helper had answered: `helper_error_policy` decides what happens to them.
  "score":          the episode is scored as it happened (the SLM saw a defined error
                    feedback and answered anyway); it stays in the loss.
  "zero_advantage": the episode is marked invalid (`valid` = 0); the trainer leaves it
                    out of the group baselines and gives it no gradient.
`gate_costs` then scales the asking costs per group by the group's success
(`reward.cost_gate`), so that a group with no correct episode does not rank its
episodes by how little they asked. Host-side numpy: inputs are per-episode arrays of
length B; outputs are float32[B].
"""
from __future__ import annotations

import numpy as np

from seekjax.configlib import ConfigError

HELPER_ERROR_POLICIES = ("score", "zero_advantage")
COST_GATES = ("none", "any_correct", "scaled")
ASKING_COSTS = ("message_cost", "helper_token_cost")
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
                    helper_errors, reply_held=None):
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
    reply_held: float[B], 1 where a helper reply of the episode held a gold answer; needed
      when cfg.reply_credit > 0 (a missing cfg.reply_credit counts as 0).

  Returns:
    (rewards float32[B], components {name: float32[B]}, valid float32[B]) where the
    components score, message_cost, helper_token_cost, leak_cost, format_cost (and
    reply_credit when cfg.reply_credit > 0) sum to rewards, and valid is 0 for episodes
    with helper errors under "zero_advantage".
  """
  check_reward_config(cfg)
  score = _episode_array("task_scores", task_scores, None)
  b = score.shape[0]
  arrays = {name: _episode_array(name, x, b) for name, x in (
      ("num_messages", num_messages), ("helper_tokens", helper_tokens), ("leaks", leaks),
      ("format_ok", format_ok), ("helper_errors", helper_errors))}
  credit = float(getattr(cfg, "reply_credit", 0.0) or 0.0)
  if credit < 0:
    raise ConfigError(f"config.reward.reply_credit: expected a non-negative number, got "
                      f"{credit!r}")
  if credit and reply_held is None:
    raise ValueError("compute_rewards: reward.reply_credit > 0 needs reply_held per episode")
  held = (_episode_array("reply_held", reply_held, b) if reply_held is not None
          else np.zeros(b, np.float32))
  components = {
      "score": score,
      "message_cost": np.float32(-cfg.lambda_message) * arrays["num_messages"],
      "helper_token_cost": np.float32(-cfg.lambda_helper_tokens) * arrays["helper_tokens"],
      "leak_cost": np.float32(-cfg.lambda_leak) * arrays["leaks"],
      "format_cost": np.float32(-cfg.format_penalty) * (1.0 - arrays["format_ok"]),
  }
  if credit:   # a component only where configured, so that runs without it log as before
    components["reply_credit"] = held * np.maximum(np.float32(credit) - score, 0.0)
  rewards = np.sum(np.stack(list(components.values())), axis=0).astype(np.float32)
  if cfg.helper_error_policy == "zero_advantage":
    valid = (arrays["helper_errors"] == 0).astype(np.float32)
  else:
    valid = np.ones(b, np.float32)
  return rewards, components, valid


def group_success(correct, group_size: int, valid=None):
  """float32[N]: the share of correct episodes among the valid ones of each group.

  correct: float/bool[B] (1 = correct), B = N * group_size, groups contiguous; valid:
  optional float[B] mask (a group with no valid episode has success 0).
  """
  c = np.asarray(correct, np.float32)
  v = np.ones_like(c) if valid is None else np.asarray(valid, np.float32)
  if c.ndim != 1 or v.shape != c.shape or group_size < 1 or c.shape[0] % group_size:
    raise ValueError(f"group_success: {c.shape[0]} episodes (valid {v.shape}) do not split "
                     f"into groups of {group_size}")
  hits = (c * v).reshape(-1, group_size).sum(axis=1)
  return (hits / np.maximum(v.reshape(-1, group_size).sum(axis=1), 1.0)).astype(np.float32)


def group_spread(rewards, group_size: int, valid=None) -> dict:
  """How much signal GRPO's groups carry: {"groups_zero_advantage": the share of groups
  whose valid episodes all got the same reward (a group-relative advantage of 0 for every
  one), "group_reward_std": the mean over groups of the reward's standard deviation among
  its valid episodes}. Groups with fewer than two valid episodes count as zero-advantage."""
  r = np.asarray(rewards, np.float64)
  v = np.ones_like(r) if valid is None else np.asarray(valid, np.float64)
  if r.ndim != 1 or v.shape != r.shape or group_size < 1 or r.shape[0] % group_size:
    raise ValueError(f"group_spread: {r.shape[0]} rewards do not split into groups of "
                     f"{group_size}")
  r, v = r.reshape(-1, group_size), v.reshape(-1, group_size)
  n = v.sum(axis=1)
  mean = (r * v).sum(axis=1) / np.maximum(n, 1.0)
  std = np.sqrt(((r - mean[:, None]) ** 2 * v).sum(axis=1) / np.maximum(n, 1.0))
  zero = (std < 1e-6) | (n < 2)
  return {"groups_zero_advantage": float(zero.mean()), "group_reward_std": float(std.mean())}


def cost_scale(success, gate: str):
  """float32[N]: the factor on each group's gated costs. none: 1; any_correct: 1 when
  the group has a correct episode, else 0; scaled: the group's success rate."""
  success = np.asarray(success, np.float32)
  if gate == "none":
    return np.ones_like(success)
  if gate == "any_correct":
    return (success > 0).astype(np.float32)
  if gate == "scaled":
    return success
  raise ValueError(f"cost_gate: expected one of {', '.join(COST_GATES)}, got {gate!r}")


def gate_costs(rewards, components: dict, correct, group_size: int, gate: str, *,
               gate_leak=False, valid=None):
  """The reward and its components with the asking costs (`ASKING_COSTS`, and the leak
  cost when gate_leak) of each group multiplied by `cost_scale` of its success.

  A weak policy's groups mostly hold no correct episode; there the message cost alone
  separates the episodes and teaches the policy to stop asking before asking has paid.
  Gated, such groups carry no cost (any_correct) or a cost in proportion to their
  success (scaled); the score and format cost are never gated.

  Args:
    rewards: float32[B] from `compute_rewards`; the part of each gated cost that the
      gate removes is taken off it (gate "none" returns it unchanged).
    components: {name: float32[B]} from `compute_rewards` (they sum to the reward).
    correct: float/bool[B], 1 for an episode with the full task score.
    group_size: G; rows [i*G, (i+1)*G) form group i.
    gate: "none" | "any_correct" | "scaled".
    valid: optional float[B]; invalid episodes do not count toward a group's success.

  Returns:
    (rewards float32[B], components {name: float32[B]}), the components summing to rewards.
  """
  scale = np.repeat(cost_scale(group_success(correct, group_size, valid), gate), group_size)
  if gate == "none":
    return np.asarray(rewards, np.float32), components
  gated = ASKING_COSTS + (("leak_cost",) if gate_leak else ())
  out = {k: (v * scale if k in gated else v).astype(np.float32) for k, v in components.items()}
  removed = sum((components[k] - out[k] for k in gated), np.zeros_like(scale))
  return (np.asarray(rewards, np.float32) - removed).astype(np.float32), out
