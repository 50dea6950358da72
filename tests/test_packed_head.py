"""The LM head on packed loss positions (`step.head_positions`, `step.balance_rows`) gives
the unpacked reference log-probs and train step; a frozen head's own backward pass gives
autodiff's step; and a rollout's decode params built on
the frozen part's packed copy (`packing.extend_decode_params`) equal a fresh build."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seekjax as sj
from seekjax.models import packing
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rl.update import head_minimum

TINY = sj.ModelConfig(arch="llama", vocab_size=97, hidden_size=32, num_layers=3, num_heads=4,
                      num_kv_heads=2, head_dim=8, intermediate_size=48, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=64)
ROWS, WIDTH = 8, 24


def _batch(seed):
  """Ragged loss masks (1 to 15 positions a row, one empty row), compacted as the trainer
  does: targets [B, K] with K = 16."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, TINY.vocab_size, (ROWS, WIDTH)).astype(np.int32)
  mask = np.zeros((ROWS, WIDTH), np.float32)
  for r, n in enumerate((15, 2, 9, 0, 1, 12, 5, 7)):
    mask[r, rng.choice(np.arange(4, WIDTH), n, replace=False)] = 1.0
  lp = -rng.uniform(0.5, 4.0, (ROWS, WIDTH)).astype(np.float32) * mask
  targets, cmask = step_lib.compact_positions(mask)
  pick = lambda x: jnp.asarray(step_lib.gather_positions(x, targets))  # noqa: E731
  return step_lib.Batch(tokens=jnp.asarray(tokens), loss_mask=jnp.asarray(cmask),
                        old_logprobs=pick(lp), ref_logprobs=pick(lp * 1.1),
                        advantages=jnp.asarray(rng.normal(0, 1, ROWS), jnp.float32),
                        targets=jnp.asarray(targets))


def test_head_positions_and_balanced_rows_by_hand():
  mask = np.zeros((4, 16), np.float32)
  for r, n in enumerate((10, 1, 9, 2)):
    mask[r, :n] = 1.0
  # strided micro-batches {0, 2} and {1, 3}: 19 and 3 entries -> 16 * 2 = 32
  assert step_lib.head_positions(mask, 2, 16) == 32
  order = step_lib.balance_rows(mask, 2)
  assert sorted(order.tolist()) == [0, 1, 2, 3]
  counts = mask[order].sum(axis=1)
  assert sorted([counts[0::2].sum(), counts[1::2].sum()]) == [11, 11]   # 10 + 1, 9 + 2
  assert step_lib.head_positions(mask[order], 2, 16) == 16
  assert step_lib.balance_rows(mask, 3).tolist() == [0, 1, 2, 3]   # 3 does not divide 4
  # half of each micro-batch's loss positions, to a multiple of 16, at most rows x K
  assert head_minimum(4, 192, 192) == 384 and head_minimum(1, 20, 16) == 16
  assert head_minimum(3, 21, 32) == 32


@pytest.mark.parametrize("mode", ["top_n", "full"])
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_packed_head_gives_the_unpacked_step_and_reference(mode, aggregation):
  params = sj.random_model(TINY, seed=3).params
  spec = trainable_lib.Trainable(mode=mode, top_n=1)
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
  batch = _batch(0)
  order = step_lib.balance_rows(batch.loss_mask, 2)
  batch = jax.tree.map(lambda x: x[order], batch)
  if mode == "top_n":
    batch = batch.replace(hidden=step_lib.bottom_hidden(frozen, batch.tokens, cfg=TINY))
  n = step_lib.head_positions(batch.loss_mask, 2, 16)
  assert n < ROWS // 2 * batch.targets.shape[1]   # shorter than the unpacked rows x K
  mask = np.asarray(batch.loss_mask)

  ref = dict(spec_trainable=spec, cfg=TINY, targets=batch.targets, micro_batches=2)
  plain = step_lib.reference_logprobs(trainable, frozen, batch.tokens, batch.hidden, **ref)
  packed = step_lib.reference_logprobs(trainable, frozen, batch.tokens, batch.hidden, **ref,
                                       mask=batch.loss_mask, head_positions=n)
  np.testing.assert_allclose(np.asarray(packed) * mask, np.asarray(plain) * mask,
                             rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(packed)[mask == 0] == 0.0)

  step_spec = step_lib.StepSpec(model=TINY, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                                aggregation=aggregation, kl_method="k3", kl_beta=0.1,
                                micro_batches=2)
  step = step_lib.make_train_step(step_spec, optax.sgd(1.0))
  outs = [step(jax.tree.map(jnp.array, trainable), frozen, optax.sgd(1.0).init(trainable),
               batch, head_positions=h) for h in (None, n)]
  (new_plain, _, m_plain), (new_packed, _, m_packed) = outs
  assert float(m_plain["grad_norm"]) > 1e-4
  for key in ("loss", "kl", "entropy", "grad_norm", "clip_fraction"):
    np.testing.assert_allclose(m_packed[key], m_plain[key], rtol=1e-5, atol=1e-7, err_msg=key)
  for a, b in zip(jax.tree.leaves(new_plain), jax.tree.leaves(new_packed)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["top_n", "lora"])
def test_a_frozen_heads_own_backward_gives_autodiffs_step(mode, monkeypatch):
  """Where the head is frozen the step runs `losses.head_logprobs_and_entropy` (its own
  backward pass); the same step with autodiff through the logits (the form a trained head
  uses) gives the same metrics and updated params, packed and unpacked."""
  from seekjax.rl import losses  # pylint: disable=import-outside-toplevel
  params = sj.random_model(TINY, seed=4).params
  spec = trainable_lib.Trainable(mode=mode, top_n=1, lora_rank=4, lora_targets=("q", "down"))
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(1))
  if mode == "lora":   # LoRA's B starts at zero: move off it so every adapter has a gradient
    trainable = jax.tree.map(lambda a: a + 0.05, trainable)
  batch = _batch(1)
  if mode == "top_n":
    batch = batch.replace(hidden=step_lib.bottom_hidden(frozen, batch.tokens, cfg=TINY))
  n = step_lib.head_positions(batch.loss_mask, 2, 16)
  step_spec = step_lib.StepSpec(model=TINY, trainable=spec, epsilon=0.2, epsilon_high=0.28,
                                aggregation="token-mean", kl_method="k3", kl_beta=0.1,
                                micro_batches=2, temperature=0.7)

  def run():
    step = step_lib.make_train_step(step_spec, optax.sgd(1.0))
    return [step(jax.tree.map(jnp.array, trainable), frozen, optax.sgd(1.0).init(trainable),
                 batch, head_positions=h) for h in (None, n)]

  calls = []
  own = losses.head_logprobs_and_entropy
  monkeypatch.setattr(losses, "head_logprobs_and_entropy",
                      lambda *a, **k: calls.append(1) or own(*a, **k))
  mine = run()
  assert calls, "the frozen head did not take its own backward pass"
  monkeypatch.setattr(losses, "head_logprobs_and_entropy",
                      lambda x, head, ids, t=1.0: losses.logprobs_and_entropy(
                          jnp.einsum("...d,dv->...v", x, head), ids, t))
  theirs = run()
  for (new_a, _, m_a), (new_b, _, m_b) in zip(mine, theirs):
    assert float(m_a["grad_norm"]) > 1e-4
    for key in ("loss", "kl", "entropy", "grad_norm", "clip_fraction"):
      np.testing.assert_allclose(m_a[key], m_b[key], rtol=1e-5, atol=1e-7, err_msg=key)
    for a, b in zip(jax.tree.leaves(new_a), jax.tree.leaves(new_b)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_head_shorter_than_the_loss_entries_drops_them():
  """The caller must size the head (`head_positions`): a shorter one leaves the entries
  past it at 0, which is what this checks, so that the sizing test above can fail."""
  params = sj.random_model(TINY, seed=3).params
  batch = _batch(1)
  spec = trainable_lib.Trainable(mode="full")
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
  lp = step_lib.reference_logprobs(trainable, frozen, batch.tokens, None, spec_trainable=spec,
                                   cfg=TINY, targets=batch.targets, mask=batch.loss_mask,
                                   head_positions=16)
  assert int(np.sum(np.asarray(lp) != 0)) == 16 < int(np.sum(np.asarray(batch.loss_mask)))


def test_decode_params_on_the_frozen_part_equal_a_fresh_build():
  cfg = TINY.replace(vocab_size=128, hidden_size=64, intermediate_size=128, num_kv_heads=4,
                     head_dim=16)   # every dense width a multiple of 32: packable
  params = sj.random_model(cfg, seed=4).params
  spec = trainable_lib.Trainable(mode="top_n", top_n=1)
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
  trainable = jax.tree.map(lambda x: x + 0.01, trainable)   # as after an update
  fresh = packing.decode_params(trainable_lib.merge(spec, trainable, frozen))
  top = trainable_lib.compute_view(spec, trainable)
  built = packing.extend_decode_params(packing.decode_params(frozen), top["layers"],
                                       final_norm=top["final_norm"])
  assert jax.tree.structure(built) == jax.tree.structure(fresh)
  for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(built)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  assert ("head_packed" in built) == packing.pack_pays(frozen)
