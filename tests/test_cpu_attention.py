"""The CPU attention kernel (seekjax/models/cpu_attention.cc) against XLA's attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seekjax.models import attention, cpu_attention, cpu_kernels, decoder, packing

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_kernels.enabled(),
    reason="the kernel runs on the CPU backend only")


def _reference(q, k, v, positions):
  """attention.attention over all slots with the mask slot <= position (float64 numpy)."""
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
  xla = attention.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), np.asarray(xla), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("heads,kv,hd", [(9, 3, 64), (16, 8, 128)])
def test_multi_query_blocks_match_attention(heads, kv, hd):
  """A prefill's or an append's many queries a row (the blocked form): 37 queries (two
  whole blocks of 16 and a tail), positions spread over several 16-slot tiles, one past the
  cache's end, one at slot 0, and consecutive positions as an append writes them."""
  rng = np.random.default_rng(3)
  b, t, s = 3, 37, 70
  q = rng.standard_normal((b, t, heads, hd)).astype(np.float32)
  k, v = (rng.standard_normal((b, s, kv, hd)).astype(np.float32) for _ in range(2))
  positions = rng.integers(0, s, (b, t)).astype(np.int32)
  positions[0, 0], positions[0, 20], positions[1] = 0, s + 3, np.arange(20, 20 + t)
  got = np.asarray(jax.jit(cpu_attention.cached_attention)(q, k, v, positions))
  np.testing.assert_allclose(got, _reference(q, k, v, positions), atol=2e-6, rtol=1e-5)


def test_multi_query_scores_far_below_the_max_weigh_nothing():
  """The blocked form's exp is a polynomial: a slot scored 400 below the row's best gets
  weight 0, as exp does in float32, and one scored equal shares the weight evenly."""
  q = np.zeros((1, 2, 1, 16), np.float32)
  q[0, :, 0, 0] = 4.0   # scores (q . k) / 4 = k[..., 0]
  k = np.zeros((1, 3, 1, 16), np.float32)
  k[0, :, 0, 0] = [0.0, -400.0, 0.0]
  v = np.zeros((1, 3, 1, 16), np.float32)
  v[0, :, 0, 1] = [1.0, 1000.0, 3.0]
  got = np.asarray(cpu_attention.cached_attention(q, k, v, np.array([[1, 2]], np.int32)))
  assert got[0, 0, 1] == 1.0 and got[0, 1, 1] == 2.0


def test_a_negative_position_attends_to_nothing():
  rng = np.random.default_rng(1)
  q = rng.standard_normal((2, 1, 4, 16)).astype(np.float32)
  k = rng.standard_normal((2, 8, 2, 16)).astype(np.float32)
  got = np.asarray(cpu_attention.cached_attention(q, k, k, np.array([[-1], [3]], np.int32)))
  assert not got[0].any() and got[1].any()
  q3 = np.repeat(q, 3, axis=1)   # the blocked form: a row whose first query is at -1
  got = np.asarray(cpu_attention.cached_attention(q3, k, k, np.array([[-1, 2, 3], [0, 2, 3]],
                                                                    np.int32)))
  assert not got[0, 0].any() and got[0, 1:].all() and got[1].all()


def test_kernel_takes_only_float32_and_heads_of_16():
  f32, bf16 = jnp.zeros((1, 1, 4, 16)), jnp.zeros((1, 1, 4, 16), jnp.bfloat16)
  cache = jnp.zeros((1, 8, 2, 16))
  assert cpu_attention.supports(f32, cache)
  assert not cpu_attention.supports(bf16, cache.astype(jnp.bfloat16))
  assert not cpu_attention.supports(jnp.zeros((1, 1, 4, 8)), jnp.zeros((1, 8, 2, 8)))
  with pytest.raises(RuntimeError, match="cannot run on these operands"):
    cpu_attention.cached_attention(bf16, cache.astype(jnp.bfloat16), cache.astype(jnp.bfloat16),
                                   jnp.zeros((1, 1), jnp.int32))


def test_decode_with_the_kernel_matches_xlas_attention(tiny_model, greedy_decode, monkeypatch):
  """The tiny model's greedy decode gives the same tokens (and logits to rounding) with the
  kernel as with XLA's attention (SEEKJAX_CPU_KERNELS=0 while tracing)."""
  prompt = jnp.asarray(np.random.default_rng(2).integers(5, 2000, (3, 11)), jnp.int32)
  params = packing.unstack_layers(tiny_model.params)   # XLA's dots on both sides
  kernel_tokens, kernel_logits = greedy_decode(tiny_model, params, prompt, 24)
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  xla_tokens, xla_logits = greedy_decode(tiny_model, params, prompt, 24)
  np.testing.assert_array_equal(kernel_tokens, xla_tokens)
  np.testing.assert_allclose(kernel_logits, xla_logits, atol=1e-4)


def test_decode_step_program_calls_the_kernel(tiny_model, monkeypatch):
  cfg = tiny_model.config
  cache = decoder.init_cache(cfg, 2, 16)
  args = (packing.unstack_layers(tiny_model.params), jnp.zeros((2, 1), jnp.int32),
          jnp.zeros((2, 1), jnp.int32), cache)
  def hlo():
    fn = jax.jit(lambda p, tok, pos, c: decoder.forward(p, cfg, tok, pos, cache=c))
    return fn.lower(*args).as_text()
  assert hlo().count(cpu_attention.TARGET) == cfg.num_layers
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  assert cpu_attention.TARGET not in hlo()


def test_prefill_and_append_programs_call_the_kernel_not_window_branches(tiny_model,
                                                                         monkeypatch):
  """Several tokens a row with a cache (a prefill, an append) attend by the kernel, one
  call a layer and no `lax.switch` over attention windows; without the kernels, XLA's
  windows come back."""
  cfg = tiny_model.config
  cache = decoder.init_cache(cfg, 2, 256)
  assert len(attention.attention_windows(256)) > 1
  args = (packing.unstack_layers(tiny_model.params), jnp.zeros((2, 8), jnp.int32),
          jnp.tile(jnp.arange(8, dtype=jnp.int32), (2, 1)), cache)
  def hlo():
    fn = jax.jit(lambda p, tok, pos, c: decoder.forward(p, cfg, tok, pos, cache=c))
    return fn.lower(*args).as_text()
  text = hlo()
  assert text.count(cpu_attention.TARGET) == cfg.num_layers and "case" not in text
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  text = hlo()
  assert cpu_attention.TARGET not in text and "case" in text
