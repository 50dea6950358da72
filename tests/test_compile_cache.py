"""The persistent cache keeps CPU programs with host callbacks (seekjax/compile_cache.py):
a second process reads them back, their callbacks still run, and a damaged entry is
compiled again rather than loaded."""
import json
import os
import subprocess
import sys

import pytest

from seekjax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A while loop whose body calls back to the host twice (one ordered, one not), the shape of
# the rollout's decode loop; prints the result, the calls the host saw and the counters.
SCRIPT = r"""
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import io_callback
from seekjax import compile_cache, compiles
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
compile_cache.enable()
compiles.install()
calls = []
def host(x):
  calls.append(int(x))
  return np.int32(int(x) * 10)
@jax.jit
def loop(n):
  def body(c):
    i, acc = c
    a = io_callback(host, jax.ShapeDtypeStruct((), jnp.int32), i, ordered=True)
    b = io_callback(host, jax.ShapeDtypeStruct((), jnp.int32), i + 100, ordered=False)
    return i + 1, acc + a + b
  return jax.lax.while_loop(lambda c: c[0] < n, body, (jnp.int32(0), jnp.int32(0)))[1]
out = int(loop(jnp.int32(4)))
totals, _ = compiles.snapshot()
print(json.dumps({"out": out, "calls": calls, "hits": totals["compile_cache_hits"],
                  "compiles": totals["compiles"]}))
"""


def _run(cache, **extra_env):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **extra_env)
  env.pop("SEEKJAX_COMPILE_CACHE", None)
  r = subprocess.run([sys.executable, "-c", SCRIPT, str(cache)], capture_output=True,
                     text=True, env=env, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def _entries(cache):
  return [n for n in os.listdir(cache) if n.startswith(compile_cache.CALLBACK_PREFIX)]


def test_a_program_with_host_callbacks_is_read_back_and_its_callbacks_run(tmp_path):
  cache = tmp_path / "jax"
  expected = {"out": sum(10 * i + 10 * (i + 100) for i in range(4)),
              "calls": [c for i in range(4) for c in (i, i + 100)]}
  first, _ = _run(cache)
  assert {k: first[k] for k in expected} == expected
  assert first["hits"] == 0 and first["compiles"] >= 1
  assert len(_entries(cache)) == 1
  second, _ = _run(cache)
  assert {k: second[k] for k in expected} == expected     # the host was called again
  # every program comes back (jax's own entries and this one)
  assert second["hits"] == second["compiles"] == first["compiles"]

  # A damaged entry is not loaded: a warning, a fresh compile, and a whole entry again.
  (entry,) = _entries(cache)
  path = cache / entry
  data = bytearray(path.read_bytes())
  data[-10] ^= 0xFF
  path.write_bytes(bytes(data))
  third, err = _run(cache)
  assert {k: third[k] for k in expected} == expected
  assert third["hits"] == third["compiles"] - 1
  assert "could not read" in err and "checksum" in err
  fourth, _ = _run(cache)
  assert fourth["hits"] == fourth["compiles"]
  # SEEKJAX_CALLBACK_CACHE=0 leaves the program to jax, which compiles it again
  off, _ = _run(cache, SEEKJAX_CALLBACK_CACHE="0")
  assert {k: off[k] for k in expected} == expected
  assert off["hits"] == off["compiles"] - 1


def test_pack_checks_the_whole_entry():
  blob = os.urandom(1000)
  packed = compile_cache._pack(blob)
  assert compile_cache._unpack(packed) == blob
  with pytest.raises(ValueError, match="checksum"):
    compile_cache._unpack(packed[:-1])
  with pytest.raises(ValueError, match="not a seekjax"):
    compile_cache._unpack(b"junk" * 20)


def test_another_jax_signature_leaves_jax_alone(monkeypatch):
  from jax._src import compiler
  was_installed = compile_cache._original is not None
  compile_cache.uninstall_callback_cache()
  try:
    def other(backend, computation, options):   # a jax whose step takes other arguments
      raise AssertionError("not called")
    monkeypatch.setattr(compiler, "compile_or_get_cached", other)
    assert compile_cache.install_callback_cache() is False
    assert compiler.compile_or_get_cached is other
  finally:
    monkeypatch.undo()
    compile_cache.uninstall_callback_cache()
    assert compile_cache.install_callback_cache() is True   # the real signature
    if not was_installed:
      compile_cache.uninstall_callback_cache()
