"""The algorithm's settings, resolved once from the run config into typed frozen records.

`rl_settings(cfg)` reads config.rl, config.reward and config.helper.max_error_share; the
iteration (`cycle.rl_iteration`) and the train step's spec read only these records, never
the ConfigDict. Where the KL goes is decided here: `kl_loss_beta` weighs it in the loss,
`kl_reward_beta` subtracts it from the reward, and exactly one of them is non-zero (or
neither, at kl_beta 0).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RewardWeights:
  """config.reward's weights of `rewards.compute_rewards` (each a cost per unit)."""

  lambda_message: float
  lambda_helper_tokens: float
  lambda_leak: float
  format_penalty: float
  helper_error_policy: str
  cost_gate: str = "none"     # none | any_correct | scaled (`rewards.gate_costs`)
  gate_leak: bool = False     # the leak cost is gated too
  reply_credit: float = 0.0   # the least score of an episode whose reply held a gold answer


@dataclasses.dataclass(frozen=True)
class RLSettings:
  """What one RL iteration and its PPO step read (config.rl, config.reward, helper)."""

  group_size: int
  advantage: str
  whiten: bool
  num_epochs: int
  mini_batches: int
  micro_batches: int
  epsilon: float
  epsilon_high: float
  aggregation: str
  kl_method: str
  kl_beta: float
  kl_in: str                # "loss" | "reward"
  score: str                # the task score the reward starts from: em | f1 | task
  max_error_share: float    # a step with a larger share of failed helper calls stops
  reward: RewardWeights
  # top_n: the update reads the frozen bottom layers' output from the rollout instead of
  # running them again (`cycle.rollout_capture_layer`)
  reuse_rollout_hidden: bool = True

  @property
  def kl_loss_beta(self) -> float:
    """The KL's weight in the loss (0 when it goes into the reward)."""
    return self.kl_beta if self.kl_in == "loss" else 0.0

  @property
  def kl_reward_beta(self) -> float:
    """The weight of each episode's summed KL subtracted from its reward (0 in the loss)."""
    return self.kl_beta if self.kl_in == "reward" else 0.0


def rl_settings(cfg) -> RLSettings:
  """The RL settings of a run config (already validated against configs/_base.py)."""
  r, w = cfg.rl, cfg.reward
  return RLSettings(
      group_size=r.group_size, advantage=r.advantage, whiten=r.whiten, num_epochs=r.num_epochs,
      mini_batches=max(r.mini_batches, 1), micro_batches=r.micro_batches, epsilon=r.epsilon,
      epsilon_high=r.epsilon_high, aggregation=r.aggregation, kl_method=r.kl_method,
      kl_beta=r.kl_beta, kl_in=r.kl_in, score=w.score,
      max_error_share=cfg.helper.max_error_share,
      reward=RewardWeights(lambda_message=w.lambda_message,
                           lambda_helper_tokens=w.lambda_helper_tokens,
                           lambda_leak=w.lambda_leak, format_penalty=w.format_penalty,
                           helper_error_policy=w.helper_error_policy,
                           cost_gate=w.cost_gate, gate_leak=w.gate_leak,
                           reply_credit=w.reply_credit),
      reuse_rollout_hidden=r.reuse_rollout_hidden)
