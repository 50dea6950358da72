"""The entry points restart with glibc's huge-page tunable (seekjax/run/hugepages.py)."""
import os
import subprocess
import sys

import pytest

from seekjax.run import hugepages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tunable_is_added_only_where_it_can_help():
  add = hugepages.tunables_with_hugepages
  assert add({}, glibc=(2, 36), mode="madvise") == "glibc.malloc.hugetlb=1"
  assert add({}, glibc=(2, 35), mode="always") == "glibc.malloc.hugetlb=1"
  # the user's own tunables are kept
  assert add({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc=(2, 36),
             mode="madvise") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert add({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, glibc=(2, 36), mode="madvise") is None
  assert add({"SEEKJAX_HUGEPAGES": "0"}, glibc=(2, 36), mode="madvise") is None
  assert add({}, glibc=(2, 34), mode="madvise") is None        # glibc without the tunable
  assert add({}, glibc=(2, 36), mode="never") is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hugepages.thp_mode(str(path)) == "madvise"
  path.write_text("garbage\n")
  assert hugepages.thp_mode(str(path)) is None
  assert hugepages.thp_mode(str(tmp_path / "missing")) is None


def _entry(args, **env):
  base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SEEKJAX_HUGEPAGES")}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=dict(base, **env),
                        capture_output=True, text=True, timeout=120)


needs_thp = pytest.mark.skipif(
    sys.platform != "linux" or hugepages.tunables_with_hugepages({}) is None,
    reason="this machine has no glibc >= 2.35 with transparent huge pages")


@needs_thp
def test_entry_point_restarts_once_with_the_tunable_and_keeps_its_arguments():
  out = _entry(["-m", "seekjax.train", "--config=configs/no_such_config.py"])
  assert out.stderr.count("restarting with GLIBC_TUNABLES=glibc.malloc.hugetlb=1") == 1
  # the restarted process saw the same arguments and exits as the original would
  assert "no such .py file 'configs/no_such_config.py'" in out.stderr
  assert out.returncode == 2
  off = _entry(["-m", "seekjax.train", "--config=configs/no_such_config.py"],
               SEEKJAX_HUGEPAGES="0")
  assert "restarting" not in off.stderr and off.returncode == 2


FAULTS = """
import resource, jax, jax.numpy as jnp
x = jnp.ones((384, 49152), jnp.float32)
f = jax.jit(lambda v: v * 2.0)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


@needs_thp
def test_the_tunable_cuts_the_page_faults_of_a_fresh_xla_buffer():
  """A 75 MB program output is a fresh mmap each call: one fault per 4 KiB page without
  the tunable (about 18,000), far fewer with it (one per 2 MiB page where the kernel has
  them)."""
  plain = int(_entry(["-c", FAULTS], JAX_PLATFORMS="cpu").stdout.split()[-1])
  huge = int(_entry(["-c", FAULTS], JAX_PLATFORMS="cpu",
                    GLIBC_TUNABLES="glibc.malloc.hugetlb=1").stdout.split()[-1])
  assert plain > 10_000
  assert huge < plain / 4, (plain, huge)
