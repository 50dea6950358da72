"""The paper-scale configs run end to end on CPU, shrunk by --config.k=v overrides only.

`configs/qwen3_hotpotqa.py` on one process of 8 virtual devices (mesh (2,4,1)) and
`configs/tpu_pod.py` on 2 processes of 4 devices (gloo collectives) each go through the
cold start (demos from the helper's replies), 2 RL steps and `python -m seekjax.evaluate`,
with a random Qwen3 checkpoint in bfloat16 shards, a HotpotQA-layout file and an
OpenAI-compatible helper on 127.0.0.1 (tests/paper_fixtures.py).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from loopback_server import LoopbackServer
import paper_fixtures
from seekjax.coldstart import helper_demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVED = "Qwen/Qwen3-32B"   # the name the helper's requests carry
# SEEKJAX_PAPER_PATH_ON=accelerator runs the qwen3_hotpotqa test on the machine's own
# devices (benchmarks/gpu_check.sh, on a GPU) instead of 8 virtual CPU devices.
ON_ACCELERATOR = os.environ.get("SEEKJAX_PAPER_PATH_ON") == "accelerator"


def _shrink(model_dir, data, base_url) -> list[str]:
  """The overrides that make a paper config a short CPU run (its structure kept: full-
  parameter bf16 training with remat, an OpenAI helper, the rule judge, the mesh)."""
  return [f"--config.model.path={model_dir}", f"--config.task.path={data}",
          f"--config.helper.base_url={base_url}", "--config.helper.api_key_env=",
          "--config.helper.concurrency=8", "--config.helper.timeout=60",
          "--config.task.max_train=16", "--config.task.max_eval=4",
          "--config.task.eval_fraction=0.3",
          "--config.rollout.max_turns=1", "--config.rollout.max_new_tokens=16",
          "--config.rollout.max_message_tokens=40", "--config.rollout.max_feedback_tokens=24",
          "--config.rollout.max_steps_per_call=16",
          "--config.rl.steps=2", "--config.rl.questions_per_step=2", "--config.rl.group_size=4",
          "--config.rl.mini_batches=1", "--config.rl.micro_batches=1",
          "--config.sft.steps=2", "--config.sft.batch_size=8", "--config.sft.num_demos=8"]


@pytest.fixture(scope="module")
def paper_inputs(tmp_path_factory):
  """(model_dir, data path, rows, helper server) shared by both tests."""
  base = tmp_path_factory.mktemp("paper")
  data = str(base / "hotpot_train_v1.1.json")
  rows = paper_fixtures.write_hotpotqa(data, 32)
  model_dir = paper_fixtures.write_qwen3_dir(str(base / "Qwen3-tiny"), rows)
  with LoopbackServer(responder=paper_fixtures.gold_responder(rows)) as server:
    yield model_dir, data, rows, server


def _env(devices: int, cache: str) -> dict:
  if ON_ACCELERATOR:
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _run_all(commands, env, timeout=900):
  """Run the commands at once; their (returncode, stdout, stderr), in order."""
  procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for c in commands]
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def _check_run(workdir):
  """A finished 2-step run: checkpoints, metrics, demos, evaluation results."""
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps[-1] == 2, steps
  metrics = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [m["step"] for m in metrics] == [1, 2]
  for m in metrics:
    assert np.isfinite(m["loss"]) and np.isfinite(m["reward"])
  rows = [json.loads(l) for l in open(os.path.join(workdir, "demos.jsonl")) if l.strip()]
  demos = [r for r in rows if "turns" in r]   # after the header: one row per example asked
  assert len(demos) == 16 and all(   # sft.num_demos * 2 examples asked, each answered gold
      d["turns"][-1].endswith(f"<answer>City {d['id'][2:]}</answer>") for d in demos)
  results = json.loads(open(os.path.join(workdir, "eval", "results.json")).read())
  methods = results["methods"]
  assert {"slm_cot", "llm_only", "static_interaction", "dynamic", "cold_start"} <= set(methods)
  assert results["meta"]["checkpoint_step"] == 2
  n = results["meta"]["num_examples"]
  assert n >= 2 and all(len(m["episodes"]) == n for m in methods.values())
  assert methods["llm_only"]["overall"]["em"] == 1.0   # the helper's replies read as answers
  return metrics, demos, results


def _check_helper_calls(server, demos):
  """Every request carried the config's helper settings; the cold start asked each of
  its examples once (on several processes too), with the config's answer request."""
  bodies = [c.body for c in server.calls if c.body and c.body["messages"][-1]["content"] != "ping"]
  for b in bodies:
    assert b["model"] == SERVED and b["max_tokens"] == 512
    assert b["chat_template_kwargs"] == {"enable_thinking": False}
  asked = [b["messages"][-1]["content"] for b in bodies
           if b["messages"][-1]["content"].endswith(helper_demos.ANSWER_REQUEST)]
  assert len(asked) == len(set(asked)) == 16   # task.max_train examples, each asked once
  assert {d["question"] for d in demos} <= {a[:-len(helper_demos.ANSWER_REQUEST)].strip()
                                            for a in asked}


def test_qwen3_hotpotqa_on_8_devices(paper_inputs, tmp_path):
  model_dir, data, _, server = paper_inputs
  server.reset()
  workdir = str(tmp_path / "run")
  mesh = "(1,-1,1)" if ON_ACCELERATOR else "(2,4,1)"
  over = _shrink(model_dir, data, server.base_url) + [f"--config.model.mesh_shape={mesh}"]
  config = ["--config=" + os.path.join(ROOT, "configs", "qwen3_hotpotqa.py"),
            f"--workdir={workdir}"]
  env = _env(8, str(tmp_path / "jax_cache"))
  [(rc, _, err)] = _run_all([[sys.executable, "-m", "seekjax.train", *config, *over]], env)
  assert rc == 0, err[-4000:]
  [(rc, out, err)] = _run_all([[sys.executable, "-m", "seekjax.evaluate", *config, *over,
                                "--bootstrap=20"]], env)
  assert rc == 0, err[-4000:]
  _, demos, _ = _check_run(workdir)
  _check_helper_calls(server, demos)


WORKER = """
import sys
import jax, numpy as np
from seekjax import distributed, train
i, out = int(sys.argv[1]), sys.argv[2]
rc, result = train.run(sys.argv[3:])
assert rc == 0 and jax.process_count() == 2 and len(jax.local_devices()) == 4
local = distributed.local_copy(result["trainable"])
np.savez(out, **{jax.tree_util.keystr(p): np.asarray(v, np.float32)
                 for p, v in jax.tree_util.tree_leaves_with_path(local)})
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _processes(i, port):
  return ["--config.distributed.coordinator_address=127.0.0.1:%d" % port,
          "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"]


def test_tpu_pod_on_2_processes_of_4_devices(paper_inputs, tmp_path):
  model_dir, data, _, server = paper_inputs
  server.reset()
  workdir = str(tmp_path / "run")
  over = _shrink(model_dir, data, server.base_url)   # the config's own mesh: (1, 8, 1)
  config = ["--config=" + os.path.join(ROOT, "configs", "tpu_pod.py"), f"--workdir={workdir}"]
  port = _free_port()
  train_runs = _run_all(
      [[sys.executable, "-c", WORKER, str(i), str(tmp_path / f"params_{i}.npz"), *config, *over,
        *_processes(i, port)] for i in range(2)], _env(4, str(tmp_path / "jax_cache")))
  for rc, _, err in train_runs:
    assert rc == 0, err[-4000:]
  assert "[rl]" not in train_runs[1][2]   # progress from process 0 alone
  port = _free_port()
  eval_runs = _run_all(
      [[sys.executable, "-m", "seekjax.evaluate", *config, *over, *_processes(i, port),
        "--bootstrap=20"] for i in range(2)], _env(4, str(tmp_path / "jax_cache")))
  for rc, _, err in eval_runs:
    assert rc == 0, err[-4000:]
  assert "results written to" in eval_runs[0][1] and "results written to" not in eval_runs[1][1]
  _, demos, _ = _check_run(workdir)
  assert os.listdir(os.path.join(workdir, "eval")).count("results.json") == 1
  a, b = np.load(tmp_path / "params_0.npz"), np.load(tmp_path / "params_1.npz")
  assert sorted(a.files) == sorted(b.files) and a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])
  _check_helper_calls(server, demos)
