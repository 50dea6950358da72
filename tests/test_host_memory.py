"""The entry points restart with glibc's malloc keeping large buffers (seekjax/run/host_memory.py)."""
import os
import subprocess
import sys

import pytest

from seekjax.run import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
        "glibc.malloc.trim_threshold=1099511627776:glibc.malloc.hugetlb=1")


def test_tunables_are_added_only_where_they_apply():
  add = host_memory.tunables_for_reuse
  assert add({}, glibc=True, accelerator=False) == OURS
  # the user's own tunables are kept
  assert add({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=16"}, glibc=True,
             accelerator=False) == "glibc.malloc.tcache_count=16:" + OURS
  # ... and left alone where they set up any of ours themselves
  assert add({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, glibc=True,
             accelerator=False) is None
  assert add({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, glibc=True,
             accelerator=False) is None
  assert add({"SEEKJAX_REUSE_MEMORY": "0"}, glibc=True, accelerator=False) is None
  assert add({}, glibc=False, accelerator=False) is None        # musl, macOS
  assert add({}, glibc=True, accelerator=True) is None          # GPU / TPU host
  # JAX_PLATFORMS=cpu runs on the CPU even where a plugin is installed
  assert add({"JAX_PLATFORMS": "cpu"}, glibc=True) == OURS


def _entry(args, **env):
  base = {k: v for k, v in os.environ.items()
          if k not in ("GLIBC_TUNABLES", "SEEKJAX_REUSE_MEMORY")}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=dict(base, **env),
                        capture_output=True, text=True, timeout=120)


needs_glibc = pytest.mark.skipif(
    sys.platform != "linux" or host_memory.tunables_for_reuse({}) is None,
    reason="not a glibc CPU host")


PROBE = """
import os, sys
from seekjax.run import host_memory
if __name__ == "__main__":
  host_memory.restart_with_reused_memory()
  print(os.environ.get("GLIBC_TUNABLES"), host_memory.active(), sys.argv[1:])
"""


@needs_glibc
def test_an_entry_point_restarts_once_with_the_tunables_and_keeps_its_arguments(tmp_path):
  (tmp_path / "probe_entry.py").write_text(PROBE)
  path = os.pathsep.join([str(tmp_path), REPO])
  out = _entry(["-m", "probe_entry", "a", "--b=c"], PYTHONPATH=path)
  assert out.stdout.splitlines() == [f"{OURS} True ['a', '--b=c']"], out.stderr
  off = _entry(["-m", "probe_entry", "a"], PYTHONPATH=path, SEEKJAX_REUSE_MEMORY="0")
  assert off.stdout.splitlines() == ["None False ['a']"], off.stderr
  # seekjax.train restarts too, and still exits as it would (its own test checks that a
  # bad flag prints one line: tests/test_configlib.py)
  train = _entry(["-m", "seekjax.train", "--config=configs/no_such_config.py"])
  assert train.returncode == 2
  assert train.stderr.strip().splitlines() == [
      "error: --config: no such .py file 'configs/no_such_config.py' (expected FILE.py[:arg])"]


# A program whose [384 x 49152] logits (75 MB) are a temporary, as in the LM head.
FAULTS = """
import resource, jax, jax.numpy as jnp
x, w = jnp.ones((384, 576)) / 576, jnp.ones((576, 49152))
f = jax.jit(lambda x, w: jnp.sum(jnp.exp(x @ w - 1.0), axis=-1))
f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


@needs_glibc
def test_the_tunables_stop_the_page_faults_of_a_fresh_xla_temporary():
  """Without them each call maps the 75 MB temporary afresh and faults in every 4 KiB page
  (about 18,000 a call); with them the freed block is reused."""
  plain = int(_entry(["-c", FAULTS], JAX_PLATFORMS="cpu").stdout.split()[-1])
  reused = int(_entry(["-c", FAULTS], JAX_PLATFORMS="cpu", GLIBC_TUNABLES=OURS).stdout.split()[-1])
  assert plain > 10_000
  assert reused < plain / 20, (plain, reused)
