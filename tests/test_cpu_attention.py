"""The CPU attention kernel (seekjax/models/cpu_attention.cc) against XLA's attention."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seekjax.models import cpu_attention, decoder

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_attention.enabled(),
    reason="the kernel runs on the CPU backend only")


def _reference(q, k, v, positions):
  """decoder.attention over all slots with the mask slot <= position (float64 numpy)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, t, h, hd = q.shape
  g = h // k.shape[2]
  out = np.zeros((b, t, h, hd))
  for r in range(b):
    for i in range(t):
      n = min(int(positions[r, i]) + 1, k.shape[1])
      if n <= 0:
        continue
      for j in range(h):
        s = k[r, :n, j // g] @ q[r, i, j] / np.sqrt(hd)
        p = np.exp(s - s.max())
        out[r, i, j] = (p / p.sum()) @ v[r, :n, j // g]
  return out.reshape(b, t, h * hd)


@pytest.mark.parametrize("heads,kv,hd,t", [(9, 3, 64, 1), (16, 8, 128, 1), (4, 2, 16, 3)])
def test_kernel_matches_attention_over_each_rows_live_slots(heads, kv, hd, t):
  """SmolLM2's (9 over 3, hd 64) and Qwen3's (16 over 8, hd 128) head layouts, and several
  queries per row; positions past the cache's end attend to every slot."""
  rng = np.random.default_rng(0)
  b, s = 5, 40
  q = rng.standard_normal((b, t, heads, hd)).astype(np.float32)
  k, v = (rng.standard_normal((b, s, kv, hd)).astype(np.float32) for _ in range(2))
  positions = rng.integers(0, s, (b, t)).astype(np.int32)
  positions[0, 0], positions[1, 0] = 0, s + 7
  assert cpu_attention.usable(q, k)
  got = jax.jit(cpu_attention.cached_attention)(q, k, v, positions)
  np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, positions), atol=2e-6, rtol=1e-5)
  mask = np.arange(s)[None, None, :] <= positions[:, :, None]
  xla = decoder.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), np.asarray(xla), atol=2e-6, rtol=1e-5)


def test_a_negative_position_attends_to_nothing():
  rng = np.random.default_rng(1)
  q = rng.standard_normal((2, 1, 4, 16)).astype(np.float32)
  k = rng.standard_normal((2, 8, 2, 16)).astype(np.float32)
  got = np.asarray(cpu_attention.cached_attention(q, k, k, np.array([[-1], [3]], np.int32)))
  assert not got[0].any() and got[1].any()


def test_kernel_takes_only_float32_and_heads_of_16():
  f32, bf16 = jnp.zeros((1, 1, 4, 16)), jnp.zeros((1, 1, 4, 16), jnp.bfloat16)
  cache = jnp.zeros((1, 8, 2, 16))
  assert cpu_attention.supports(f32, cache)
  assert not cpu_attention.supports(bf16, cache.astype(jnp.bfloat16))
  assert not cpu_attention.supports(jnp.zeros((1, 1, 4, 8)), jnp.zeros((1, 8, 2, 8)))
  with pytest.raises(RuntimeError, match="cannot run on these operands"):
    cpu_attention.cached_attention(bf16, cache.astype(jnp.bfloat16), cache.astype(jnp.bfloat16),
                                   jnp.zeros((1, 1), jnp.int32))


def _greedy(model, prompt, steps):
  """Greedy tokens of a cached decode loop (decoder.forward with a cache, one token a step)."""
  params = decoder.unstack_layers(model.params)
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


def test_decode_with_the_kernel_matches_xlas_attention(tiny_model, monkeypatch):
  """The tiny model's greedy decode gives the same tokens (and logits to rounding) with the
  kernel as with XLA's attention (SEEKJAX_CPU_KERNELS=0 while tracing)."""
  prompt = jnp.asarray(np.random.default_rng(2).integers(5, 2000, (3, 11)), jnp.int32)
  kernel_tokens, kernel_logits = _greedy(tiny_model, prompt, 24)
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  xla_tokens, xla_logits = _greedy(tiny_model, prompt, 24)
  np.testing.assert_array_equal(kernel_tokens, xla_tokens)
  np.testing.assert_allclose(kernel_logits, xla_logits, atol=1e-4)


def test_decode_step_program_calls_the_kernel(tiny_model, monkeypatch):
  cfg = tiny_model.config
  cache = decoder.init_cache(cfg, 2, 16)
  args = (decoder.unstack_layers(tiny_model.params), jnp.zeros((2, 1), jnp.int32),
          jnp.zeros((2, 1), jnp.int32), cache)
  def hlo():
    fn = jax.jit(lambda p, tok, pos, c: decoder.forward(p, cfg, tok, pos, cache=c))
    return fn.lower(*args).as_text()
  assert hlo().count(cpu_attention.TARGET) == cfg.num_layers
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  assert cpu_attention.TARGET not in hlo()


def test_without_a_compiler_the_decoder_keeps_xlas_attention(tmp_path):
  """A box without a C++ compiler: one warning naming the cause, and decode still runs."""
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from seekjax.models import cpu_attention, decoder
      q = jnp.ones((1, 1, 4, 16)); k = jnp.ones((1, 8, 2, 16))
      assert not cpu_attention.usable(q, k)
      assert not cpu_attention.usable(q, k)   # tried once
      out = decoder._cached_attention(q, k, k, jnp.array([[3]]), (8,), jnp.int32(0))
      print("shape", out.shape)
  """)
  env = dict(os.environ, SEEKJAX_CACHE=str(tmp_path), CXX=str(tmp_path / "no-such-c++"),
             PATH=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "shape (1, 1, 64)" in proc.stdout
  assert proc.stderr.count("CPU attention kernel unavailable") == 1, proc.stderr
  assert "no-such-c++" in proc.stderr


def test_the_library_is_built_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("SEEKJAX_CACHE", str(tmp_path))
  path = cpu_attention.build()
  assert path.startswith(str(tmp_path)) and os.path.exists(path)
  mtime = os.stat(path).st_mtime_ns
  assert cpu_attention.build() == path and os.stat(path).st_mtime_ns == mtime
  assert [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".so")] == [
      os.path.basename(path)]
