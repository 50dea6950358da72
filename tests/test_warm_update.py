"""`update.warm_update` compiles the update at the ladder's other widths ahead of time: it
runs nothing (the state it is given is not donated), and a later step at one of those
widths, on the state a real update returned, compiles nothing."""
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seekjax import compiles, configlib, distributed
from seekjax.helpers import RuleLeakJudge
from seekjax.models import sharding
from seekjax.rl import cycle, trainable as trainable_lib, update
from seekjax.rl.settings import rl_settings
from seekjax.rollout import rollout_config
from seekjax.run.setup import make_step
from tests.scripted import ScriptedHelper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, LENGTH, K = 4, 192, 16
WIDTHS = (128, 192)


def _episodes(vocab: int):
  """Episodes as the update reads them: tokens, loss mask and sampler log-probs [B, L]."""
  rng = np.random.default_rng(0)
  mask = np.zeros((ROWS, LENGTH), np.float32)
  for i, end in enumerate((100, 120, 160, 190)):
    mask[i, end - 12:end] = 1.0
  return types.SimpleNamespace(
      tokens=rng.integers(1, vocab, (ROWS, LENGTH)).astype(np.int32), loss_mask=mask,
      logprobs=np.where(mask > 0, -1.0, 0.0).astype(np.float32), hidden=None)


def _update(ctx, trainable, opt_state, ref, episodes, width):
  """The reference pass and the PPO epochs at `width`, as `rl_iteration` runs them."""
  inputs = update.update_inputs(ctx, episodes, width, K)
  ref_lp = update.reference_pass(ctx, ref, inputs)
  batch = update.update_batch(ctx, inputs, ref_lp, np.array([1.0, -1.0, 0.5, -0.5], np.float32))
  opt_state = distributed.on_mesh(ctx.mesh, opt_state)
  return update.ppo_epochs(ctx, trainable, opt_state, batch, inputs.head_update)


@pytest.mark.parametrize("with_mesh", [False, True])
def test_warmed_widths_compile_nothing_later_and_nothing_runs(tiny_model, with_mesh,
                                                              monkeypatch):
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "tiny_test.py"))
  cfg.rl.update(group_size=2, micro_batches=2, mini_batches=2, num_epochs=2)
  settings = rl_settings(cfg)
  mesh = sharding.make_mesh() if with_mesh else None
  spec = trainable_lib.Trainable(mode="top_n", top_n=1)
  params = jax.tree.map(jnp.array, tiny_model.params)
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(trainable)
  if mesh is not None:
    trainable, opt_state = distributed.to_global(mesh, (trainable, opt_state))
  ref = jax.tree.map(jnp.array, trainable)
  ctx = cycle.RunContext(
      settings=settings, model=tiny_model, spec=spec, frozen=frozen, helper=ScriptedHelper(),
      judge=RuleLeakJudge(), rollout_cfg=rollout_config(prompt_width=64, group_size=2),
      train_step=make_step(settings, tiny_model.config, spec, optimizer,
                           rollout_temperature=rollout_config().temperature), mesh=mesh)
  episodes = _episodes(tiny_model.config.vocab_size)
  before = jax.tree.map(np.asarray, trainable)

  compiles.install()
  mark = compiles.snapshot()
  own = update.update_inputs(ctx, episodes, WIDTHS[0], K)
  # the LM head packs its positions when the rows are on one device
  assert (own.head_ref is None) == (with_mesh and jax.device_count() > 1)
  update.warm_update(ctx, trainable, opt_state, ref, episodes, WIDTHS, own, K)
  warmed, names = compiles.since(mark)
  assert warmed["compiles"] >= 2, names   # the reference pass and the step at width 192
  assert any("train_step" in n for n in names) and any("reference" in n for n in names)
  # the state it was given is not consumed (the step donates what it runs on)
  assert not any(x.is_deleted() for x in jax.tree.leaves((trainable, opt_state)))

  trainable, opt_state, _ = _update(ctx, trainable, opt_state, ref, episodes, WIDTHS[0])
  assert any(not np.array_equal(a, np.asarray(b)) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(trainable)))   # a real update
  mark = compiles.snapshot()
  trainable, opt_state, metrics = _update(ctx, trainable, opt_state, ref, episodes, WIDTHS[1])
  later, names = compiles.since(mark)
  assert later["compiles"] == 0, names
  assert all(np.isfinite(float(m["loss"])) for m in metrics)

  # a later step's warm-up finds every width done: it does not even build their inputs
  built = []
  real = update.update_inputs
  monkeypatch.setattr(update, "update_inputs", lambda *a, **k: built.append(a[2]) or real(*a, **k))
  update.warm_update(ctx, trainable, opt_state, ref, episodes, WIDTHS, own, K)
  assert built == []
