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


# ----------------------------------------------------------------------------- cost gate
# Three groups of 4: no correct episode, one, two. Helper tokens are 10 per message, so
# the asking cost is 0.1 * m + 0.01 * 10 m = 0.2 m; episode 11 leaks (cost 0.5).
GATE_EPISODES = dict(
    task_scores=np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0], np.float32),
    num_messages=np.array([0, 1, 2, 1, 1, 0, 1, 2, 2, 1, 0, 1]),
    helper_tokens=np.array([0, 10, 20, 10, 10, 0, 10, 20, 20, 10, 0, 10]),
    leaks=np.array([0] * 11 + [1]), format_ok=np.ones(12), helper_errors=np.zeros(12))
GATE_REWARDS = {   # by hand, from the comment above
    ("none", False): [0, -.2, -.4, -.2, .8, 0, -.2, -.4, .6, .8, 0, -.7],
    ("any_correct", False): [0, 0, 0, 0, .8, 0, -.2, -.4, .6, .8, 0, -.7],
    ("scaled", False): [0, 0, 0, 0, .95, 0, -.05, -.1, .8, .9, 0, -.6],
    ("any_correct", True): [0, 0, 0, 0, .8, 0, -.2, -.4, .6, .8, 0, -.7],
    ("scaled", True): [0, 0, 0, 0, .95, 0, -.05, -.1, .8, .9, 0, -.35],
}


def _grpo_by_hand(rewards, g=4):
  r = np.asarray(rewards, np.float64).reshape(-1, g)
  return ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).reshape(-1)


@pytest.mark.parametrize("gate,gate_leak", sorted(GATE_REWARDS))
def test_gated_costs_match_hand_computed_rewards_and_advantages(gate, gate_leak):
  from seekjax.rl.rewards import gate_costs
  plain, comps, valid = compute_rewards(**GATE_EPISODES, cfg=_cfg(format_penalty=0.0))
  correct = GATE_EPISODES["task_scores"] >= 1
  rewards, gated = gate_costs(plain, comps, correct, 4, gate, gate_leak=gate_leak, valid=valid)
  want = np.array(GATE_REWARDS[(gate, gate_leak)], np.float32)
  np.testing.assert_allclose(rewards, want, atol=1e-6)
  np.testing.assert_allclose(sum(gated.values()), rewards, atol=1e-6)
  np.testing.assert_array_equal(gated["score"], GATE_EPISODES["task_scores"])   # never gated
  adv = np.asarray(advantages.get_advantage_fn("grpo")(rewards, 4, valid=valid))
  np.testing.assert_allclose(adv, _grpo_by_hand(want), atol=1e-4)
  if gate == "none":   # the group without a correct episode ranks by asking less
    np.testing.assert_array_equal(rewards, plain)   # bit for bit: nothing is recomputed
    np.testing.assert_allclose(adv[:4], [2 ** .5, 0, -2 ** .5, 0], atol=1e-4)
  else:                # gated, it teaches nothing
    np.testing.assert_array_equal(adv[:4], 0.0)


def test_gate_counts_only_valid_episodes_toward_a_groups_success():
  from seekjax.rl.rewards import cost_scale, group_success
  correct = np.array([1, 0, 0, 0, 1, 1, 0, 0], np.float32)
  valid = np.array([0, 1, 1, 1, 1, 1, 1, 0], np.float32)   # group 0's only hit errored
  np.testing.assert_allclose(group_success(correct, 4, valid), [0, 2 / 3])
  np.testing.assert_allclose(group_success(correct, 4), [.25, .5])
  np.testing.assert_array_equal(cost_scale([0, .25, 1], "any_correct"), [0, 1, 1])
  np.testing.assert_array_equal(cost_scale([0, .25, 1], "none"), [1, 1, 1])
  with pytest.raises(ValueError, match="cost_gate: expected one of none, any_correct, scaled"):
    cost_scale([0.5], "always")
  with pytest.raises(ValueError, match="do not split into groups of 3"):
    group_success(correct, 3)


def test_cost_gate_is_a_config_key_read_into_the_settings():
  from seekjax.rl.settings import rl_settings
  cfg = configlib.apply_overrides(configlib.load_config(
      os.path.join(ROOT, "configs", "smollm2_worldfacts.py")),
      ["reward.cost_gate=scaled", "reward.gate_leak=true"])
  assert rl_settings(cfg).reward.cost_gate == "scaled" and rl_settings(cfg).reward.gate_leak
  with pytest.raises(configlib.ConfigError, match="cost_gate"):
    configlib.apply_overrides(configlib.load_config(
        os.path.join(ROOT, "configs", "smollm2_worldfacts.py")), ["reward.cost_gate=always"])


def test_group_spread_counts_groups_without_signal():
  from seekjax.rl.rewards import group_spread
  # group 0: all equal (no signal); group 1: rewards 0,1,0,1 -> std 0.5;
  # group 2: one valid episode only -> counts as zero-advantage, std 0
  rewards = np.array([.3, .3, .3, .3, 0., 1., 0., 1., 5., 0., 0., 0.])
  valid = np.array([1] * 8 + [1, 0, 0, 0], np.float32)
  out = group_spread(rewards, 4, valid)
  assert out["groups_zero_advantage"] == pytest.approx(2 / 3)
  assert out["group_reward_std"] == pytest.approx((0 + .5 + 0) / 3)
  assert group_spread(rewards, 4)["groups_zero_advantage"] == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="groups of 5"):
    group_spread(rewards, 5)


# ----------------------------------------------------------------------------- reply credit
# GATE_EPISODES again; the replies of episodes 1, 2, 4, 6, 8, 11 held a gold answer.
REPLY_HELD = np.array([0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1], np.float32)


def test_reply_credit_matches_hand_computed_rewards_and_advantages():
  """Credit 0.3 on top of the any_correct gate: the wrong episodes whose reply held the
  answer (1, 2, 6, 11) gain 0.3; the correct ones (4, 8) gain nothing, so among correct
  episodes the one with fewer messages still ranks first (9: one message, 0.8; 8: two,
  0.6)."""
  from seekjax.rl.rewards import gate_costs
  plain, comps, valid = compute_rewards(**GATE_EPISODES, cfg=_cfg(format_penalty=0.0,
                                                                   reply_credit=0.3),
                                        reply_held=REPLY_HELD)
  np.testing.assert_allclose(comps["reply_credit"], 0.3 * np.array(
      [0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1]), atol=1e-7)
  rewards, gated = gate_costs(plain, comps, GATE_EPISODES["task_scores"] >= 1, 4, "any_correct",
                              valid=valid)
  want = np.array([0, .3, .3, 0, .8, 0, .1, -.4, .6, .8, 0, -.4], np.float32)
  np.testing.assert_allclose(rewards, want, atol=1e-6)
  np.testing.assert_allclose(sum(gated.values()), rewards, atol=1e-6)
  adv = np.asarray(advantages.get_advantage_fn("grpo")(rewards, 4, valid=valid))
  np.testing.assert_allclose(adv, _grpo_by_hand(want), atol=1e-4)
  # the group without a correct episode now ranks the episodes that found the answer first
  assert adv[1] > 0 and adv[2] > 0 and adv[0] < 0 and adv[3] < 0


def test_reply_credit_tops_up_a_partial_score_and_needs_reply_held():
  scores = np.array([0.0, 0.2, 0.5, 1.0], np.float32)
  ep = dict(task_scores=scores, num_messages=np.ones(4), helper_tokens=np.zeros(4),
            leaks=np.zeros(4), format_ok=np.ones(4), helper_errors=np.zeros(4))
  cfg = _cfg(lambda_message=0, lambda_helper_tokens=0, reply_credit=0.4)
  r, _, _ = compute_rewards(**ep, cfg=cfg, reply_held=np.ones(4))
  np.testing.assert_allclose(r, [0.4, 0.4, 0.5, 1.0], atol=1e-7)   # max(score, credit)
  r, _, _ = compute_rewards(**ep, cfg=cfg, reply_held=np.zeros(4))
  np.testing.assert_allclose(r, scores, atol=1e-7)
  with pytest.raises(ValueError, match="reply_credit > 0 needs reply_held"):
    compute_rewards(**ep, cfg=cfg)
  with pytest.raises(ValueError, match="reply_held has 3 episodes"):
    compute_rewards(**ep, cfg=cfg, reply_held=np.ones(3))
  with pytest.raises(configlib.ConfigError, match="reply_credit"):
    compute_rewards(**ep, cfg=_cfg(reply_credit=-0.1), reply_held=np.ones(4))


def test_score_episodes_marks_replies_that_hold_a_gold_answer():
  import types

  from seekjax.rl.cycle import score_episodes

  class NoLeak:
    def judge(self, messages, facts):
      return types.SimpleNamespace(leak=False)

  ask = "<message>capital of France?</message>"
  eps = _Sized(types.SimpleNamespace(
      answers=["Lyon", None, "Paris", "Paris"],
      messages=[["capital of France?"], ["capital of France?"], [], ["capital of France?"]],
      transcripts=[ask + "<feedback>The capital of France is Paris.</feedback>",
                   ask + "<feedback>error: timeout</feedback>",
                   "<answer>Paris</answer>",
                   ask + "<feedback>I do not know.</feedback>"],
      question_index=np.zeros(4, np.int32)))
  examples = [dict(question="What is the capital of France?", answers=["Paris"],
                   private_facts=[])]
  out = score_episodes(eps, examples, "em", NoLeak())
  # a failed call's feedback holds no answer; no message, no credit
  np.testing.assert_array_equal(out["reply_held"], [1, 0, 0, 0])
  np.testing.assert_array_equal(out["em"], [0, 0, 1, 1])


class _Sized:
  """An Episodes stand-in: the attributes score_episodes reads, and a length."""

  def __init__(self, ns):
    self.__dict__.update(vars(ns))

  def __len__(self):
    return len(self.answers)
