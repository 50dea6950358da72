"""Shared fixtures: the embedded SLM (loaded once per session) and a tiny random model."""
import os

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "trajectory: asserts on the outcome of an optimisation or on float parity, so "
      "it depends on the instruction set XLA compiles for; .ci/run also runs these under "
      "XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 and (on a CPU with AVX-512) =AVX2")


@pytest.fixture(scope="session")
def smollm():
  import seekjax as sj
  return sj.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_tokenizer(smollm):
  return smollm.tokenizer


@pytest.fixture(scope="session")
def tiny_model(smollm_tokenizer):
  """A 2-layer random Llama with the SmolLM2 vocabulary and tokenizer (fast, real ids)."""
  import seekjax as sj
  cfg = sj.ModelConfig(arch="llama", vocab_size=smollm_tokenizer.vocab_size, hidden_size=64,
                       num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                       intermediate_size=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_embeddings=True, max_position_embeddings=2048)
  return sj.random_model(cfg, seed=0, tokenizer=smollm_tokenizer)


def _greedy_decode(model, params, prompt, steps):
  """Greedy tokens [B, steps] and logits [B, steps, V] of a cached decode loop
  (decoder.forward with a cache, one token a step) from `params` of `model`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from seekjax.models import decoder
  cfg = model.config
  cache = decoder.init_cache(cfg, prompt.shape[0], prompt.shape[1] + steps)
  step = jax.jit(lambda p, tok, pos, c: decoder.forward(p, cfg, tok, pos, cache=c))
  pos = jnp.broadcast_to(jnp.arange(prompt.shape[1]), prompt.shape)
  logits, cache = step(params, prompt, pos, cache)
  out, all_logits = [], []
  for i in range(steps):
    tok = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
    out.append(tok)
    all_logits.append(logits[:, -1])
    logits, cache = step(params, tok, jnp.full_like(tok, prompt.shape[1] + i), cache)
  return np.asarray(jnp.concatenate(out, 1)), np.asarray(jnp.stack(all_logits, 1))


@pytest.fixture
def greedy_decode():
  """`_greedy_decode(model, params, prompt, steps)`: the CPU kernels' decode parity tests."""
  return _greedy_decode
