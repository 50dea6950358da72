"""API keys: read from the environment variable the config names, sent, and never written.

A short training run talks to an OpenAI-compatible helper (the loopback server) with a
unique fake key in `helper.api_key_env`'s variable. The SLM is a tiny model built to
send `<message>capital of Eritrea?</message>` in every episode, so the helper (and the
LLM leak judge, which uses it) is really called. Afterwards every byte under the
workdir (config, logs, metrics, TensorBoard events, binary checkpoints) and the run's
stdout/stderr must be free of the key, while the server must have received it in the
Authorization header of every request (so the test is not vacuous). The server fails
three calls in four: a 401 and a 500 whose bodies echo the key back (as some APIs do),
and a dropped connection (an exception inside the client), so the run also goes through
every failure path with the key at hand.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from aiohttp import web

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import Behavior, Call, LoopbackServer  # noqa: E402
from test_hostile_input import _write_hf_dir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
KEY_ENV = "SEEKJAX_SECRETS_TEST_API_KEY"
MESSAGE = "<message>capital of Eritrea?</message>"

class KeyServer(LoopbackServer):
  """The loopback server, failing calls 1, 2, 3 of every 4: a 401 and a 500 whose bodies
  echo the Authorization header, then a dropped connection. Calls are numbered as they
  arrive (concurrent calls get distinct numbers), so the pattern holds however many
  calls the rollout sends at once."""

  arrived = 0

  def reset(self) -> None:
    super().reset()
    with self._lock:
      self.arrived = 0

  async def _respond(self, request):
    with self._lock:
      n, self.arrived = self.arrived, self.arrived + 1
    if n % 4 == 0:
      return await super()._respond(request)
    await request.read()
    auth = request.headers.get("Authorization", "")
    with self._lock:
      self.calls.append(Call(None, dict(request.headers), Behavior("status"), time.monotonic()))
    if n % 4 == 3:
      request.transport.close()
      raise asyncio.CancelledError()
    error = {"message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error"}
    return web.json_response({"error": error}, status=401 if n % 4 == 1 else 500)


@pytest.fixture(scope="module")
def server():
  with KeyServer(responder=lambda _: "<info>The capital of Eritrea is Asmara.</info>") as s:
    yield s


@pytest.fixture(scope="module")
def asking_model(tmp_path_factory):
  """An HF-dir model that always sends MESSAGE: a bigram chain on one-hot embeddings.

  Attention and MLP outputs are zero, so each position's logits depend only on its token;
  lm_head maps each chain token to the next with a margin of 80 nats.
  """
  from safetensors.numpy import load_file, save_file
  from seekjax.models.api import load_tokenizer
  path = _write_hf_dir(str(tmp_path_factory.mktemp("asking") / "model"))
  tok = load_tokenizer()
  chain = [tok.encode("\n")[-1]] + tok.encode(MESSAGE)   # the prompt ends with "\n"
  tensors = load_file(os.path.join(path, "model.safetensors"))
  vocab, hidden = tensors["model.embed_tokens.weight"].shape
  dims = {t: i for i, t in enumerate(dict.fromkeys(chain))}
  assert len(dims) <= hidden
  embed, head = np.zeros((vocab, hidden), np.float32), np.zeros((vocab, hidden), np.float32)
  for t, d in dims.items():
    embed[t, d] = 1.0
  for t, nxt in zip(chain, chain[1:]):
    head[nxt, dims[t]] = 10.0   # rmsnorm makes the one-hot 8: logit 80
  tensors["model.embed_tokens.weight"], tensors["lm_head.weight"] = embed, head
  for name in tensors:
    if name.endswith(("o_proj.weight", "down_proj.weight")):
      tensors[name] = np.zeros_like(tensors[name])
  save_file(tensors, os.path.join(path, "model.safetensors"))
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(dict(config, tie_word_embeddings=False), f)
  return path


def _train(workdir, server, model_dir, key, cache):
  args = [f"--config={TINY}", f"--workdir={workdir}", f"--config.model.path={model_dir}",
          "--config.sft.steps=0", "--config.rl.steps=1", "--config.reward.judge=llm",
          "--config.helper.kind=openai", f"--config.helper.base_url={server.base_url}",
          "--config.helper.model=fake", f"--config.helper.api_key_env={KEY_ENV}",
          "--config.helper.timeout=10", "--config.helper.max_retries=1",
          # some calls fail on purpose (401/500): train on the step anyway
          "--config.helper.max_error_share=1.0"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", OPENAI_LOG="debug", **{KEY_ENV: key})
  return subprocess.run([sys.executable, "-m", "seekjax.train", *args], cwd=ROOT, env=env,
                        capture_output=True, timeout=600, check=False)


def _files_holding(directory, needles) -> list[str]:
  """Every file under `directory` whose bytes contain any needle."""
  hits = []
  for dirpath, _, filenames in os.walk(directory):
    for name in filenames:
      with open(os.path.join(dirpath, name), "rb") as f:
        data = f.read()
      if any(n in data for n in needles):
        hits.append(os.path.relpath(os.path.join(dirpath, name), directory))
  return hits


def test_api_key_is_sent_but_never_written(tmp_path_factory, server, asking_model):
  key = f"sk-test-{uuid.uuid4().hex}"
  workdir = str(tmp_path_factory.mktemp("run") / "w")
  server.reset()
  r = _train(workdir, server, asking_model, key,
             str(tmp_path_factory.getbasetemp() / "jax_cache"))  # shared with the other files
  out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
  assert r.returncode == 0 and "Traceback" not in err, err[-3000:]

  # Not vacuous: the helper was really called, with the key, on every request; some
  # calls succeeded and some failed.
  calls = list(server.calls)
  assert len(calls) >= 4, len(calls)
  assert {c.headers.get("Authorization") for c in calls} == {f"Bearer {key}"}
  assert {c.behavior.kind for c in calls} == {"ok", "status"}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    row = json.loads(f.readline())
  assert row["messages_per_episode"] >= 1
  assert row["helper_errors"] >= 1 and row["helper_tokens"] > 0, row

  # Never written: workdir files (binary too), stdout, stderr.
  needles = [key.encode(), key.split("-")[-1].encode(), key.encode("utf-16-le")]
  assert not _files_holding(workdir, needles)
  assert not any(n.decode(errors="ignore") in out + err for n in needles[:2])
  with open(os.path.join(workdir, "config.json")) as f:
    assert KEY_ENV in f.read()   # the config names the variable, not its value
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "1"))
