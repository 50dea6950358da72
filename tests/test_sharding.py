"""Sharded logits and generation on 8 virtual CPU devices equal the unsharded run."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    import seekjax as sj
    from seekjax.models import sharding
    assert jax.device_count() == 8, jax.devices()
    cfg = sj.ModelConfig(arch="qwen3", vocab_size=512, hidden_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
                         max_position_embeddings=512)
    ref = sj.random_model(cfg, seed=3)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, size=(8, 12))
    mask = np.ones_like(ids); mask[1, :3] = 0
    want = np.asarray(sj.logits(ref, ids, mask))
    prompts = [list(rng.integers(1, 512, size=n)) for n in (3, 5, 7, 9, 4, 6, 8, 10)]
    want_gen = sj.generate_ids(ref, prompts, max_new_tokens=10, stop_ids=())
    for shape in [(2, 2, 2), (1, 8, 1), (1, 4, 2)]:
      mesh = sharding.make_mesh(shape)
      m = ref.replace(params=sharding.shard_params(mesh, ref.params), mesh=mesh)
      q = m.params["layers"]["q"].sharding
      assert q.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor"), q.spec
      assert len(q.device_set) == 8
      shard_shape = m.params["layers"]["q"].addressable_shards[0].data.shape
      assert shard_shape == (2, 64 // mesh.shape["fsdp"], 64 // mesh.shape["tensor"]), shard_shape
      got = np.asarray(sj.logits(m, ids, mask))
      err = float(np.max(np.abs(got - want)))
      assert err < 1e-4, (shape, err)
      assert sj.generate_ids(m, prompts, max_new_tokens=10, stop_ids=()) == want_gen, shape
      print("ok", shape, err)
    try:
      sharding.make_mesh((3, -1, 1))
    except sharding.MeshError as e:
      print("mesh error:", e)
""")


def test_sharded_matches_unsharded_on_8_virtual_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                     timeout=600, check=False)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count("ok ") == 3
  assert "does not divide the 8 devices" in r.stdout
