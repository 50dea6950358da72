"""seekjax.rl.advantages and seekjax.rl.losses against direct numpy computations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seekjax.rl import advantages, losses

AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


# ----------------------------------------------------------------------------- numpy references


def np_advantages(r, g, name, valid=None, eps=1e-6):
  r = np.asarray(r, np.float64)
  valid = np.ones_like(r) if valid is None else np.asarray(valid, np.float64)
  out = np.zeros_like(r)
  for start in range(0, len(r), g):
    idx = [i for i in range(start, start + g) if valid[i] > 0]
    x = r[idx]
    if not idx:
      continue
    if name == "grpo":
      out[idx] = (x - x.mean()) / (x.std() + eps)
    elif name == "drgrpo":
      out[idx] = x - x.mean()
    elif name == "rloo":
      out[idx] = [xi - np.delete(x, k).mean() if len(x) > 1 else 0.0 for k, xi in enumerate(x)]
  return out


def np_aggregate(per_token, mask, aggregation):
  mask = mask.astype(np.float64)
  rows = mask.sum(1) > 0
  if aggregation == "token-mean":
    return (per_token * mask).sum() / mask.sum()
  if aggregation == "seq-mean-token-mean":
    return np.mean([(per_token[b] * mask[b]).sum() / mask[b].sum() for b in np.flatnonzero(rows)])
  return np.mean([(per_token[b] * mask[b]).sum() for b in np.flatnonzero(rows)])


def np_policy_loss(lp, old, adv, mask, eps, eps_high, aggregation, tis=None):
  ratio = np.exp(lp - old)
  a = adv[:, None]
  per_token = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - eps, 1 + eps_high))
  if tis is not None:
    sampler, cap = tis
    per_token = per_token * np.minimum(np.exp(old - sampler), cap)
  return np_aggregate(per_token, mask, aggregation)


def np_kl(lp, ref, method):
  d = lp.astype(np.float64) - ref
  return {"k1": d, "k2": 0.5 * d * d, "k3": np.exp(-d) + d - 1}[method]


def _batch(seed, b=6, t=9):
  rng = np.random.default_rng(seed)
  lp = rng.normal(-2.0, 0.6, (b, t)).astype(np.float32)
  old = (lp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
  mask = (rng.random((b, t)) < 0.6).astype(np.float32)
  mask[0] = 0.0                                   # an episode with no SLM tokens
  mask[1, 0] = 1.0
  adv = rng.normal(0, 1, b).astype(np.float32)
  return lp, old, adv, mask


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("whiten", [False, True])
def test_advantages_match_numpy(name, whiten):
  rng = np.random.default_rng(0)
  r = rng.normal(size=12).astype(np.float32)
  got = advantages.get_advantage_fn(name)(r, 4, whiten=whiten)
  want = np_advantages(r, 4, name)
  if whiten:
    want = (want - want.mean()) / (want.std() + 1e-6)
  assert got.dtype == jnp.float32 and got.shape == (12,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_advantage_properties():
  r = jnp.array([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
  for name in ("grpo", "drgrpo", "rloo"):
    adv = advantages.get_advantage_fn(name)(r, 4)
    np.testing.assert_allclose(adv.reshape(2, 4).sum(1), 0.0, atol=1e-5)  # zero-sum groups
    np.testing.assert_array_equal(adv[4:], 0.0)                          # no signal, no push
    assert adv[0] > 0 > adv[1]
  # RLOO is the mean-baseline advantage scaled by G / (G - 1).
  np.testing.assert_allclose(advantages.get_advantage_fn("rloo")(r, 4),
                             advantages.get_advantage_fn("drgrpo")(r, 4) * 4 / 3, rtol=1e-6)
  # Jittable with a static group size.
  jitted = jax.jit(advantages.get_advantage_fn("grpo"), static_argnums=1)
  np.testing.assert_allclose(jitted(r, 4), advantages.get_advantage_fn("grpo")(r, 4), atol=1e-6)


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_invalid_episodes_leave_the_baseline_and_get_zero(name):
  rng = np.random.default_rng(1)
  r = rng.normal(size=12).astype(np.float32)
  valid = np.ones(12, np.float32)
  valid[[1, 6, 7]] = 0.0
  r_bad = r.copy()
  r_bad[[1, 6, 7]] = [1e6, np.nan, -1e6]          # whatever an invalid episode "scored"
  got = advantages.get_advantage_fn(name)(r_bad, 4, valid=valid)
  np.testing.assert_allclose(got, np_advantages(r, 4, name, valid), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[[1, 6, 7]], 0.0)


def test_advantage_errors():
  with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; valid: drgrpo, grpo, rloo"):
    advantages.get_advantage_fn("ppo")
  with pytest.raises(ValueError, match="do not split into groups of 4"):
    advantages.get_advantage_fn("grpo")(jnp.zeros(6), 4)


# ----------------------------------------------------------------------------- policy loss


@pytest.mark.parametrize("aggregation", AGGS)
def test_policy_loss_matches_numpy(aggregation):
  lp, old, adv, mask = _batch(0)
  loss, metrics = losses.policy_loss(lp, old, adv, mask, epsilon=0.2, epsilon_high=0.28,
                                     aggregation=aggregation)
  want = np_policy_loss(lp, old, adv, mask, 0.2, 0.28, aggregation)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  ratio = np.exp(lp - old)[mask > 0]
  a = np.broadcast_to(adv[:, None], lp.shape)[mask > 0]
  clipped = ((ratio > 1.28) & (a > 0)) | ((ratio < 0.8) & (a < 0))
  assert 0 < metrics["clip_fraction"] < 1
  np.testing.assert_allclose(metrics["clip_fraction"], clipped.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"], ratio.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["ratio_max"], ratio.max(), rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_min"], ratio.min(), rtol=1e-6)


def test_policy_loss_asymmetric_clip_and_gradients():
  # One token per episode; ratios either side of the clip range, advantages of both signs.
  lp = jnp.log(jnp.array([[1.25], [1.35], [0.85], [0.75], [1.0]]))
  old = jnp.zeros_like(lp)
  adv = jnp.array([1.0, 1.0, -1.0, -1.0, 2.0])
  mask = jnp.ones_like(lp)
  grad = jax.grad(lambda x: losses.policy_loss(x, old, adv, mask, epsilon=0.2,
                                               epsilon_high=0.3)[0])(lp)[:, 0]
  n = 5
  # d/dlp of -A * r / n = -A * r / n when unclipped; zero when the clip is active.
  np.testing.assert_allclose(grad, [-1.25 / n, 0.0, 0.85 / n, 0.0, -2.0 / n], rtol=1e-5)


def test_truncated_importance_sampling_matches_numpy_and_has_no_gradient():
  lp, old, adv, mask = _batch(2)
  sampler = old + np.random.default_rng(3).normal(0, 0.5, old.shape).astype(np.float32)
  loss, metrics = losses.policy_loss(lp, old, adv, mask, epsilon=0.2, tis_cap=1.5,
                                     sampler_logprobs=sampler)
  np.testing.assert_allclose(loss, np_policy_loss(lp, old, adv, mask, 0.2, 0.2, "token-mean",
                                                  (sampler, 1.5)), rtol=1e-5)
  assert 0 < metrics["tis_truncated_fraction"] < 1
  g = jax.grad(lambda s: losses.policy_loss(lp, old, adv, mask, epsilon=0.2, tis_cap=1.5,
                                            sampler_logprobs=s)[0])(jnp.asarray(sampler))
  np.testing.assert_array_equal(g, 0.0)
  with pytest.raises(ValueError, match="needs both tis_cap and sampler_logprobs"):
    losses.policy_loss(lp, old, adv, mask, epsilon=0.2, sampler_logprobs=sampler)


@pytest.mark.parametrize("aggregation", AGGS)
def test_masked_tokens_get_exactly_zero_gradient(aggregation):
  lp, old, adv, mask = _batch(4)
  off = mask == 0
  # Garbage where the mask is 0 (padding may hold -inf / NaN log-probs).
  lp_bad, old_bad, ref_bad = lp.copy(), old.copy(), lp.copy() - 0.1
  lp_bad[off], old_bad[off], ref_bad[off] = -np.inf, np.nan, 50.0
  sampler = old_bad.copy()

  def total(x):
    pg, _ = losses.policy_loss(x, old_bad, adv, mask, epsilon=0.2, epsilon_high=0.28,
                               aggregation=aggregation, tis_cap=2.0, sampler_logprobs=sampler)
    kl = sum(losses.kl_loss(x, ref_bad, mask, beta=0.1, method=m, aggregation=aggregation)
             for m in losses.KL_METHODS)
    return pg + kl

  value, grad = jax.value_and_grad(total)(jnp.asarray(lp_bad))
  assert np.isfinite(value)
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[off], 0.0)
  assert np.count_nonzero(grad[~off]) > 0.8 * (~off).sum()
  # Masked garbage does not change the loss either.
  lp_ok, old_ok, ref_ok = lp.copy(), old.copy(), lp - 0.1
  clean = losses.policy_loss(lp_ok, old_ok, adv, mask, epsilon=0.2, epsilon_high=0.28,
                             aggregation=aggregation, tis_cap=2.0, sampler_logprobs=old_ok)[0]
  clean += sum(losses.kl_loss(lp_ok, ref_ok, mask, beta=0.1, method=m, aggregation=aggregation)
               for m in losses.KL_METHODS)
  np.testing.assert_allclose(value, clean, rtol=1e-5)


def test_aggregation_errors_and_masked_helpers():
  x = jnp.arange(6.0).reshape(2, 3)
  mask = jnp.array([[1, 0, 1], [0, 0, 0]])
  assert losses.masked_sum(x, mask) == 2.0
  assert losses.masked_mean(x, mask) == 1.0
  np.testing.assert_array_equal(losses.masked_mean(x, mask, axis=1), [1.0, 0.0])
  assert losses.masked_mean(x, jnp.zeros((2, 3))) == 0.0
  with pytest.raises(ValueError, match="unknown loss aggregation 'sum'; valid: seq-mean-token-mean"):
    losses.aggregate(x, mask, "sum")


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("method", losses.KL_METHODS)
def test_kl_estimators_match_numpy(method):
  lp, ref, _, mask = _batch(5)
  np.testing.assert_allclose(losses.kl_divergence(lp, ref, method), np_kl(lp, ref, method),
                             rtol=1e-4, atol=1e-6)
  want_seq = (np_kl(lp, ref, method) * mask).sum(1)
  np.testing.assert_allclose(losses.kl_in_reward(lp, ref, mask, method=method), want_seq,
                             rtol=1e-4, atol=1e-6)
  for agg in AGGS:
    np.testing.assert_allclose(
        losses.kl_loss(lp, ref, mask, beta=0.5, method=method, aggregation=agg),
        0.5 * np_aggregate(np_kl(lp, ref, method), mask, agg), rtol=1e-4, atol=1e-6)


def test_kl_method_is_required_and_checked():
  x = jnp.zeros((1, 2))
  with pytest.raises(TypeError):
    losses.kl_divergence(x, x)  # pylint: disable=no-value-for-parameter
  with pytest.raises(TypeError):
    losses.kl_loss(x, x, x, beta=0.1)  # pylint: disable=missing-kwoa
  with pytest.raises(ValueError, match="unknown KL estimator 'k4'; valid: k1, k2, k3"):
    losses.kl_divergence(x, x, "k4")


def test_kl_is_zero_at_the_reference_and_grows_away_from_it():
  """Exact expectations over a 4-token policy pi_s = softmax(ref + s * direction)."""
  ref_logits = jnp.array([0.3, -0.2, 0.1, 0.0])
  direction = jnp.array([-1.0, 0.0, 2.0, 0.5])
  ref_lp = jax.nn.log_softmax(ref_logits)[None]                  # [1, 4]: every token
  expected = {m: [] for m in losses.KL_METHODS}
  true_kl = []
  for s in (0.0, 0.25, 0.5, 1.0, 2.0):
    lp = jax.nn.log_softmax(ref_logits + s * direction)[None]
    p = jnp.exp(lp)
    true_kl.append(float(jnp.sum(p * (lp - ref_lp))))
    for m in losses.KL_METHODS:
      per_token = losses.kl_divergence(lp, ref_lp, m)
      if s == 0.0:
        np.testing.assert_array_equal(per_token, 0.0)
      if m == "k1" and s > 0:
        assert float(per_token.min()) < 0                       # k1 can be negative per token
      if m in ("k2", "k3"):
        assert float(per_token.min()) >= 0
      expected[m].append(float(jnp.sum(p * per_token)))         # E_{x ~ pi}[estimator]
  for m in losses.KL_METHODS:
    assert expected[m][0] == 0.0
    assert all(a < b for a, b in zip(expected[m], expected[m][1:])), (m, expected[m])
  np.testing.assert_allclose(expected["k1"], true_kl, rtol=1e-5, atol=1e-7)   # unbiased
  np.testing.assert_allclose(expected["k3"], true_kl, rtol=1e-4, atol=1e-7)   # unbiased


# ----------------------------------------------------------------------------- log-probs


def test_logprobs_and_entropy_match_numpy():
  """Log-probs and entropies off given logits (`head_logprobs_and_entropy` gives the same
  from the head's states): logits[:, k] predicts ids[:, k]."""
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  tokens = rng.integers(0, 7, (2, 5)).astype(np.int32)
  got, ent = losses.logprobs_and_entropy(jnp.asarray(logits[:, :-1]), jnp.asarray(tokens[:, 1:]))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = np.zeros((2, 4), np.float32)
  for b in range(2):
    for t in range(1, 5):
      want[b, t - 1] = logp[b, t - 1, tokens[b, t]]    # logits at t-1 predict the token at t
  assert got.shape == ent.shape == (2, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ent, -(np.exp(logp) * logp).sum(-1)[:, :-1], rtol=1e-5)


def test_logprobs_and_entropy_at_a_temperature_match_numpy():
  """At temperature T the trainer scores under softmax(logits / T), the distribution a
  sampler at T draws from (`sampling.sample_token` records log softmax(logits / T))."""
  rng = np.random.default_rng(8)
  logits = (rng.normal(size=(2, 4, 9)) * 2).astype(np.float32)
  ids = rng.integers(0, 9, (2, 4)).astype(np.int32)
  for t in (0.7, 1.3):
    got, ent = losses.logprobs_and_entropy(jnp.asarray(logits), jnp.asarray(ids), t)
    z = logits.astype(np.float64) / t
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, np.take_along_axis(logp, ids[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ent, -(np.exp(logp) * logp).sum(-1), rtol=1e-5)


def test_logprobs_and_entropy_gradients_match_numpy_and_survive_large_logits():
  """Gradients of sum(g * logprob) + sum(h * entropy) against the closed forms
  d logp[id] / d logit = onehot(id) - p and d H / d logit = -p (log p + H); and logits
  offset by 1e4 (a shift the function must not see) give the same values."""
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(3, 11)).astype(np.float32) * 3
  ids = rng.integers(0, 11, 3).astype(np.int32)
  g = rng.normal(size=3).astype(np.float32)
  h = rng.normal(size=3).astype(np.float32)

  def objective(x):
    lp, ent = losses.logprobs_and_entropy(x, jnp.asarray(ids))
    return jnp.sum(lp * g) + jnp.sum(ent * h)

  grad = np.asarray(jax.grad(objective)(jnp.asarray(logits)))
  z = logits.astype(np.float64)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  p = np.exp(logp)
  entropy = -(p * logp).sum(-1)
  want = g[:, None] * (np.eye(11)[ids] - p) + h[:, None] * (-p * (logp + entropy[:, None]))
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)
  lp, ent = losses.logprobs_and_entropy(jnp.asarray(logits + 1e4), jnp.asarray(ids))
  np.testing.assert_allclose(lp, logp[np.arange(3), ids], rtol=1e-4, atol=2e-3)
  np.testing.assert_allclose(ent, entropy, rtol=1e-4, atol=2e-3)


def test_head_logprobs_and_entropy_match_numpy_with_gradients():
  """The trainer's head (`step._head_logprobs`): log-probs and entropy of softmax(x @ W / T)
  with its own backward pass, against numpy's closed forms: d sum(g * lp) / dx =
  g (W[:, id] - E_p[W]) / T and d / dW = x^T (g (onehot(id) - p)) / T; the entropy is a
  metric and carries no gradient."""
  rng = np.random.default_rng(11)
  x = rng.normal(size=(2, 3, 6)).astype(np.float32)
  w = (rng.normal(size=(6, 13)) * 0.7).astype(np.float32)
  ids = rng.integers(0, 13, (2, 3)).astype(np.int32)
  g = rng.normal(size=(2, 3)).astype(np.float32)
  for t in (1.0, 0.7):
    z = np.einsum("btd,dv->btv", x.astype(np.float64), w) / t
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(logp)
    lp, ent = losses.head_logprobs_and_entropy(jnp.asarray(x), jnp.asarray(w), jnp.asarray(ids), t)
    np.testing.assert_allclose(lp, np.take_along_axis(logp, ids[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, -(p * logp).sum(-1), rtol=1e-5, atol=1e-5)

    def objective(x, w, h=0.0):
      lp, ent = losses.head_logprobs_and_entropy(x, w, jnp.asarray(ids), t)
      return jnp.sum(lp * g) + h * jnp.sum(ent)

    dx, dw = jax.grad(objective, (0, 1))(jnp.asarray(x), jnp.asarray(w))
    dlogits = g[..., None] * (np.eye(13)[ids] - p) / t
    np.testing.assert_allclose(dx, np.einsum("btv,dv->btd", dlogits, w), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, np.einsum("btd,btv->dv", x, dlogits), rtol=1e-4, atol=1e-5)
    with_entropy = jax.grad(objective, (0, 1))(jnp.asarray(x), jnp.asarray(w), 5.0)
    np.testing.assert_allclose(with_entropy[0], dx, rtol=1e-6)
    np.testing.assert_allclose(with_entropy[1], dw, rtol=1e-6)


# ----------------------------------------------------------------------------- end to end


def test_grpo_one_token_bandit_learns_the_rewarded_token():
  """Softmax policy over 4 tokens; reward 1 for token 2; GRPO + PPO-clip with SGD."""
  groups, g = 8, 8
  adv_fn = advantages.get_advantage_fn("grpo")
  opt = optax.sgd(0.5)

  @jax.jit
  def step(theta, opt_state, key):
    logp = jax.nn.log_softmax(theta)
    actions = jax.random.categorical(key, theta, shape=(groups * g,))
    rewards = (actions == 2).astype(jnp.float32)
    adv = adv_fn(rewards, g)
    old = logp[actions][:, None]
    mask = jnp.ones((groups * g, 1))

    def loss_fn(th):
      lp = jax.nn.log_softmax(th)[actions][:, None]
      return losses.policy_loss(lp, old, adv, mask, epsilon=0.2, epsilon_high=0.28)[0]

    grads = jax.grad(loss_fn)(theta)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(theta, updates), opt_state

  theta = jnp.zeros(4)
  opt_state = opt.init(theta)
  probs = [float(jax.nn.softmax(theta)[2])]
  for key in jax.random.split(jax.random.key(0), 15):
    theta, opt_state = step(theta, opt_state, key)
    probs.append(float(jax.nn.softmax(theta)[2]))
  assert probs[0] == pytest.approx(0.25)
  assert probs[-1] > 0.9, probs
  assert probs[5] > probs[0]
