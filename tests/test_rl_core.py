"""The RL core against direct numpy computations: advantages, PPO-clip, KL, rewards,
trainable subsets and the jitted train step (micro-batching, masked positions).

Every check uses random inputs with masks and a float64 numpy reference written here
from the formulas, not from the code under test. A tiny random model (small vocab) keeps
the train-step checks to a few seconds.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import seekjax as sj
from seekjax.models import attention, decoder, packing
from seekjax.rl import advantages, losses, rewards
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.run import checkpoint

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
ESTIMATORS = ("grpo", "drgrpo", "rloo")
EPS = 1e-6

# ----------------------------------------------------------------------------- references


def ref_advantages(r, valid, group_size, name, whiten):
  """Per-episode advantages, one group and one episode at a time (float64)."""
  r, valid = np.asarray(r, np.float64), np.asarray(valid, np.float64)
  out = np.zeros_like(r)
  for g in range(len(r) // group_size):
    rows = [g * group_size + j for j in range(group_size) if valid[g * group_size + j] > 0]
    for i in rows:
      peers = [r[j] for j in rows if j != i]
      members = [r[j] for j in rows]
      mean = sum(members) / len(members)
      if name == "grpo":
        std = np.sqrt(sum((x - mean) ** 2 for x in members) / len(members))
        out[i] = (r[i] - mean) / (std + EPS)
      elif name == "drgrpo":
        out[i] = r[i] - mean
      else:
        out[i] = r[i] - sum(peers) / len(peers) if peers else 0.0
  if whiten:
    kept = out[valid > 0]
    out = np.where(valid > 0, (out - kept.mean()) / (kept.std() + EPS), 0.0)
  return out


def ref_aggregate(per_token, mask, aggregation):
  rows = [b for b in range(mask.shape[0]) if mask[b].sum() > 0]
  if aggregation == "token-mean":
    return (per_token * mask).sum() / max(mask.sum(), 1e-8)
  if aggregation == "seq-mean-token-mean":
    return np.mean([(per_token[b] * mask[b]).sum() / mask[b].sum() for b in rows])
  return np.mean([(per_token[b] * mask[b]).sum() for b in rows])


def ref_policy_per_token(lp, old, adv, eps_low, eps_high):
  ratio = np.exp(np.float64(lp) - old)
  a = np.asarray(adv, np.float64)[:, None]
  return np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps_low, 1 + eps_high))


def ref_kl(lp, ref, method):
  d = np.float64(lp) - ref
  return {"k1": d, "k2": d ** 2 / 2, "k3": np.exp(-d) + d - 1}[method]


def random_batch(seed, b=8, t=11):
  """Log-probs, old/ref log-probs, advantages and a 0/1 mask with one empty row."""
  rng = np.random.default_rng(seed)
  lp = rng.normal(-1.5, 0.7, (b, t)).astype(np.float32)
  old = (lp + rng.normal(0, 0.35, (b, t))).astype(np.float32)
  ref = (lp + rng.normal(0, 0.5, (b, t))).astype(np.float32)
  adv = rng.normal(0, 1, b).astype(np.float32)
  mask = (rng.random((b, t)) < 0.55).astype(np.float32)
  mask[:, 0] = 0.0            # nothing predicts the first token
  mask[2] = 0.0               # an episode with no SLM tokens (e.g. forced turns only)
  mask[3, 1:] = 1.0
  return lp, old, ref, adv, mask


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_advantages_match_numpy_with_invalid_episodes(name, whiten):
  rng = np.random.default_rng(11)
  g = 4
  r = rng.normal(size=6 * g).astype(np.float32)
  r[8:12] = 0.5                                  # a group with no reward signal
  valid = np.ones_like(r)
  valid[[1, 13, 14, 15]] = 0.0                   # group 3 keeps a single valid member
  valid[20:24] = 0.0                             # a group with no valid member at all
  garbage = r.copy()
  garbage[valid == 0] = np.array([np.nan, np.inf, -1e9, 3.0, 1.0, 2.0, 3.0, 4.0])[:int((valid == 0).sum())]
  got = np.asarray(advantages.get_advantage_fn(name)(garbage, g, whiten=whiten, valid=valid))
  want = ref_advantages(r, valid, g, name, whiten)
  assert got.dtype == np.float32 and got.shape == r.shape
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
  np.testing.assert_array_equal(got[valid == 0], 0.0)
  if not whiten:
    np.testing.assert_array_equal(got[8:12], 0.0)      # equal rewards: no push at all
    # within each group the valid advantages sum to zero (GRPO/Dr.GRPO/RLOO are centred)
    for k in range(6):
      sl = slice(k * g, (k + 1) * g)
      assert abs(float((got[sl] * valid[sl]).sum())) < 1e-4


def test_advantages_without_valid_equal_all_valid_and_are_jittable():
  r = np.random.default_rng(2).normal(size=12).astype(np.float32)
  for name in ESTIMATORS:
    fn = advantages.get_advantage_fn(name)
    np.testing.assert_array_equal(fn(r, 3), fn(r, 3, valid=np.ones(12)))
    jitted = jax.jit(lambda x, fn=fn: fn(x, 3, whiten=True))
    np.testing.assert_allclose(jitted(r), ref_advantages(r, np.ones(12), 3, name, True),
                               rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- reductions


def test_masked_sum_and_mean_match_numpy_and_ignore_nonfinite_masked_values():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 7)).astype(np.float32)
  w = rng.random((5, 7)).astype(np.float32) * (rng.random((5, 7)) < 0.6)
  w[4] = 0.0
  bad = np.where(w > 0, x, np.nan).astype(np.float32)
  bad[0, w[0] == 0] = np.inf
  for mask in (w, (w > 0).astype(np.int32), w > 0):
    m = np.asarray(mask, np.float64)
    np.testing.assert_allclose(losses.masked_sum(bad, mask), (x * m).sum(), rtol=1e-5)
    np.testing.assert_allclose(losses.masked_sum(bad, mask, axis=1), (x * m).sum(1), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(bad, mask), (x * m).sum() / m.sum(), rtol=1e-5)
    rows = np.asarray(losses.masked_mean(bad, mask, axis=1))
    np.testing.assert_allclose(rows[:4], (x * m).sum(1)[:4] / m.sum(1)[:4], rtol=1e-5)
    assert rows[4] == 0.0                        # an empty row has mean 0, not NaN
  g = jax.grad(lambda v: losses.masked_mean(v, w))(jnp.asarray(bad))
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(g)[w == 0], 0.0)


def _mean_entropy(logits, mask):
  """The trainer's entropy metric: the entropy of the logits that predict each
  token (position 0 predicts nothing and counts 0), masked-mean over the tokens."""
  tokens = np.zeros(logits.shape[:2], np.int32)
  _, ent = losses.logprobs_and_entropy(logits[:, :-1], tokens[:, 1:])
  return losses.masked_mean(np.pad(np.asarray(ent), ((0, 0), (1, 0))), mask)


def test_entropy_matches_numpy():
  rng = np.random.default_rng(4)
  logits = rng.normal(0, 2, (3, 6, 13)).astype(np.float32)
  mask = (rng.random((3, 6)) < 0.6).astype(np.float32)
  mask[:, 0], mask[0, 3] = 0.0, 1.0
  z = np.float64(logits) - np.float64(logits).max(-1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  h = -(p * np.log(p)).sum(-1)                   # h[:, t] is the entropy at token t + 1
  aligned = np.concatenate([np.zeros((3, 1)), h[:, :-1]], axis=1)
  want = (aligned * mask).sum() / mask.sum()
  np.testing.assert_allclose(_mean_entropy(logits, mask), want, rtol=1e-5)
  uniform = np.zeros((1, 4, 13), np.float32)
  np.testing.assert_allclose(_mean_entropy(uniform, np.ones((1, 4))), np.log(13) * 3 / 4,
                             rtol=1e-6)


# ----------------------------------------------------------------------------- policy loss


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_policy_loss_matches_numpy(aggregation):
  lp, old, _, adv, mask = random_batch(5)
  loss, metrics = losses.policy_loss(lp, old, adv, mask, epsilon=0.2, epsilon_high=0.3,
                                     aggregation=aggregation)
  want = ref_aggregate(ref_policy_per_token(lp, old, adv, 0.2, 0.3), mask, aggregation)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
  on = mask > 0
  ratio = np.exp(np.float64(lp) - old)[on]
  a = np.broadcast_to(adv[:, None], lp.shape)[on]
  low, high = (ratio < 0.8) & (a < 0), (ratio > 1.3) & (a > 0)
  assert low.any() and high.any()
  np.testing.assert_allclose(metrics["clip_fraction_low"], low.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_fraction_high"], high.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_fraction"], (low | high).mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"], ratio.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["approx_kl"],
                             ref_kl(lp, old, "k3")[on].mean(), rtol=1e-4)


def test_policy_loss_clip_is_asymmetric():
  """A ratio of 1.25 with A > 0 is clipped by epsilon_high=0.2, not by 0.3; the low side
  is governed by epsilon alone."""
  mask = np.ones((4, 1), np.float32)
  old = np.zeros((4, 1), np.float32)
  lp = np.log(np.array([[1.25], [1.25], [0.75], [0.85]], np.float32))
  adv = np.array([1.0, -1.0, -1.0, -1.0], np.float32)

  def grads(eps_high):
    return np.asarray(jax.grad(lambda x: losses.policy_loss(
        x, old, adv, mask, epsilon=0.2, epsilon_high=eps_high)[0])(jnp.asarray(lp)))[:, 0]

  # d/dlp (-A r) / n = -A r / n when the unclipped term is active, else 0.
  np.testing.assert_allclose(grads(0.3), [-1.25 / 4, 1.25 / 4, 0.0, 0.85 / 4], rtol=1e-6)
  np.testing.assert_allclose(grads(0.2), [0.0, 1.25 / 4, 0.0, 0.85 / 4], rtol=1e-6)
  np.testing.assert_allclose(grads(None), grads(0.2))     # epsilon_high defaults to epsilon


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_truncated_importance_correction_matches_numpy(aggregation):
  lp, old, ref, adv, mask = random_batch(6)
  sampler = ref                                          # an engine that disagrees
  loss, metrics = losses.policy_loss(lp, old, adv, mask, epsilon=0.2, epsilon_high=0.28,
                                     aggregation=aggregation, tis_cap=1.3,
                                     sampler_logprobs=sampler)
  raw = np.exp(np.float64(old) - sampler)
  weight = np.minimum(raw, 1.3)
  want = ref_aggregate(ref_policy_per_token(lp, old, adv, 0.2, 0.28) * weight, mask, aggregation)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-7)
  on = mask > 0
  np.testing.assert_allclose(metrics["tis_weight_mean"], weight[on].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["tis_truncated_fraction"], (raw[on] > 1.3).mean())
  # the weight is a constant: no gradient into the sampler's or the old log-probs
  for arg in (1, 4):
    def f(x, arg=arg):
      args = [lp, old, adv, mask, sampler]
      args[arg] = x
      return losses.policy_loss(args[0], args[1], args[2], args[3], epsilon=0.2,
                                epsilon_high=0.28, aggregation=aggregation, tis_cap=1.3,
                                sampler_logprobs=args[4])[0]
    np.testing.assert_array_equal(jax.grad(f)(jnp.asarray([lp, old, adv, mask, sampler][arg])),
                                  0.0)


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("method", losses.KL_METHODS)
def test_kl_estimators_and_kl_in_reward_match_numpy(method):
  lp, _, ref, _, mask = random_batch(7)
  np.testing.assert_allclose(losses.kl_divergence(lp, ref, method), ref_kl(lp, ref, method),
                             rtol=1e-4, atol=1e-6)
  masked = np.asarray(losses.kl_divergence(lp, ref, method, mask=mask))
  np.testing.assert_allclose(masked, ref_kl(lp, ref, method) * mask, rtol=1e-4, atol=1e-6)
  ref_bad = np.where(mask > 0, ref, np.nan).astype(np.float32)   # padding may be anything
  per_episode = losses.kl_in_reward(lp, ref_bad, mask, method=method)
  np.testing.assert_allclose(per_episode, (ref_kl(lp, ref, method) * mask).sum(1), rtol=1e-4,
                             atol=1e-6)
  assert float(per_episode[2]) == 0.0                            # empty episode: no KL
  g = jax.grad(lambda x: losses.kl_in_reward(x, ref, mask, method=method).sum())(jnp.asarray(lp))
  np.testing.assert_array_equal(g, 0.0)                          # a reward, not a loss
  for aggregation in AGGREGATIONS:
    np.testing.assert_allclose(
        losses.kl_loss(lp, ref, mask, beta=0.3, method=method, aggregation=aggregation),
        0.3 * ref_aggregate(ref_kl(lp, ref, method), mask, aggregation), rtol=1e-4, atol=1e-7)


def test_kl_is_zero_at_the_reference_and_grows_away_from_it():
  rng = np.random.default_rng(8)
  ref = rng.normal(-2, 0.5, (64,)).astype(np.float32)
  direction = rng.normal(0, 1, (64,)).astype(np.float32)
  scales = (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)
  per_token = {m: np.stack([np.asarray(losses.kl_divergence(ref + s * direction, ref, m))
                            for s in scales]) for m in losses.KL_METHODS}
  for m in losses.KL_METHODS:
    np.testing.assert_array_equal(per_token[m][0], 0.0)
  for m in ("k2", "k3"):                                       # per token: monotone in |d|
    assert np.all(np.diff(per_token[m], axis=0) > 0), m
  assert (per_token["k1"][1:] < 0).any()                       # k1 alone is not a distance

  # In expectation over tokens drawn from the policy, k1 and k3 equal KL(pi || ref) and
  # grow as the policy moves away; k2 grows too. Exact sums over an 8-token vocabulary.
  ref_logits = rng.normal(0, 1, 8)
  move = rng.normal(0, 1, 8)
  ref_lp = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32))
  expected = {m: [] for m in losses.KL_METHODS}
  exact = []
  for s in scales:
    lp = jax.nn.log_softmax(jnp.asarray(ref_logits + s * move, jnp.float32))
    p = np.exp(np.float64(lp))
    exact.append(float((p * (np.float64(lp) - np.float64(ref_lp))).sum()))
    for m in losses.KL_METHODS:
      expected[m].append(float((p * np.asarray(losses.kl_divergence(lp, ref_lp, m))).sum()))
  for m in losses.KL_METHODS:
    assert expected[m][0] == 0.0 and np.all(np.diff(expected[m]) > 0), (m, expected[m])
  np.testing.assert_allclose(expected["k1"], exact, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(expected["k3"], exact, rtol=1e-4, atol=1e-6)
  # and from samples: the Monte Carlo k1/k3 means are within 5 standard errors of KL
  lp = jax.nn.log_softmax(jnp.asarray(ref_logits + move, jnp.float32))
  draws = np.asarray(jax.random.categorical(jax.random.PRNGKey(0), lp, shape=(20000,)))
  for m in ("k1", "k3"):
    est = np.asarray(losses.kl_divergence(lp[draws], ref_lp[draws], m))
    assert abs(est.mean() - exact[4]) < 5 * est.std() / np.sqrt(len(est)), m


# ----------------------------------------------------------------------------- GRPO bandit


@pytest.mark.trajectory
@pytest.mark.parametrize("name", ESTIMATORS)
def test_bandit_policy_moves_towards_the_rewarded_token(name):
  """One-token bandit: softmax over 4 tokens, reward 1 for token 2, Adam on the logits."""
  n_groups, g = 4, 8
  adv_fn = advantages.get_advantage_fn(name)
  opt = optax.adam(0.1)

  @jax.jit
  def update(theta, opt_state, key):
    actions = jax.random.categorical(key, theta, shape=(n_groups * g,))
    adv = adv_fn((actions == 2).astype(jnp.float32), g)
    old = jax.nn.log_softmax(theta)[actions][:, None]
    mask = jnp.ones_like(old)

    def loss(th):
      lp = jax.nn.log_softmax(th)[actions][:, None]
      return losses.policy_loss(lp, old, adv, mask, epsilon=0.2, epsilon_high=0.28,
                                aggregation="seq-mean-token-mean")[0]

    updates, opt_state = opt.update(jax.grad(loss)(theta), opt_state)
    return optax.apply_updates(theta, updates), opt_state

  theta = jnp.zeros(4)
  state = opt.init(theta)
  p2 = [0.25]
  for key in jax.random.split(jax.random.PRNGKey(1), 12):
    theta, state = update(theta, state, key)
    p2.append(float(jax.nn.softmax(theta)[2]))
  assert p2[-1] > 0.75, p2
  assert p2[3] > p2[0] and p2[-1] > p2[3], p2


# ----------------------------------------------------------------------------- rewards


def _reward_cfg(policy, **weights):
  cfg = dict(lambda_message=0.13, lambda_helper_tokens=0.007, lambda_leak=0.6,
             format_penalty=0.21, helper_error_policy=policy)
  cfg.update(weights)
  return ml_collections.ConfigDict(cfg)


@pytest.mark.parametrize("policy", rewards.HELPER_ERROR_POLICIES)
def test_compute_rewards_components_and_valid_mask(policy):
  rng = np.random.default_rng(9)
  b = 12
  score = rng.random(b).astype(np.float32)
  msgs = rng.integers(0, 4, b)
  htok = rng.integers(0, 90, b)
  leaks = (rng.random(b) < 0.3).astype(np.float32)
  leaks[0] = 0.4                                     # a judge's graded score
  fmt = rng.random(b) < 0.7
  errors = np.zeros(b, np.int64)
  errors[[2, 7]] = [1, 3]
  cfg = _reward_cfg(policy)
  total, comps, valid = rewards.compute_rewards(score, msgs, htok, leaks, fmt, cfg,
                                                helper_errors=errors)
  want = {
      "score": np.float64(score),
      "message_cost": -0.13 * msgs,
      "helper_token_cost": -0.007 * htok,
      "leak_cost": -0.6 * np.float64(leaks),
      "format_cost": -0.21 * (1.0 - fmt),
  }
  assert set(comps) == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(comps[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(total, np.sum([comps[k] for k in comps], axis=0), rtol=1e-6)
  assert total.dtype == np.float32 and valid.dtype == np.float32
  if policy == "zero_advantage":
    np.testing.assert_array_equal(valid, (errors == 0).astype(np.float32))
  else:
    np.testing.assert_array_equal(valid, 1.0)
  # each weight moves only its own term
  for key, comp in (("lambda_message", "message_cost"), ("lambda_leak", "leak_cost"),
                    ("lambda_helper_tokens", "helper_token_cost"),
                    ("format_penalty", "format_cost")):
    t0, c0, _ = rewards.compute_rewards(score, msgs, htok, leaks, fmt,
                                        _reward_cfg(policy, **{key: 0.0}), helper_errors=errors)
    np.testing.assert_array_equal(c0[comp], 0.0)
    np.testing.assert_allclose(total - t0, comps[comp], rtol=1e-5, atol=1e-6)


def test_invalid_episodes_get_zero_advantage_end_to_end():
  """helper_error_policy=zero_advantage: the valid mask drops failed episodes from the
  group baseline, so a failed episode's (low) reward does not lift its peers."""
  score = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
  errors = np.array([0, 0, 1, 0])
  r, _, valid = rewards.compute_rewards(score, np.ones(4), np.zeros(4), np.zeros(4),
                                        np.ones(4), _reward_cfg("zero_advantage"),
                                        helper_errors=errors)
  adv = np.asarray(advantages.get_advantage_fn("drgrpo")(r, 4, valid=valid))
  np.testing.assert_allclose(adv, [2 / 3, -1 / 3, 0.0, -1 / 3], rtol=1e-5)


def test_compute_rewards_rejects_bad_input_in_one_line():
  ok = np.zeros(3)
  cfg = _reward_cfg("score")
  with pytest.raises(ValueError, match="num_messages has 2 episodes, task_scores has 3"):
    rewards.compute_rewards(ok, np.zeros(2), ok, ok, ok, cfg, helper_errors=ok)
  with pytest.raises(ValueError, match=r"leaks has non-finite values at episodes \[1\]"):
    rewards.compute_rewards(ok, ok, ok, np.array([0, np.nan, 0]), ok, cfg, helper_errors=ok)
  with pytest.raises(ValueError, match="helper_error_policy"):
    rewards.compute_rewards(ok, ok, ok, ok, ok, _reward_cfg("ignore"), helper_errors=ok)
  with pytest.raises(ValueError, match="lambda_message: expected a non-negative number"):
    rewards.compute_rewards(ok, ok, ok, ok, ok, _reward_cfg("score", lambda_message=-1.0),
                            helper_errors=ok)
  with pytest.raises(TypeError):
    rewards.compute_rewards(ok, ok, ok, ok, ok, cfg)  # pylint: disable=missing-kwoa


# ----------------------------------------------------------------------------- trainable

TINY = sj.ModelConfig(arch="llama", vocab_size=61, hidden_size=32, num_layers=3, num_heads=4,
                      num_kv_heads=2, head_dim=8, intermediate_size=48, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=64)
SPECS = {
    "full": trainable_lib.Trainable(mode="full"),
    "top_n": trainable_lib.Trainable(mode="top_n", top_n=2),
    "lora": trainable_lib.Trainable(mode="lora", lora_rank=4, lora_targets=("q", "v", "down")),
}


@pytest.fixture(scope="module")
def tiny_params():
  return sj.random_model(TINY, seed=3).params


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_split_then_merge_gives_back_the_params_exactly(mode, tiny_params):
  spec = SPECS[mode]
  trainable, frozen = trainable_lib.init(spec, tiny_params, jax.random.PRNGKey(0))
  _assert_trees_equal(trainable_lib.merge(spec, trainable, frozen), tiny_params)
  n_all = trainable_lib.count(tiny_params)
  if mode == "top_n":
    assert trainable["layers"]["q"].shape[0] == 2 and frozen["layers"]["q"].shape[0] == 1
    assert trainable_lib.count(trainable) + trainable_lib.count(frozen) == n_all
  if mode == "lora":
    assert sorted(trainable["lora"]) == ["down", "q", "v"]
    for ab in trainable["lora"].values():
      np.testing.assert_array_equal(ab["b"], 0.0)
      assert float(jnp.abs(ab["a"]).max()) > 0
    # rank 4 per layer: q 32 -> 32, v 32 -> 16 (2 kv heads), down 48 -> 32
    assert trainable_lib.count(trainable) == 3 * 4 * ((32 + 32) + (32 + 16) + (48 + 32))
    # a non-zero B changes exactly its target: W + (alpha / r) A B
    b = jax.tree.map(lambda x: x + 0.01, trainable)
    merged = trainable_lib.merge(spec, b, frozen)
    want_q = tiny_params["layers"]["q"] + spec.lora_alpha / spec.lora_rank * np.einsum(
        "lir,lro->lio", b["lora"]["q"]["a"], b["lora"]["q"]["b"])
    np.testing.assert_allclose(merged["layers"]["q"], want_q, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(merged["layers"]["k"], tiny_params["layers"]["k"])


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_master_weights_keep_adam_steps_that_bfloat16_rounds_away(mode):
  """A bfloat16 model with float32 master weights: the trainable part is float32, the merged
  params compute in bfloat16 (top_n's concatenation included), the gradient reaches the
  master copy through the cast, and one Adam step at lr 1e-6 moves it, where bfloat16
  master weights (whose spacing near 0.02 is about 1e-4) keep every weight as it was."""
  bf = TINY.replace(dtype="bfloat16")
  params = sj.random_model(bf, seed=3).params
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, TINY.vocab_size, (2, 12)), jnp.int32)
  moved = {}
  for master in ("float32", "bfloat16"):
    spec = dataclasses.replace(SPECS[mode], dtype="bfloat16", master_dtype=master)
    trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(master)}
    merged = trainable_lib.merge(spec, trainable, frozen)
    assert {x.dtype for x in jax.tree.leaves(merged)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(trainable_lib.reference_copy(spec, trainable))} \
        == {jnp.dtype(jnp.bfloat16)}
    loss = lambda t: -step_lib.policy_logprobs(t, frozen, tokens, None, spec, bf)[0].mean()  # noqa: E731,B023
    grads = jax.grad(loss)(trainable)
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(master)}
    if mode == "lora":   # B = 0 at init: only B gets a gradient on the first step
      assert float(jnp.abs(grads["lora"]["q"]["b"]).max()) > 0
    opt = optax.adam(1e-6)
    updates, _ = opt.update(grads, opt.init(trainable), trainable)
    after = optax.apply_updates(trainable, updates)
    pairs = [(np.asarray(a, np.float32), np.asarray(b, np.float32), np.asarray(g) != 0)
             for a, b, g in zip(jax.tree.leaves(after), jax.tree.leaves(trainable),
                                jax.tree.leaves(grads))]
    step = max(float(np.abs(a - b).max()) for a, b, _ in pairs)
    # the share of the weights with a gradient that the step changed
    share = sum(int((a != b)[g].sum()) for a, b, g in pairs) / sum(int(g.sum()) for *_, g in pairs)
    moved[master] = step, share
  assert 5e-7 < moved["float32"][0] < 2e-6 and moved["float32"][1] > 0.99   # lr-sized, all
  if mode != "lora":   # LoRA's B starts at 0, where bfloat16 resolves 1e-6 as well
    assert moved["bfloat16"][1] < 0.05   # only weights within about 2e-4 of 0 move


def test_checkpoint_fingerprint_ignores_dtypes():
  """A run resumes, or is evaluated, in another precision: the fingerprint holds the
  model's shape and the trainable subset, not the dtypes."""
  a = checkpoint.model_fingerprint(TINY, dataclasses.replace(SPECS["top_n"], dtype="float32",
                                                             master_dtype="float32"))
  b = checkpoint.model_fingerprint(TINY.replace(dtype="bfloat16"), dataclasses.replace(
      SPECS["top_n"], dtype="bfloat16", master_dtype="float32"))
  assert a == b
  assert a != checkpoint.model_fingerprint(TINY, SPECS["full"])


def test_a_checkpoint_restores_into_another_dtype(tmp_path):
  """A state saved in bfloat16 restores into a float32 template, with the
  values bfloat16 holds: the restore casts to the template's dtype."""
  fp = checkpoint.model_fingerprint(TINY, SPECS["full"])
  w = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8)), jnp.bfloat16)
  saver = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  saver.save(1, {"w": w}, {}, fp)
  saver.close()
  loader = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  state, _ = loader.restore(1, {"w": jnp.zeros((4, 8), jnp.float32)}, fp)
  loader.close()
  assert state["w"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(w, np.float32))


# ----------------------------------------------------------------------------- train step
# Each make_train_step costs seconds of XLA compile on CPU, so each compiled pair
# (micro_batches 1 and 2) is shared by several checks: the balanced and the ragged batch,
# and which params an update touches.

STEP_CASES = {  # case -> (trainable mode, aggregation)
    "top_n/token-mean": ("top_n", "token-mean"),
    "lora/seq-mean-token-mean": ("lora", "seq-mean-token-mean"),
}


@jax.jit
def _model_logprobs(params, tokens):
  return step_lib.token_logprobs_and_entropy(params, TINY, tokens)[0]


def _model_batch(params, seed, b=4, t=12, balanced=True):
  """A Batch whose log-probs come from the model itself (ratio 1 + noise)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, TINY.vocab_size, (b, t)).astype(np.int32)
  lp = np.asarray(_model_logprobs(params, jnp.asarray(tokens)))
  mask = np.zeros((b, t), np.float32)
  if balanced:     # both micro-batches of 2 rows hold 14 SLM tokens, every row some
    for r, (lo, hi) in enumerate([(2, 9), (4, 11), (3, 10), (5, 12)]):
      mask[r, lo:hi] = 1.0
  else:            # ragged, as rollouts are: 11 vs 3 tokens, and an empty episode
    mask[0, 2:11], mask[1, 5:7], mask[3, 1:4] = 1.0, 1.0, 1.0
  return step_lib.Batch(
      tokens=jnp.asarray(tokens), loss_mask=jnp.asarray(mask),
      old_logprobs=jnp.asarray(lp + rng.normal(0, 0.1, lp.shape).astype(np.float32)),
      ref_logprobs=jnp.asarray(lp + rng.normal(0, 0.3, lp.shape).astype(np.float32)),
      advantages=jnp.asarray(rng.normal(0, 1, b).astype(np.float32)))


@pytest.fixture(scope="module", params=sorted(STEP_CASES))
def step_case(request, tiny_params):
  """(spec, trainable, frozen, {micro_batches: SGD(lr=1) step}): new - old = -gradient."""
  mode, aggregation = STEP_CASES[request.param]
  spec = SPECS[mode]
  trainable, frozen = trainable_lib.init(spec, tiny_params, jax.random.PRNGKey(0))
  if mode == "lora":   # B = 0 would make A's gradient 0; move away from the init
    trainable = jax.tree.map(lambda x: x + 0.05, trainable)
  steps = {}
  for m in (1, 2):
    step_spec = step_lib.StepSpec(model=TINY, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                                  aggregation=aggregation, kl_method="k3", kl_beta=0.1,
                                  micro_batches=m)
    steps[m] = step_lib.make_train_step(step_spec, optax.sgd(1.0))
  return spec, trainable, frozen, steps


def _gradient(step, trainable, frozen, batch):
  new, _, metrics = step(jax.tree.map(jnp.array, trainable), frozen,
                         optax.sgd(1.0).init(trainable), batch)
  return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), trainable, new), new, metrics


def test_a_train_step_changes_only_the_trainable_part(step_case, tiny_params):
  spec, trainable, frozen, steps = step_case
  _, new, metrics = _gradient(steps[1], trainable, frozen, _model_batch(tiny_params, 0))
  assert float(metrics["grad_norm"]) > 0
  before = trainable_lib.merge(spec, trainable, frozen)
  after = trainable_lib.merge(spec, new, frozen)
  np.testing.assert_array_equal(after["embed"], before["embed"])
  for name, x in before["layers"].items():
    changed = np.any(np.asarray(after["layers"][name]) != np.asarray(x),
                     axis=tuple(range(1, x.ndim))).tolist()          # per layer
    if spec.mode == "top_n":
      assert changed == [False, True, True], name
    else:
      assert changed == [name in spec.lora_targets] * 3, name
  assert np.any(after["final_norm"] != before["final_norm"]) == (spec.mode == "top_n")


def test_two_micro_batches_give_the_full_batch_gradient(step_case, tiny_params):
  spec, trainable, frozen, steps = step_case
  batch = _model_batch(tiny_params, 1, balanced=True)
  g1, _, m1 = _gradient(steps[1], trainable, frozen, batch)
  g2, _, m2 = _gradient(steps[2], trainable, frozen, batch)
  assert float(m1["grad_norm"]) > 1e-3
  np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)


def test_two_micro_batches_give_the_full_batch_gradient_with_ragged_masks(step_case,
                                                                         tiny_params):
  """Rollout batches have ragged masks: micro-batching (a memory knob) must not change
  the loss. Each micro-batch's mean must be weighted by its share of the batch's tokens
  (token-mean, and the KL term) or of its non-empty episodes (seq-mean-*)."""
  spec, trainable, frozen, steps = step_case
  batch = _model_batch(tiny_params, 2, balanced=False)
  g1, _, m1 = _gradient(steps[1], trainable, frozen, batch)
  g2, _, _ = _gradient(steps[2], trainable, frozen, batch)
  assert float(m1["grad_norm"]) > 1e-3
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)


def test_the_step_scores_at_the_sampler_temperature(tiny_params):
  """Old log-probs recorded by a sampler at temperature 0.7 (log softmax(logits / 0.7)):
  a step built for that temperature starts at ratio 1 and clips nothing; one scoring at
  temperature 1 sees ratios away from 1 before it has changed anything."""
  rng = np.random.default_rng(9)
  b, t = 4, 12
  tokens = jnp.asarray(rng.integers(0, TINY.vocab_size, (b, t)).astype(np.int32))
  tempered = step_lib.token_logprobs_and_entropy(tiny_params, TINY, tokens, temperature=0.7)[0]
  mask = np.zeros((b, t), np.float32)
  mask[:, 3:10] = 1.0
  batch = step_lib.Batch(tokens=tokens, loss_mask=jnp.asarray(mask), old_logprobs=tempered,
                         ref_logprobs=tempered,
                         advantages=jnp.asarray(rng.normal(0, 1, b).astype(np.float32)))
  ratios = {}
  for temperature in (0.7, 1.0):
    spec = step_lib.StepSpec(model=TINY, trainable=SPECS["full"], epsilon=0.2,
                             epsilon_high=0.28, aggregation="token-mean", kl_method="k3",
                             kl_beta=0.1, temperature=temperature)
    step = step_lib.make_train_step(spec, optax.sgd(0.0))
    assert step.spec.temperature == temperature
    _, _, m = step(jax.tree.map(jnp.array, tiny_params), {}, optax.sgd(0.0).init(tiny_params),
                   batch)
    ratios[temperature] = (float(m["ratio_min"]), float(m["ratio_max"]),
                           float(m["clip_fraction"]), float(m["kl"]))
  lo, hi, clipped, kl = ratios[0.7]
  assert abs(lo - 1) < 1e-4 and abs(hi - 1) < 1e-4 and clipped == 0 and abs(kl) < 1e-6
  lo, hi, _, _ = ratios[1.0]
  assert hi - lo > 0.1, ratios


def test_a_run_context_refuses_a_step_scoring_at_another_temperature(tiny_model):
  from seekjax import configlib
  from seekjax.helpers import RuleLeakJudge
  from seekjax.rl import cycle
  from seekjax.rl.settings import rl_settings
  from seekjax.rollout import rollout_config
  from seekjax.run.setup import make_step
  from tests.scripted import ScriptedHelper
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  settings = rl_settings(configlib.load_config(os.path.join(root, "configs", "tiny_test.py")))
  spec = trainable_lib.Trainable(mode="full")
  trainable, frozen = trainable_lib.init(spec, tiny_model.params, jax.random.PRNGKey(0))
  step = make_step(settings, tiny_model.config, spec, optax.sgd(0.1), rollout_temperature=1.0)
  common = dict(settings=settings, model=tiny_model, spec=spec, frozen=frozen,
                helper=ScriptedHelper(), judge=RuleLeakJudge(), train_step=step)
  with pytest.raises(ValueError, match="temperature 1.0, but the rollout samples at 0.7"):
    cycle.RunContext(rollout_cfg=rollout_config(temperature=0.7), **common)
  cycle.RunContext(rollout_cfg=rollout_config(temperature=0.0), **common)   # greedy: 1


# ----------------------------------------------------------------------------- masked positions

FULL_SPEC = step_lib.StepSpec(model=TINY, trainable=SPECS["full"], epsilon=0.2,
                              epsilon_high=0.28, aggregation="token-mean", kl_method="k3",
                              kl_beta=0.1)


@jax.jit
def _loss_and_param_grad(params, batch):
  return jax.value_and_grad(lambda p: step_lib.loss_fn(p, {}, batch, FULL_SPEC)[0])(params)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_step_loss_has_exactly_zero_gradient_at_masked_logprobs(aggregation, tiny_params,
                                                                monkeypatch):
  """d loss / d logprobs of the step's loss_fn is exactly 0 wherever the mask is 0."""
  spec = FULL_SPEC.__class__(**dict(FULL_SPEC.__dict__, aggregation=aggregation))
  batch = _model_batch(tiny_params, 3, balanced=False)
  off = np.asarray(batch.loss_mask) == 0
  lp0 = _model_logprobs(tiny_params, batch.tokens)

  @jax.jit
  def grad_wrt_logprobs(lp, b):
    def loss(x):  # the step's own loss_fn, with the model's log-probs replaced by x
      monkeypatch.setattr(step_lib, "token_logprobs_and_entropy",
                          lambda *a, **k: (x, jnp.zeros_like(x)))
      return step_lib.loss_fn(tiny_params, {}, b, spec)[0]
    return jax.grad(loss)(lp)

  grad = np.asarray(grad_wrt_logprobs(lp0, batch))
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[off], 0.0)
  assert np.count_nonzero(grad[~off]) == (~off).sum()


def test_garbage_at_masked_positions_changes_neither_loss_nor_gradient(tiny_params):
  """Padding and feedback positions may hold anything (NaN, -inf) in old/ref log-probs."""
  batch = _model_batch(tiny_params, 3, balanced=False)
  off = np.asarray(batch.loss_mask) == 0
  v_clean, g_clean = _loss_and_param_grad(tiny_params, batch)
  for old_fill, ref_fill in ((np.nan, 0.0), (-np.inf, 0.0), (0.0, -np.inf), (0.0, np.nan)):
    bad = batch.replace(old_logprobs=jnp.where(off, old_fill, batch.old_logprobs),
                        ref_logprobs=jnp.where(off, ref_fill, batch.ref_logprobs))
    v_bad, g_bad = _loss_and_param_grad(tiny_params, bad)
    np.testing.assert_allclose(v_bad, v_clean, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_clean), jax.tree.leaves(g_bad)):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8,
                                 err_msg=f"old={old_fill} ref={ref_fill} at masked positions")


def test_tokens_after_the_last_trained_token_do_not_change_the_gradient(tiny_params):
  """Causality + masks: trailing padding (any ids) has no effect on the update."""
  batch = _model_batch(tiny_params, 4, balanced=True)
  tail = np.zeros(batch.tokens.shape, bool)
  for r, row in enumerate(np.asarray(batch.loss_mask)):
    tail[r, np.flatnonzero(row).max() + 1:] = True
  assert tail.any()
  other = batch.replace(tokens=jnp.where(tail, (batch.tokens + 7) % TINY.vocab_size,
                                         batch.tokens))
  (v1, g1), (v2, g2) = _loss_and_param_grad(tiny_params, batch), _loss_and_param_grad(
      tiny_params, other)
  np.testing.assert_allclose(v2, v1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-9)


def _compacted(batch):
  """The same batch with only its loss positions kept (what rl_iteration builds)."""
  targets, mask = step_lib.compact_positions(np.asarray(batch.loss_mask))
  pick = lambda x: jnp.asarray(step_lib.gather_positions(np.asarray(x), targets))  # noqa: E731
  return batch.replace(loss_mask=jnp.asarray(mask), old_logprobs=pick(batch.old_logprobs),
                       ref_logprobs=pick(batch.ref_logprobs), targets=jnp.asarray(targets))


def test_compact_positions_packs_each_rows_loss_positions_left():
  mask = np.zeros((3, 40), np.float32)
  mask[0, [3, 4, 9]] = 1.0
  mask[2, 5:22] = 1.0     # 17 positions -> K = 32
  targets, packed = step_lib.compact_positions(mask)
  assert targets.shape == packed.shape == (3, 32)
  assert targets[0, :3].tolist() == [3, 4, 9] and packed[0].tolist() == [1.0] * 3 + [0.0] * 29
  assert packed[1].sum() == 0 and targets[2, :17].tolist() == list(range(5, 22))
  assert step_lib.compact_positions(mask[:, :25])[0].shape == (3, 25)  # K <= T


@pytest.mark.parametrize("variant", [dict(), dict(arch="qwen2", qkv_bias=True),
                                     dict(arch="qwen3", qk_norm=True)])
@pytest.mark.parametrize("layout", ["stacked", "per_layer", "one_layer"])
def test_hidden_states_at_equals_the_full_pass_gathered(variant, layout):
  """The last layer run only at the read positions (queries there, keys and values
  everywhere) gives the full pass's states there, with padding keys masked, from tokens
  or from a given residual stream; gradients too."""
  cfg = TINY.replace(**variant)
  params = sj.random_model(cfg, seed=5).params
  if layout == "per_layer":
    params = packing.unstack_layers(params)
  elif layout == "one_layer":  # no layer below the last
    params = dict(params, layers=jax.tree.map(lambda a: a[-1:], params["layers"]))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (3, 12)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(12), (3, 12))
  at = jnp.asarray(rng.integers(0, 12, (3, 5)), jnp.int32)
  key_mask = jnp.asarray(rng.random((3, 12)) > 0.2).at[:, 0].set(True)
  inputs = jnp.asarray(rng.standard_normal((3, 12, cfg.hidden_size)), jnp.float32)
  for kw in (dict(key_mask=key_mask), dict(inputs=inputs), dict(remat=True)):
    full = lambda p, kw=kw: jnp.take_along_axis(  # noqa: E731
        decoder.hidden_states(p, cfg, tokens, positions, **kw)[0], at[..., None], axis=1)
    part = lambda p, kw=kw: decoder.hidden_states_at(p, cfg, tokens, positions, at, **kw)  # noqa: E731
    np.testing.assert_allclose(part(params), full(params), rtol=1e-5, atol=1e-5)
    g_full = jax.grad(lambda p: jnp.sum(jnp.sin(full(p))))(params)
    g_part = jax.grad(lambda p: jnp.sum(jnp.sin(part(p))))(params)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_part)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)  # float32 sums in another order


def test_query_blocks_bound_causal_attention():
  assert attention.query_blocks(100) == (0, 100)
  assert attention.query_blocks(256) == (0, 128, 256)
  assert attention.query_blocks(640) == (0, 160, 320, 480, 640)
  assert attention.query_blocks(1000) == (0, 248, 496, 744, 1000)  # bounds multiples of 8


def test_causal_blocks_give_the_masked_passs_states_and_gradients(monkeypatch):
  """`causal=True` (attention in 4 query blocks that skip later keys) gives the full masked
  pass's states and gradients, also through `hidden_states_at` and remat; and the update's
  `_states_for` uses it. (2 blocks run the same loop: `query_blocks` is tested above.)"""
  t = 520
  cfg = TINY.replace(max_position_embeddings=1024)
  params = sj.random_model(cfg, seed=6).params
  rng = np.random.default_rng(2)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, t)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(t), (2, t))
  at = jnp.asarray(rng.integers(0, t, (2, 7)), jnp.int32)
  assert len(attention.query_blocks(t)) - 1 == 4
  for kw in (dict(), dict(remat=True)):
    for fn in (lambda p, **k: decoder.hidden_states(p, cfg, tokens, positions, **k)[0],
               lambda p, **k: decoder.hidden_states_at(p, cfg, tokens, positions, at, **k)):
      plain = jax.jit(lambda p, fn=fn, kw=kw: fn(p, **kw))
      blocked = jax.jit(lambda p, fn=fn, kw=kw: fn(p, causal=True, **kw))
      np.testing.assert_allclose(blocked(params), plain(params), rtol=1e-5, atol=1e-5)
      g_plain = jax.grad(lambda p, f=plain: jnp.sum(jnp.sin(f(p))))(params)
      g_blocked = jax.grad(lambda p, f=blocked: jnp.sum(jnp.sin(f(p))))(params)
      for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_blocked)):
        # float32 sums over t positions in another order: rounding scales with the leaf
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5 + 1e-6 * float(jnp.max(abs(a))))
  with pytest.raises(ValueError, match="causal"):
    decoder.hidden_states(params, cfg, tokens, positions, causal=True,
                          key_mask=jnp.ones((2, t), bool))
  seen, real = [], attention.causal_attention
  monkeypatch.setattr(attention, "causal_attention",
                      lambda *a: seen.append(a[0].shape) or real(*a))
  step_lib._states_for(params, cfg, tokens, at)
  assert seen and set(seen) == {(2, t, 4, cfg.head_dim)}  # the scanned layers trace it once


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_loss_on_compacted_positions_equals_the_full_loss(aggregation, tiny_params):
  """Running the LM head only at the loss positions changes neither loss nor gradient."""
  spec = FULL_SPEC.__class__(**dict(FULL_SPEC.__dict__, aggregation=aggregation))
  fn = jax.jit(jax.value_and_grad(lambda p, b: step_lib.loss_fn(p, {}, b, spec)[0]))
  for balanced in (True, False):
    batch = _model_batch(tiny_params, 4, balanced=balanced)
    v_full, g_full = fn(tiny_params, batch)
    v_c, g_c = fn(tiny_params, _compacted(batch))
    np.testing.assert_allclose(v_c, v_full, rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_c)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)


def test_compacted_train_step_with_micro_batches_equals_the_full_one(step_case, tiny_params):
  spec, trainable, frozen, steps = step_case
  batch = _model_batch(tiny_params, 2, balanced=False)
  if spec.mode == "top_n":  # as rl_iteration: the frozen bottom runs once, outside
    hidden = step_lib.bottom_hidden(frozen, batch.tokens, cfg=TINY)
    batch = batch.replace(hidden=hidden)
  g_full, _, m_full = _gradient(steps[2], trainable, frozen, batch)
  g_c, _, m_c = _gradient(steps[2], trainable, frozen, _compacted(batch))
  np.testing.assert_allclose(m_c["loss"], m_full["loss"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m_c["entropy"], m_full["entropy"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_c)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)
