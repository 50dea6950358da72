"""The lock (requirements/lock.txt) agrees with setup.py, and the Makefile installs with it.

Every requirement of setup.py (install_requires and every extra) must be pinned in the lock
at a version its specifier admits; otherwise `pip install -c lock` fails on a fresh machine,
or installs what setup.py forbids. Reads files only: no network, no pip.
"""
import ast
import importlib.util
import os
import re

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, "requirements", "lock.txt")


def setup_requirements(path=os.path.join(ROOT, "setup.py")) -> dict:
  """{'install_requires' or extra name: [Requirement]} read from setup()'s literal arguments."""
  with open(path) as f:
    tree = ast.parse(f.read())
  calls = [n for n in ast.walk(tree)
           if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
  assert len(calls) == 1, "setup.py must call setup() exactly once"
  kwargs = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords
            if k.arg in ("install_requires", "extras_require")}
  groups = {"install_requires": kwargs["install_requires"], **kwargs.get("extras_require", {})}
  return {g: [Requirement(r) for r in reqs] for g, reqs in groups.items()}


def lock_pins(text: str) -> dict:
  """{canonical name: Version} from a constraints file of `name==version` lines."""
  pins = {}
  for line in text.splitlines():
    line = line.split("#")[0].strip()
    if not line:
      continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.!]*)", line)
    assert m, f"lock line is not an exact name==version pin: {line!r}"
    name = canonicalize_name(m.group(1))
    assert name not in pins, f"{name} pinned twice in the lock"
    pins[name] = Version(m.group(2))
  return pins


def lock_problems(groups: dict, pins: dict) -> list:
  """One line per requirement the lock leaves unpinned or pins outside its specifier."""
  problems = []
  for group, reqs in groups.items():
    for req in reqs:
      name = canonicalize_name(req.name)
      if name not in pins:
        problems.append(f"{group}: {req} is not pinned in the lock")
      elif not req.specifier.contains(pins[name], prereleases=True):
        problems.append(f"{group}: {req} does not admit the locked {name}=={pins[name]}")
  return problems


@pytest.fixture(scope="module")
def pins():
  with open(LOCK) as f:
    return lock_pins(f.read())


def test_every_setup_requirement_is_pinned_at_a_version_it_admits(pins):
  groups = setup_requirements()
  assert {"install_requires", "test", "torch", "cuda", "tpu"} <= set(groups)
  assert lock_problems(groups, pins) == []


def test_a_disagreement_is_reported():
  groups = {"install_requires": [Requirement("jax>=0.6.1"), Requirement("flax>=0.10")],
            "test": [Requirement("pytest>=8")]}
  pins = {"jax": Version("0.5.0"), "flax": Version("0.12.8")}
  assert lock_problems(groups, pins) == [
      "install_requires: jax>=0.6.1 does not admit the locked jax==0.5.0",
      "test: pytest>=8 is not pinned in the lock"]


def test_accelerator_packages_are_pinned_to_the_locked_jaxlib(pins):
  """jax's cuda12/tpu extras require the plugin at jaxlib's exact version; a lock refreshed
  for jax but not for the plugins would make `pip install -c lock '.[cuda]'` unsolvable."""
  assert pins["jaxlib"] == pins["jax"]
  for plugin in ("jax-cuda12-plugin", "jax-cuda12-pjrt"):
    assert pins[plugin] == pins["jaxlib"], plugin
  assert "libtpu" in pins


def test_no_local_version_labels_so_the_pins_resolve_on_any_index(pins):
  assert all(v.local is None for v in pins.values())


def test_the_makefile_installs_with_the_lock():
  with open(os.path.join(ROOT, "Makefile")) as f:
    makefile = f.read()
  assert re.search(r"^LOCK \?= requirements/lock\.txt$", makefile, re.M)
  installs = re.findall(r"^\t\$\(BIN\)/pip install .*$", makefile, re.M)
  assert len(installs) == 2 and all("-c $(LOCK)" in line for line in installs), installs


def test_merge_pins_drops_local_labels_and_the_project_itself():
  spec = importlib.util.spec_from_file_location(
      "merge_pins", os.path.join(ROOT, "requirements", "merge_pins.py"))
  merge_pins = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(merge_pins)
  assert merge_pins.freeze_pins("torch==2.13.0+cpu\nJinja2==3.1.6\n") == {
      "torch": "torch==2.13.0", "jinja2": "Jinja2==3.1.6"}
  report = {"install": [{"metadata": {"name": "seekjax", "version": "0.1.0"}},
                        {"metadata": {"name": "libtpu", "version": "0.0.42.1"}}]}
  assert merge_pins.report_pins(report) == {"libtpu": "libtpu==0.0.42.1"}
