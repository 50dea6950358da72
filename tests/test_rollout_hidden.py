"""The rollout keeps the frozen bottom layers' output of every token it writes, and top_n
training reuses it: it equals `step.bottom_hidden` on the episodes' tokens, and an RL
iteration that reads it equals one that runs the bottom layers again."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seekjax as sj
from seekjax import configlib
from seekjax.helpers import RuleLeakJudge
from seekjax.helpers.base import HelperReply
from seekjax.rl import cycle, step as step_lib, trainable as trainable_lib
from seekjax.rl.settings import rl_settings
from seekjax.rollout import engine, rollout, rollout_config
from seekjax.run.setup import make_step
from tests.scripted import FEEDBACK, SYSTEM, ScriptedHelper, feedback_text, overfit, script_ids

pytestmark = pytest.mark.trajectory   # the scripted model is an overfit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["What is the capital of Eritrea?", "Where is Asmara?"]
TURNS = ["<think>No idea.</think><message>capital of Eritrea?</message>",
         "<think>Got it.</think><answer>Asmara</answer>"]
LAYERS, TOP_N = 4, 2
FROZEN = LAYERS - TOP_N


@pytest.fixture(scope="module")
def scripted4(smollm_tokenizer):
  """A 4-layer random Llama overfit to ask once, then answer (feedback chunks happen)."""
  tok = smollm_tokenizer
  cfg = sj.ModelConfig(arch="llama", vocab_size=tok.vocab_size, hidden_size=64,
                       num_layers=LAYERS, num_heads=4, num_kv_heads=2, head_dim=16,
                       intermediate_size=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_embeddings=True, max_position_embeddings=1024)
  model = sj.random_model(cfg, seed=0, tokenizer=tok)
  fb = feedback_text(tok, HelperReply("info", FEEDBACK))
  seqs, masks = zip(*[script_ids(tok, q, TURNS, fb)[1:] for q in QUESTIONS])
  model, loss = overfit(model, list(seqs), list(masks), until=0.05, max_steps=400)
  assert loss < 0.05, loss
  return model


def _cfg(**kw):
  base = dict(max_turns=2, max_new_tokens=40, max_message_tokens=32, temperature=1.0,
              max_steps_per_call=16, max_feedback_tokens=48, helper_timeout=10.0,
              system_prompt=SYSTEM, group_size=2)
  base.update(kw)
  return rollout_config(**base)


def _frozen(model):
  return trainable_lib.init(trainable_lib.Trainable(mode="top_n", top_n=TOP_N), model.params,
                            jax.random.PRNGKey(0))[1]


def test_captured_hidden_equals_the_frozen_layers_forward_and_waves_carry_it(scripted4):
  eps = rollout(scripted4, QUESTIONS, ScriptedHelper(), _cfg(), 0, capture_layer=FROZEN)
  assert (eps.num_messages > 0).sum() >= 2, eps.num_messages   # feedback chunks appended
  assert eps.hidden.shape == eps.tokens.shape + (64,) and eps.hidden.dtype == np.float32
  want = np.asarray(step_lib.bottom_hidden(_frozen(scripted4), eps.tokens, cfg=scripted4.config))
  scale = np.abs(want).max()   # the residual grows to tens: float32 rounds at 1e-5 of it
  for i, n in enumerate(eps.lengths):   # prompt, sampled tokens and feedback alike
    np.testing.assert_allclose(eps.hidden[i, :n], want[i, :n], atol=1e-5 * scale, rtol=1e-5)
    assert not eps.hidden[i, n:].any()
  waved = rollout(scripted4, QUESTIONS, ScriptedHelper(), _cfg(max_rows_per_device=2), 0,
                  capture_layer=FROZEN)
  np.testing.assert_array_equal(waved.tokens, eps.tokens)
  np.testing.assert_allclose(waved.hidden, eps.hidden, atol=1e-5 * scale, rtol=1e-5)


def test_without_capture_the_state_has_no_buffer(scripted4):
  spec = engine.EngineSpec(model=scripted4.config, max_len=64, turn_window=8, max_steps=4,
                           temperature=1.0, top_k=0, top_p=1.0, eos_ids=(0,))
  prompts, lens = jnp.ones((1, 8), jnp.int32), jnp.full((1,), 8, jnp.int32)
  args = (scripted4.params, prompts, lens, jax.random.PRNGKey(0), jnp.int32(0), jnp.int32(16))
  off = engine.prefill(*args, spec=spec, group=2)
  assert off.hidden is None
  on = engine.prefill(*args, spec=engine.EngineSpec(**dict(vars(spec), capture_layer=1)),
                      group=2)
  assert on.hidden.shape == (2, 64, 64)
  assert len(jax.tree.leaves(on)) == len(jax.tree.leaves(off)) + 1
  with pytest.raises(ValueError, match="capture_layer=5"):
    rollout(scripted4, QUESTIONS, ScriptedHelper(), _cfg(), 0, capture_layer=5)


def _iteration(model, reuse: bool):
  """One top_n rl_iteration, the reference a perturbed copy of the trainable part (so the
  KL and its gradient are not zero). Returns (metrics, new trainable)."""
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "tiny_test.py"))
  cfg.rl.update(group_size=2, micro_batches=2, num_epochs=2, kl_beta=0.1,
                reuse_rollout_hidden=reuse)
  spec = trainable_lib.Trainable(mode="top_n", top_n=TOP_N)
  params = jax.tree.map(jnp.array, model.params)   # the step donates; keep `model` intact
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(0))
  ref = jax.tree.map(lambda x: x * 1.05, trainable)
  optimizer = optax.sgd(0.1)   # updates linear in the gradient: parity stays at rounding
  settings = rl_settings(cfg)
  assert settings.reuse_rollout_hidden is reuse
  ctx = cycle.RunContext(settings=settings, model=model, spec=spec, frozen=frozen,
                         helper=ScriptedHelper(), judge=RuleLeakJudge(), rollout_cfg=_cfg(),
                         train_step=make_step(settings, model.config, spec, optimizer,
                                              rollout_temperature=_cfg().temperature))
  assert cycle.rollout_capture_layer(ctx) == (FROZEN if reuse else None)
  examples = [dict(question=q, answers=["Asmara"], private_facts=[], task="", kind="")
              for q in QUESTIONS]
  trainable, _, metrics, episodes, _ = cycle.rl_iteration(
      ctx, trainable, optimizer.init(trainable), ref, examples, jax.random.PRNGKey(3))
  assert episodes.hidden is None   # not kept past the batch
  return metrics, trainable, episodes


def test_rl_iteration_on_the_rollouts_hidden_equals_the_recomputed_one(scripted4):
  on, t_on, eps_on = _iteration(scripted4, True)
  off, t_off, eps_off = _iteration(scripted4, False)
  np.testing.assert_array_equal(eps_on.tokens, eps_off.tokens)
  assert (eps_on.num_messages > 0).any()
  assert abs(on["kl"]) > 1e-4   # the reference differs: a real KL and gradient
  for k in ("loss", "pg_loss", "kl", "entropy", "grad_norm"):
    assert on[k] == pytest.approx(off[k], rel=1e-5, abs=1e-6), k
  for a, b in zip(jax.tree.leaves(t_on), jax.tree.leaves(t_off)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
