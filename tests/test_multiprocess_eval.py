"""`evaluate` on 2 processes x 4 devices (CPU, gloo collectives): each process answers its
share of the questions on its own devices; process 0 alone writes results.json, equal
(timings aside) to the one a single process of 8 devices writes."""
import json
import os
import socket
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from seekjax import configlib
    from seekjax.evaluate import evaluate
    i, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    over = ["task.max_eval=5"]
    if n > 1:
      over += ["distributed.initialize=True", "distributed.coordinator_address=127.0.0.1:{port}",
               f"distributed.num_processes={{n}}", f"distributed.process_id={{i}}"]
    cfg = configlib.apply_overrides(configlib.load_config({config!r}), over)
    evaluate(cfg, out, methods=("slm_cot", "static_interaction", "dynamic"), bootstrap=20,
             out_dir=out + "/eval")
    import jax
    assert jax.process_count() == n and len(jax.local_devices()) == 8 // n
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(n, out):
  script = WORKER.format(root=ROOT, config=os.path.join(ROOT, "configs", "tiny_test.py"),
                         port=_free_port())
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // n}")
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i), str(n), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT) for i in range(n)]
  try:
    outs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]


def _untimed(x):
  """results.json without what depends on the clock or the process layout's speed."""
  if isinstance(x, dict):
    return {k: _untimed(v) for k, v in x.items() if "time" not in k and k != "seconds"}
  if isinstance(x, list):
    return [_untimed(v) for v in x]
  return x


def test_two_processes_evaluate_like_one(tmp_path):
  _run(2, tmp_path / "two")
  _run(1, tmp_path / "one")
  assert sorted(os.listdir(tmp_path / "two" / "eval")) == sorted(os.listdir(tmp_path / "one" /
                                                                              "eval"))
  two = json.loads((tmp_path / "two" / "eval" / "results.json").read_text())
  one = json.loads((tmp_path / "one" / "eval" / "results.json").read_text())
  assert two["meta"]["num_examples"] == 5 and len(two["methods"]["dynamic"]["episodes"]) == 5
  assert _untimed(two) == _untimed(one)
