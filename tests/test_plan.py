"""seekjax.plan: the memory plan's figures against hand computations, its exit codes and
its one-line refusal."""
import json
import math
import os

import jax
import jax.numpy as jnp
import optax
import pytest

from seekjax import configlib, plan
from seekjax.models import decoder
from seekjax.models.api import TINY_CONFIG
from seekjax.rl import trainable as trainable_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
GIB = 2 ** 30


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


def _rows(cfg, devices=1, **kw):
  return {r.name: r for r in plan.plan(cfg, devices, **kw)[0]}


def _bytes(tree):
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_tiny_figures_match_a_hand_computation():
  # tiny-random: V 49152, d 64, L 2, H 4, Kv 2, hd 16, f 128, tied; float32; full; 1 device.
  rows = _rows(_cfg())
  d, f, layers, v = 64, 128, 2, 49152
  per_layer = (d * 4 * 16 * 2 + d * 2 * 16 * 2) + 3 * d * f + 2 * d   # attn, mlp, norms
  params = layers * per_layer + v * d + d
  assert rows["params"].bytes == params * 4
  assert rows["reference params"].bytes == params * 4
  assert rows["optimizer state"].bytes == 2 * params * 4          # Adam mu, nu in fp32
  assert rows["gradients"].bytes == 2 * params * 4
  # T: prompt bucket 256 + budget (1+1)*24 + 1*(32+8) = 344 -> 384 (a multiple of 128);
  # rows 2 x 2 on 1 device.
  assert plan.lengths(_cfg(), 256) == (384, 48)
  assert rows["kv cache"].bytes == 2 * layers * 2 * 16 * 4 * 4 * 384
  # logits: micro-batch of 4 / 2 = 2 rows, K = 2 * 24 = 48 positions (a multiple of 16), fp32.
  assert rows["logits"].bytes == 2 * 48 * v * 4


def test_params_and_trainable_match_the_real_trees():
  """The plan's bytes equal those of the params, trainable part (in model.master_dtype), its
  reference copy (in model.dtype) and the optax state it models."""
  for dtype in ("float32", "bfloat16"):
    model = TINY_CONFIG.replace(dtype=dtype)
    params = jax.eval_shape(lambda m=model: decoder.init_params(m, jax.random.PRNGKey(0)))
    for master in ("float32", "bfloat16"):
      for mode in ("full", "top_n", "lora"):
        cfg = _cfg(f"model.dtype={dtype}", f"model.master_dtype={master}",
                   f"model.trainable={mode}", "model.top_n=1")
        rows, case = _rows(cfg), (dtype, master, mode)
        spec = trainable_lib.Trainable(mode=mode, top_n=1, dtype=dtype, master_dtype=master)
        trainable, frozen = jax.eval_shape(
            lambda p, s=spec: trainable_lib.init(s, p, jax.random.PRNGKey(1)), params)
        ref = jax.eval_shape(lambda t, s=spec: trainable_lib.reference_copy(s, t), trainable)
        held = _bytes(params) if mode == "lora" else _bytes(frozen) + _bytes(trainable)
        assert rows["params"].bytes == held, case
        assert rows["reference params"].bytes == _bytes(ref), case
        state = jax.eval_shape(optax.adamw(1e-3).init, trainable)  # mu, nu: the params' dtype
        assert rows["optimizer state"].bytes == _bytes(state) - 4, case  # - count
        cast = _bytes(ref) if master != dtype else 0   # the trainable part cast for compute
        assert rows["gradients"].bytes == 2 * _bytes(trainable) + cast, case


def test_params_split_over_fsdp_but_norms_and_lora_stay_whole():
  cfg = _cfg("model.mesh_shape=(1,-1,1)")
  one, four = _rows(cfg, 1), _rows(cfg, 4)
  norms = (2 * 2 * 64 + 64) * 4   # attn/mlp norms per layer and the final norm: replicated
  assert four["params"].bytes == (one["params"].bytes - norms) // 4 + norms
  assert four["kv cache"].bytes == one["kv cache"].bytes // 4    # 4 rows -> 1 per device
  lora = _cfg("model.trainable=lora")
  assert _rows(lora, 4)["optimizer state"].bytes == _rows(lora, 1)["optimizer state"].bytes


def test_remat_and_micro_batches_shrink_activations():
  base = _rows(_cfg("rl.micro_batches=1"))["activations"].bytes
  assert _rows(_cfg("rl.micro_batches=1", "model.remat=True"))["activations"].bytes < base
  assert _rows(_cfg("rl.micro_batches=2"))["activations"].bytes < base


def test_known_shape_without_files_and_config_json_first(tmp_path):
  model, source = plan.model_shape("/nowhere/Qwen3-1.7B", "bfloat16")
  assert "known shape qwen3-1.7b" in source and model.qk_norm
  assert round(model.num_params / 1e9, 2) == 1.72
  d = tmp_path / "Qwen3-1.7B"   # a local dir wins over the table
  d.mkdir()
  (d / "config.json").write_text(json.dumps(dict(
      model_type="qwen3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=1000,
      tie_word_embeddings=True)))
  model, source = plan.model_shape(str(d), "float32")
  assert model.hidden_size == 64 and source.endswith("config.json")
  assert plan.model_shape("smollm2-135m", "float32")[0].num_layers == 30
  with pytest.raises(plan.PlanError, match="not a known shape"):
    plan.model_shape("/nowhere/Mystery-7B", "float32")


def test_cli_fits_yes_exits_0(capsys):
  assert plan.main(["--config", TINY, "--devices=1", "--hbm_gib=16"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == "fits: yes" and any(l.startswith("kv cache ") for l in out)


def test_cli_fits_no_exits_1_with_one_line_naming_the_largest_term(capsys):
  assert plan.main(["--config", TINY, "--devices=1", "--hbm_gib=0.01",
                    "--config.rl.questions_per_step=64", "--config.model.remat"]) == 1
  captured = capsys.readouterr()
  assert captured.out.strip().splitlines()[-1] == "fits: no"
  line = captured.err.strip()
  assert "\n" not in line and line.startswith("plan: does not fit: activations ")
  assert "raise rl.micro_batches" in line


def test_cli_bad_input_exits_2(capsys):
  assert plan.main(["--config", TINY, "--hbm_gib=16"]) == 2
  assert plan.main(["--config", TINY, "--devices=3", "--hbm_gib=16",
                    "--config.model.mesh_shape=(2,-1,1)"]) == 2
  assert "does not fit 3 devices" in capsys.readouterr().err


def test_check_fits_refuses_in_one_line_and_skips_without_hbm():
  cfg = _cfg("rl.questions_per_step=4096", "rl.micro_batches=4096", "rl.group_size=8")
  assert plan.check_fits(cfg, 1, None) is None        # CPU: no hbm figure, no check
  with pytest.raises(plan.PlanError) as e:
    plan.check_fits(cfg, 1, 0.5)
  msg = str(e.value)
  assert msg.startswith("plan: does not fit: kv cache ") and "\n" not in msg
  assert "rl.group_size or rl.questions_per_step" in msg
  assert isinstance(e.value, configlib.ConfigError)    # train's one-line error path
  assert plan.check_fits(_cfg(), 1, 16.0)


def test_check_devices_uses_the_device_memory_limit(monkeypatch):
  cfg = _cfg("rl.questions_per_step=4096", "rl.micro_batches=4096", "rl.group_size=8")
  assert plan.device_hbm_gib() is None and plan.check_devices(cfg) is None   # CPU: skipped
  monkeypatch.setattr(plan, "device_hbm_gib", lambda: 0.5)
  with pytest.raises(plan.PlanError, match="^plan: does not fit: kv cache "):
    plan.check_devices(cfg)
  assert plan.check_devices(_cfg())


def test_tpu_pod_fits_on_256_chips_of_95_gib():
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "tpu_pod.py"))
  assert plan.fits(plan.plan(cfg, 256)[0], 95)


def test_qwen3_hotpotqa_fits_on_one_80_gib_gpu():
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "qwen3_hotpotqa.py"))
  assert plan.fits(plan.plan(cfg, 1)[0], 80)


def _xla_update_bytes(model, spec, b, t, k):
  """XLA's temp bytes for the compiled PPO step (one micro-batch of b rows), on this backend."""
  from seekjax.rl import step as step_lib  # pylint: disable=import-outside-toplevel
  s = jax.ShapeDtypeStruct
  optimizer, _ = step_lib.make_optimizer(1e-5, 10, 1, 0.0, 1.0)
  params = jax.eval_shape(lambda: decoder.init_params(model, jax.random.PRNGKey(0)))
  batch = step_lib.Batch(
      tokens=s((b, t), jnp.int32), loss_mask=s((b, k), jnp.float32),
      old_logprobs=s((b, k), jnp.float32), ref_logprobs=s((b, k), jnp.float32),
      advantages=s((b,), jnp.float32), targets=s((b, k), jnp.int32))
  fn = step_lib.make_train_step(spec, optimizer)
  compiled = fn.lower(params, {}, jax.eval_shape(optimizer.init, params), batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("remat", [False, True])
def test_update_terms_bound_xla_memory_analysis(tmp_path, remat):
  """gradients + activations + logits are at least XLA's temp bytes, and at most twice them."""
  from seekjax.rl import step as step_lib  # pylint: disable=import-outside-toplevel
  (tmp_path / "config.json").write_text(json.dumps(dict(
      model_type="qwen3", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, head_dim=32, intermediate_size=384, vocab_size=4096,
      tie_word_embeddings=True)))
  cfg = _cfg(f"model.path={tmp_path}", "model.trainable=full", f"model.remat={remat}",
             "rollout.max_turns=0", "rollout.max_new_tokens=192", "rl.questions_per_step=2",
             "rl.group_size=2", "rl.mini_batches=1", "rl.micro_batches=2")
  rows, info = plan.plan(cfg, 1, prompt_tokens=64)
  assert (info["b"], info["t"], info["k"]) == (2, 256, 192)
  planned = sum(r.bytes for r in rows if r.phase == "update")
  spec = step_lib.StepSpec(model=info["model"], trainable=trainable_lib.Trainable("full"),
                           epsilon=0.2, epsilon_high=0.28, aggregation="token-mean",
                           kl_method="k3", kl_beta=0.02, micro_batches=1, remat=remat)
  xla = _xla_update_bytes(info["model"], spec, 2, 256, 192)
  assert xla <= planned <= 2 * xla, (planned / GIB, xla / GIB)
