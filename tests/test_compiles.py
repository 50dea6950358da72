"""Compilations: jitted shapes come from the config, the counter sees every compile, and
the persistent cache lets a second run read its programs back."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

import seekjax as sj
from seekjax import compile_cache, compiles
from seekjax.coldstart import sft
from seekjax.models.embedded import cache_dir
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rollout import rollout_config
from seekjax.rollout.config import (cache_length, chunk_width, loss_positions, prompt_width,
                                    update_widths)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")


def test_rollout_widths_come_from_the_config_not_the_batch():
  free = rollout_config(max_turns=2, max_new_tokens=64, max_feedback_tokens=64)
  fixed = rollout_config(max_turns=2, max_new_tokens=64, max_feedback_tokens=64,
                         prompt_width=256)
  # without a run's prompt width each batch's longest prompt sets it; with one, every
  # batch shorter than it has the same cache length
  assert prompt_width([100], free) == 128 and prompt_width([200], free) == 256
  assert {cache_length([n], fixed) for n in (10, 100, 200, 256)} == {cache_length([256], free)}
  assert prompt_width([300], fixed) == 512            # a longer prompt still fits
  # feedback appends go in pieces of half the longest feedback (two at most), >= 32
  assert [chunk_width(rollout_config(max_feedback_tokens=n))
          for n in (8, 32, 33, 64, 65, 100, 129)] == [32, 32, 32, 32, 64, 64, 128]
  # the update's widths: a ladder from the prompt width + 64 up to the buffer, ~1.2x apart
  assert update_widths(640, fixed) == (320, 384, 512, 640)
  assert update_widths(512, fixed) == (320, 384, 512)
  assert update_widths(320, fixed) == (320,)
  assert update_widths(1024, free) == (64, 128, 256, 512, 1024)   # outside a run: any
  assert loss_positions(fixed) == 192                 # 3 turns of 64 tokens
  assert loss_positions(rollout_config(max_turns=2, max_new_tokens=60, prompt_width=64)) == 192
  assert loss_positions(rollout_config(max_turns=0, max_new_tokens=24, prompt_width=64)) == 32
  assert loss_positions(free) == 16                   # outside a run: each batch's count


def test_sft_batches_with_different_loss_counts_compile_once():
  cfg = sj.ModelConfig(arch="llama", vocab_size=64, hidden_size=32, num_layers=1, num_heads=2,
                       num_kv_heads=1, head_dim=16, intermediate_size=64, rope_theta=1e4,
                       rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=128)
  params = sj.random_model(cfg).params
  spec = trainable_lib.Trainable(mode="full")
  optimizer, _ = step_lib.make_optimizer(1e-3, 10, 0, 0.0, 1.0)
  step = sft.make_sft_step(spec, cfg, optimizer)
  tokens = np.ones((2, 64), np.int32)
  masks = [np.zeros((2, 64), np.float32) for _ in range(3)]
  for m, n in zip(masks, (5, 20, 40)):   # 16, 32 and 64 loss positions when bucketed alone
    m[:, 1:1 + n] = 1
  positions = sft.loss_positions(np.concatenate(masks))
  assert positions == 64
  trainable, opt_state = params, optimizer.init(params)
  trainable, opt_state, _ = step(trainable, {}, opt_state, tokens, masks[0], positions=positions)
  before = compiles.snapshot()
  for m in masks[1:]:
    trainable, opt_state, loss = step(trainable, {}, opt_state, tokens, m, positions=positions)
  counted, names = compiles.since(before)
  assert counted["compiles"] == 0, names
  assert np.isfinite(float(loss))
  jax.jit(lambda x: x * 3)(np.arange(7))   # a new program: the counter sees it
  assert compiles.since(before)[0]["compiles"] == 1


def _cache_with_the_models(tmp_path):
  """A fresh $SEEKJAX_CACHE holding links to the fetched models (nothing compiled)."""
  root = tmp_path / "cache"
  root.mkdir()
  for name in os.listdir(cache_dir()):
    if name != "jax":
      os.symlink(os.path.join(cache_dir(), name), root / name)
  return str(root)


def test_second_run_reads_its_programs_from_the_persistent_cache(tmp_path):
  env = dict(os.environ, SEEKJAX_CACHE=_cache_with_the_models(tmp_path), JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("SEEKJAX_COMPILE_CACHE", None)
  rows = []
  for run in ("first", "second"):
    workdir = str(tmp_path / run)
    r = subprocess.run([sys.executable, "-m", "seekjax.train", f"--config={TINY}:1",
                        f"--workdir={workdir}", "--config.sft.steps=0"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows.append(json.loads(open(os.path.join(workdir, "metrics.jsonl")).readline()))
  first, second = rows
  assert os.listdir(os.path.join(env["SEEKJAX_CACHE"], "jax"))
  assert first["compile_cache_hits"] == 0 and first["compiles"] >= 5
  assert second["compiles"] == first["compiles"]
  # every program comes back from the cache, the decode loop with its io_callback to the
  # helper included (seekjax/compile_cache.py keeps programs with host callbacks)
  assert second["compile_cache_hits"] == second["compiles"], second
  assert "decode_until_blocked" in second["compiled"]
  assert any(n.startswith(compile_cache.CALLBACK_PREFIX)
             for n in os.listdir(os.path.join(env["SEEKJAX_CACHE"], "jax")))
