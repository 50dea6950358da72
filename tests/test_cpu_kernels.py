"""The CPU kernels' library (seekjax/models/cpu_kernels.py) and the matmul kernel
(cpu_matmul.cc) against numpy and XLA's dots."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seekjax.models import cpu_kernels, cpu_matmul, decoder, packing

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_kernels.enabled(),
    reason="the kernels run on the CPU backend only")

needs_fast = pytest.mark.skipif(not cpu_matmul.worthwhile(),
                                reason="the decoder packs weights only where a vector form "
                                       "of the matmul runs (AVX-512, AVX2 + FMA)")


def test_pack_puts_sixteen_columns_per_panel():
  w = np.arange(6 * 64, dtype=np.float32).reshape(6, 64)
  packed = np.asarray(cpu_matmul.pack(jnp.asarray(w)))
  assert packed.shape == (4, 6, 16)
  for p in range(4):
    np.testing.assert_array_equal(packed[p], w[:, 16 * p:16 * p + 16])
  with pytest.raises(ValueError, match="multiple of 32"):
    cpu_matmul.pack(jnp.zeros((6, 48)))


# SmolLM2's q, k/v, gate and down shapes at 16 rows; every remainder of the 8-row blocks;
# leading batch dims as the decoder passes them.
@pytest.mark.parametrize("rows,k,n", [(16, 576, 576), (16, 576, 192), (16, 576, 1536),
                                      (16, 1536, 576), (1, 64, 32), (3, 40, 64), (7, 64, 96),
                                      (13, 33, 64), (25, 64, 32)])
def test_matmul_matches_float64(rows, k, n):
  rng = np.random.default_rng(rows * 1000 + n)
  x = rng.standard_normal((rows, 1, k)).astype(np.float32)
  w = rng.standard_normal((k, n)).astype(np.float32)
  packed = cpu_matmul.pack(jnp.asarray(w))
  assert cpu_matmul.usable(x, packed)
  got = np.asarray(jax.jit(cpu_matmul.packed_matmul)(x, packed))
  want = x.astype(np.float64) @ w
  assert got.shape == (rows, 1, n)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))
  np.testing.assert_allclose(got, np.asarray(jnp.asarray(x) @ w), rtol=1e-5, atol=1e-5 * np.sqrt(k))


def test_matmul_takes_only_float32_panels_that_match():
  x = jnp.zeros((2, 1, 64))
  packed = cpu_matmul.pack(jnp.zeros((64, 32)))
  assert cpu_matmul.supports(x, packed)
  assert not cpu_matmul.supports(x.astype(jnp.bfloat16), packed.astype(jnp.bfloat16))
  assert not cpu_matmul.supports(jnp.zeros((2, 1, 48)), packed)
  assert not cpu_matmul.packable(jnp.zeros((64, 48)))
  assert not cpu_matmul.packable(jnp.zeros((64, 32), jnp.bfloat16))
  with pytest.raises(RuntimeError, match="cannot run on these operands"):
    cpu_matmul.packed_matmul(jnp.zeros((2, 1, 48)), packed)


_FORMS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, jax.numpy as jnp
    from seekjax.models import cpu_matmul, packing
    rng = np.random.default_rng(0)
    out = {}
    # every remainder of the 8-row (AVX-512) and 6-row (AVX2) blocks; K odd and SmolLM2's
    for rows in (1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16, 25):
      for k in (33, 576):
        x = rng.standard_normal((rows, k)).astype(np.float32)
        w = rng.standard_normal((k, 64)).astype(np.float32)
        got = np.asarray(cpu_matmul.packed_matmul(x, cpu_matmul.pack(jnp.asarray(w))))
        np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5,
                                   atol=1e-5 * np.sqrt(k))
        out[f"{rows}x{k}"] = got
    np.savez(sys.argv[1], **out)
    params = {"embed": jnp.zeros((64, 32)), "final_norm": jnp.ones(32),
              "layers": ({k: jnp.zeros((32, 32)) for k in packing.DENSE},)}
    packs = "head_packed" in packing.decode_params(params)
    print("form", cpu_matmul.isa(), "packs", packs)
""")


def _run_form(tmp_path, asked):
  """The kernel's products in a subprocess with SEEKJAX_CPU_MATMUL_ISA=asked (None: the
  CPU's best form); returns (the form that ran, whether the decoder packs, products)."""
  env = dict(os.environ)
  env.pop("SEEKJAX_CPU_MATMUL_ISA", None)
  if asked:
    env["SEEKJAX_CPU_MATMUL_ISA"] = asked
  out = tmp_path / f"{asked or 'best'}.npz"
  proc = subprocess.run([sys.executable, "-c", _FORMS_SCRIPT, str(out)], env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  _, form, _, packs = proc.stdout.split()[-4:]
  return form, packs == "True", dict(np.load(out))


def test_every_form_of_the_matmul_is_correct_and_the_vector_forms_agree_bit_for_bit(tmp_path):
  """The portable loop (asked for) is correct and the decoder does not pack for it (XLA's
  dots are faster); each vector form this CPU has is correct, the decoder packs for it,
  and AVX2 gives AVX-512's bits (the same chain of fused multiply-adds per output)."""
  form, packs, _ = _run_form(tmp_path, "portable")
  assert (form, packs) == ("portable", False)
  best, packs, best_out = _run_form(tmp_path, None)
  assert packs == (best != "portable")
  if best == "avx512":
    form, packs, avx2_out = _run_form(tmp_path, "avx2")
    assert (form, packs) == ("avx2", True)
    for name, got in avx2_out.items():
      np.testing.assert_array_equal(got, best_out[name], err_msg=name)


@needs_fast
def test_decode_params_packs_every_dense_weight(tiny_model, monkeypatch):
  params = packing.decode_params(tiny_model.params)
  assert len(params["layers"]) == tiny_model.config.num_layers
  for lp in params["layers"]:
    assert set(lp["packed"]) == set(packing.DENSE)
    for name in packing.DENSE:
      np.testing.assert_array_equal(np.asarray(lp["packed"][name]),
                                    np.asarray(cpu_matmul.pack(lp[name])))
  np.testing.assert_array_equal(np.asarray(params["head_packed"]),
                                np.asarray(cpu_matmul.pack(tiny_model.params["embed"].T)))
  assert packing.decode_params(params) is params   # already packed
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  plain = packing.decode_params(tiny_model.params)
  assert "head_packed" not in plain and "packed" not in plain["layers"][0]


@needs_fast
def test_decode_with_packed_weights_matches_xlas_dots(tiny_model, greedy_decode):
  """The tiny model's greedy decode: the same tokens (logits to rounding) with the packed
  weights as with XLA's dots (the attention kernel on both sides)."""
  prompt = jnp.asarray(np.random.default_rng(3).integers(5, 2000, (5, 9)), jnp.int32)
  kernel = greedy_decode(tiny_model, packing.decode_params(tiny_model.params), prompt, 20)
  xla = greedy_decode(tiny_model, packing.unstack_layers(tiny_model.params), prompt, 20)
  np.testing.assert_array_equal(kernel[0], xla[0])
  np.testing.assert_allclose(kernel[1], xla[1], atol=1e-4)


@needs_fast
def test_only_the_single_token_step_calls_the_matmul(tiny_model):
  cfg = tiny_model.config
  params = packing.decode_params(tiny_model.params)
  fn = jax.jit(lambda p, tok, pos, c: decoder.forward(p, cfg, tok, pos, cache=c))

  def calls(t):
    args = (params, jnp.zeros((2, t), jnp.int32), jnp.zeros((2, t), jnp.int32),
            decoder.init_cache(cfg, 2, 16))
    return fn.lower(*args).as_text().count(cpu_matmul.TARGET)
  assert calls(1) == len(packing.DENSE) * cfg.num_layers + 1   # every dense weight and the head
  assert calls(4) == 0                                          # prefill keeps XLA's dots


def test_without_a_compiler_the_decoder_keeps_xlas_forms(tmp_path):
  """A box without a C++ compiler: one warning naming the cause, and decode still runs."""
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from seekjax.models import attention, cpu_attention, cpu_matmul
      q = jnp.ones((1, 1, 4, 16)); k = jnp.ones((1, 8, 2, 16))
      assert not cpu_attention.usable(q, k)
      assert not cpu_attention.usable(q, k)   # tried once
      assert not cpu_matmul.worthwhile()
      out = attention.cached_attention(q, k, k, jnp.array([[3]]), (8,), jnp.int32(0))
      print("shape", out.shape)
  """)
  env = dict(os.environ, SEEKJAX_CACHE=str(tmp_path), CXX=str(tmp_path / "no-such-c++"),
             PATH=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "shape (1, 1, 64)" in proc.stdout
  assert proc.stderr.count("CPU kernels unavailable") == 1, proc.stderr
  assert "no-such-c++" in proc.stderr


def test_the_library_is_built_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("SEEKJAX_CACHE", str(tmp_path))
  path = cpu_kernels.build()
  assert path.startswith(str(tmp_path)) and os.path.exists(path)
  mtime = os.stat(path).st_mtime_ns
  assert cpu_kernels.build() == path and os.stat(path).st_mtime_ns == mtime
  assert [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".so")] == [
      os.path.basename(path)]


@needs_fast
@pytest.mark.trajectory
def test_smollm2_greedy_tokens_are_the_same_with_both_kernels(smollm, greedy_decode,
                                                              monkeypatch):
  """The embedded SmolLM2-135M's greedy decode: both kernels (packed weights, attention)
  against XLA's dots and attention (SEEKJAX_CPU_KERNELS=0), 4 rows of 16 tokens."""
  prompt = jnp.asarray(np.random.default_rng(4).integers(100, 40000, (4, 12)), jnp.int32)
  kernel = greedy_decode(smollm, packing.decode_params(smollm.params), prompt, 16)
  monkeypatch.setenv("SEEKJAX_CPU_KERNELS", "0")
  xla = greedy_decode(smollm, packing.decode_params(smollm.params), prompt, 16)
  np.testing.assert_array_equal(kernel[0], xla[0])
  np.testing.assert_allclose(kernel[1], xla[1], atol=2e-3, rtol=1e-4)
