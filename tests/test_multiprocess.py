"""Two processes on 127.0.0.1 train together through jax.distributed (CPU, gloo collectives).

Each process rolls out its own questions with a host-local policy copy; the update is one
SPMD step over the 2-process mesh. Afterwards both hold identical params and only
process 0 wrote metrics.
"""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, {root!r})
    from seekjax import configlib
    from seekjax import distributed
    from seekjax.train import train
    i = int(sys.argv[1])
    cfg = configlib.apply_overrides(configlib.load_config({config!r}), [
        "rl.steps=3", "distributed.initialize=True",
        "distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
        f"distributed.process_id={{i}}"])
    out = train(cfg, {workdir!r})
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    local = distributed.local_copy(out["trainable"])
    flat = {{"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(local)}}
    np.savez({workdir!r} + f"/params_{{i}}.npz", **flat)
    print("worker", i, "done", out["em"])
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_agree(tmp_path):
  workdir = str(tmp_path / "run")
  script = WORKER.format(root=ROOT, config=os.path.join(ROOT, "configs", "tiny_test.py"),
                         port=_free_port(), workdir=workdir)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=900))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  a = np.load(os.path.join(workdir, "params_0.npz"))
  b = np.load(os.path.join(workdir, "params_1.npz"))
  assert sorted(a.files) == sorted(b.files) and a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])
  rows = open(os.path.join(workdir, "metrics.jsonl")).read().strip().splitlines()
  assert len(rows) == 3  # process 0 alone wrote one line per step
  assert "[rl]" not in outs[1][1]  # no progress output from process 1
