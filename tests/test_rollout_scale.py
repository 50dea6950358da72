"""The rollout over every device of a host: rows split over the mesh's batch axes, waves,
a KV cache sized from the episode budget, and a micro-batched, sharded reference pass.

The 8-device checks run in a subprocess (XLA_FLAGS must be set before jax is imported).
"""
import os
import subprocess
import sys
import textwrap

from seekjax.rollout import driver, rollout_config
from seekjax.rollout.config import cache_length, episode_budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import seekjax as sj
    from seekjax import protocol
    from seekjax.helpers.base import Helper, HelperReply
    from seekjax.models import sharding
    from seekjax.rl import step as step_lib, trainable as trainable_lib
    from seekjax.rollout import engine, rollout, rollout_config
    from seekjax.rollout.config import cache_length
    assert jax.device_count() == 8

    class Echo(Helper):
      async def respond(self, message, history):
        return HelperReply("info", "ok")

    seen = []   # (cache shape, devices holding it, rows per device) at each decode call
    decode = engine.decode_until_blocked
    def spy(params, tables, state, host_id, *, spec):
      k = state.cache.k[0]
      seen.append((k.shape, len(k.sharding.device_set),
                   sorted({s.data.shape[0] for s in k.addressable_shards})))
      return decode(params, tables, state, host_id, spec=spec)
    spy.lower = decode.lower   # the rollout's warm-up compiles it ahead of time
    engine.decode_until_blocked = spy

    one = sj.load_model("tiny-random")
    mesh = sharding.make_mesh((2, 4, 1))
    eight = one.replace(params=sharding.shard_params(mesh, one.params), mesh=mesh)
    questions = [f"Question {i}: where is city {i}?" for i in range(4)]
    greedy = rollout_config(max_turns=1, max_new_tokens=12, max_feedback_tokens=16,
                            temperature=0.0, group_size=2)
    a = rollout(one, questions, Echo(), greedy, 0)
    assert seen[-1][1] == 1
    b = rollout(eight, questions, Echo(), greedy, 0)
    shape, devices, rows = seen[-1]
    assert devices == 8 and rows == [1], seen[-1]          # 8 rows, one on each device
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.answers == b.answers and a.finish == b.finish
    print("ok rows on 8 devices, same greedy episodes")

    # The cache holds the bucketed episode budget, not the model's context.
    prompts = [one.tokenizer.encode_chat(protocol.slm_messages(q)) for q in questions]
    want = cache_length([len(p) for p in prompts], greedy)
    assert shape[1] == want < one.config.max_position_embeddings, (shape, want)
    print("ok cache length", want)

    # Waves: 16 rows are 2 per device; at most 1 per device -> 2 waves of 2 questions.
    # Sampled (not greedy) episodes equal one wave's.
    sampled = rollout_config(max_turns=1, max_new_tokens=12, max_feedback_tokens=16,
                             temperature=1.0, group_size=4)
    whole = rollout(eight, questions, Echo(), sampled, 3)
    assert seen[-1][0][0] == 16 and seen[-1][2] == [2]
    calls = len(seen)
    sampled.max_rows_per_device = 1
    waved = rollout(eight, questions, Echo(), sampled, 3)
    assert {(s[0][0], tuple(s[2])) for s in seen[calls:]} == {(8, (1,))}, seen[calls:]
    np.testing.assert_array_equal(whole.tokens, waved.tokens)
    np.testing.assert_allclose(whole.logprobs, waved.logprobs, atol=1e-5)   # row blocks of
    # another shape may round the last bit differently
    np.testing.assert_array_equal(whole.question_index, waved.question_index)
    assert whole.transcripts == waved.transcripts
    print("ok waves equal one wave")

    # The frozen layers' output the rollout keeps, decoded per shard and in waves, equals
    # the bottom layer's forward on the episodes' tokens.
    assert engine.per_shard_mesh(mesh) is not None
    held = rollout(eight, questions, Echo(), sampled, 3, capture_layer=1)
    np.testing.assert_array_equal(held.tokens, waved.tokens)
    bottom = trainable_lib.init(trainable_lib.Trainable(mode="top_n", top_n=1), one.params,
                                jax.random.PRNGKey(0))[1]
    want = np.asarray(step_lib.bottom_hidden(bottom, held.tokens, cfg=one.config))
    for i, n in enumerate(held.lengths):
      np.testing.assert_allclose(held.hidden[i, :n], want[i, :n], rtol=1e-5,
                                 atol=1e-5 * np.abs(want).max())
    print("ok frozen output per shard and in waves")

    # Reference pass: 4 micro-batches over the mesh equal one unbatched pass.
    spec = trainable_lib.Trainable(mode="full")
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 1000, size=(16, 64)).astype(np.int32)
    targets = np.sort(rng.integers(1, 64, size=(16, 16)), axis=1).astype(np.int32)
    trainable, frozen = trainable_lib.init(spec, one.params, jax.random.PRNGKey(0))
    want = step_lib.reference_logprobs(trainable, frozen, tokens, None, spec_trainable=spec,
                                       cfg=one.config, targets=targets)
    rows = sharding.batch_sharding(mesh, 2)
    s_trainable, s_frozen = trainable_lib.init(spec, eight.params, jax.random.PRNGKey(0))
    got = step_lib.reference_logprobs(
        s_trainable, s_frozen, jax.device_put(tokens, rows), None, spec_trainable=spec,
        cfg=one.config, targets=jax.device_put(targets, rows), micro_batches=4, mesh=mesh)
    assert len(got.sharding.device_set) == 8 and got.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    print("ok reference micro-batched")
""")


def test_rollout_over_8_devices_waves_cache_and_reference():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                     timeout=600, check=False, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count("ok ") == 5, r.stdout


def test_waves_bound_rows_per_device():
  assert driver.waves(5, 2, 4, 0) == [(0, 5)]                  # no limit: one wave
  assert driver.waves(5, 2, 4, 1) == [(0, 2), (2, 4), (4, 5)]  # 2 questions = 4 rows / 4 devices
  assert driver.waves(3, 8, 1, 2) == [(0, 1), (1, 2), (2, 3)]  # a wave holds >= 1 question


def test_cache_length_is_the_prompt_bucket_plus_the_episode_budget():
  cfg = rollout_config(max_turns=2, max_new_tokens=64, max_feedback_tokens=64)
  assert episode_budget(cfg) == 3 * 64 + 2 * (64 + 8)
  assert cache_length([100, 200], cfg) == 640     # bucket(200) = 256; 256 + 336 -> 640
  assert cache_length([10], cfg) == 384           # bucket(10) = 16; 16 + 336 -> 384
  assert cache_length([10], rollout_config(max_episode_tokens=112)) == 128


def test_plan_sizes_the_cache_as_the_rollout_does_and_counts_waves():
  from seekjax import configlib, plan
  tiny = os.path.join(ROOT, "configs", "tiny_test.py")
  cfg = configlib.load_config(tiny)
  t, _ = plan.lengths(cfg, 100)
  assert t == cache_length([100], driver_cfg := rollout_config(**{
      k: cfg.rollout[k] for k in ("max_turns", "max_new_tokens", "max_feedback_tokens")}))
  assert episode_budget(driver_cfg) + 128 <= t      # prompt bucket 128 + budget, bucketed
  kv = lambda c: {r.name: r for r in plan.plan(c, 1)[0]}["kv cache"].bytes  # noqa: E731
  whole = kv(cfg)                                   # 2 questions x 2 samples on one device
  waved = kv(configlib.apply_overrides(configlib.load_config(tiny),
                                       ["rollout.max_rows_per_device=1"]))
  assert waved * 4 == whole
