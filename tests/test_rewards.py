"""seekjax.rl.rewards: the composed reward, its components, and helper-error episodes."""
import os

import ml_collections
import numpy as np
import pytest

from seekjax import configlib
from seekjax.rl import advantages
from seekjax.rl.rewards import compute_rewards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(policy="score", **weights):
  base = dict(lambda_message=0.1, lambda_helper_tokens=0.01, lambda_leak=0.5,
              format_penalty=0.2, helper_error_policy=policy)
  base.update(weights)
  return ml_collections.ConfigDict(base)


def _episodes(b=8, seed=0):
  rng = np.random.default_rng(seed)
  return dict(task_scores=rng.random(b), num_messages=rng.integers(0, 4, b),
              helper_tokens=rng.integers(0, 60, b), leaks=rng.integers(0, 2, b),
              format_ok=rng.random(b) < 0.7, helper_errors=rng.integers(0, 2, b))


def test_reward_is_score_minus_costs_and_components_add_up():
  ep = _episodes()
  rewards, comps, valid = compute_rewards(**ep, cfg=_cfg())
  want = (ep["task_scores"] - 0.1 * ep["num_messages"] - 0.01 * ep["helper_tokens"]
          - 0.5 * ep["leaks"] - 0.2 * (1 - ep["format_ok"]))
  assert rewards.dtype == np.float32 and rewards.shape == (8,)
  np.testing.assert_allclose(rewards, want, rtol=1e-5, atol=1e-6)
  assert sorted(comps) == ["format_cost", "helper_token_cost", "leak_cost", "message_cost", "score"]
  np.testing.assert_allclose(sum(comps.values()), rewards, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(comps["message_cost"], -0.1 * ep["num_messages"], rtol=1e-6)
  np.testing.assert_allclose(comps["helper_token_cost"], -0.01 * ep["helper_tokens"], rtol=1e-6)
  np.testing.assert_allclose(comps["leak_cost"], -0.5 * ep["leaks"], rtol=1e-6)
  np.testing.assert_allclose(comps["format_cost"], -0.2 * (1 - ep["format_ok"]), rtol=1e-6)
  assert all(c.dtype == np.float32 and c.shape == (8,) for c in comps.values())
  np.testing.assert_array_equal(valid, 1.0)      # "score": errored episodes stay in


def test_each_cost_only_lowers_the_reward():
  ep = _episodes(seed=1)
  base, _, _ = compute_rewards(**ep, cfg=_cfg(lambda_message=0, lambda_helper_tokens=0,
                                              lambda_leak=0, format_penalty=0))
  np.testing.assert_allclose(base, ep["task_scores"], rtol=1e-6)
  for key in ("lambda_message", "lambda_helper_tokens", "lambda_leak", "format_penalty"):
    weights = dict(lambda_message=0, lambda_helper_tokens=0, lambda_leak=0, format_penalty=0)
    weights[key] = 1.0
    r, _, _ = compute_rewards(**ep, cfg=_cfg(**weights))
    assert np.all(r <= base + 1e-7) and np.any(r < base), key


def test_zero_advantage_marks_errored_episodes_invalid():
  ep = _episodes(seed=2)
  ep["helper_errors"] = np.array([0, 1, 0, 3, 0, 0, 0, 1])
  rewards, _, valid = compute_rewards(**ep, cfg=_cfg("zero_advantage"))
  np.testing.assert_array_equal(valid, [1, 0, 1, 0, 1, 1, 1, 0])
  assert valid.dtype == np.float32
  scored, _, _ = compute_rewards(**ep, cfg=_cfg("score"))
  np.testing.assert_array_equal(rewards, scored)   # the reward itself is the same number


def test_invalid_episode_does_not_move_its_groupmates_advantages():
  ep = _episodes(b=8, seed=3)
  ep["helper_errors"] = np.zeros(8, int)
  ep["helper_errors"][2] = 1
  rewards, _, valid = compute_rewards(**ep, cfg=_cfg("zero_advantage"))
  adv = np.asarray(advantages.get_advantage_fn("grpo")(rewards, 4, valid=valid))
  assert adv[2] == 0.0
  rewards_bumped = rewards.copy()
  rewards_bumped[2] += 100.0                      # what it "scored" is irrelevant
  adv2 = np.asarray(advantages.get_advantage_fn("grpo")(rewards_bumped, 4, valid=valid))
  np.testing.assert_array_equal(adv, adv2)
  kept = rewards[[0, 1, 3]]
  np.testing.assert_allclose(adv[[0, 1, 3]], (kept - kept.mean()) / (kept.std() + 1e-6), rtol=1e-4)


def test_helper_errors_must_be_given():
  ep = _episodes()
  del ep["helper_errors"]
  with pytest.raises(TypeError, match="helper_errors"):
    compute_rewards(**ep, cfg=_cfg())  # pylint: disable=missing-kwoa


def test_bad_config_is_one_line_config_error():
  ep = _episodes()
  with pytest.raises(configlib.ConfigError, match=r"^config.reward.helper_error_policy: expected "
                                                  r"one of score, zero_advantage, got 'retry'$"):
    compute_rewards(**ep, cfg=_cfg("retry"))
  with pytest.raises(configlib.ConfigError, match=r"^config.reward.lambda_leak: expected a "
                                                  r"non-negative number, got -0.5$"):
    compute_rewards(**ep, cfg=_cfg(lambda_leak=-0.5))
  cfg = _cfg()
  del cfg["format_penalty"]
  with pytest.raises(configlib.ConfigError, match=r"^config.reward.format_penalty: missing$"):
    compute_rewards(**ep, cfg=cfg)


def test_bad_inputs_are_one_line_value_errors():
  ep = _episodes()
  short = dict(ep, leaks=ep["leaks"][:5])
  with pytest.raises(ValueError, match="leaks has 5 episodes, task_scores has 8"):
    compute_rewards(**short, cfg=_cfg())
  nan = dict(ep, task_scores=np.where(np.arange(8) == 3, np.nan, ep["task_scores"]))
  with pytest.raises(ValueError, match=r"task_scores has non-finite values at episodes \[3\]"):
    compute_rewards(**nan, cfg=_cfg())
  with pytest.raises(ValueError, match=r"num_messages must be one value per episode"):
    compute_rewards(**dict(ep, num_messages=np.zeros((8, 2))), cfg=_cfg())


def test_shipped_config_reward_section_works():
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "smollm2_worldfacts.py"))
  rewards, _, valid = compute_rewards(**_episodes(), cfg=cfg.reward)
  assert rewards.shape == valid.shape == (8,)
