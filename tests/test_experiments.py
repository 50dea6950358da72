"""Each study script runs end to end on a tiny grid, writing its table and PNGs, and resumes."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script,pngs", [
    ("scaling.py", ["scaling_messages_per_episode.png", "scaling_em.png"]),
    ("constraints.py", ["frontier_messages.png", "frontier_leak.png"]),
    ("transfer.py", ["transfer_em.png"]),
])
def test_study_runs_on_a_tiny_grid(script, pngs, tmp_path):
  out = tmp_path / "out"
  cmd = [sys.executable, os.path.join(ROOT, "experiments", script), "--out", str(out), "--tiny"]
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (out / "results.md").exists() and (out / "results.json").exists()
  for p in pngs:
    assert (out / p).stat().st_size > 1000
  # A rerun finds every cell finished and only rewrites the table.
  r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
  assert r2.returncode == 0 and "[grid] cell" not in r2.stderr
