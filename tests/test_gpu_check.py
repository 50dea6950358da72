"""The GPU check script passes a CPU dry run (tiny shapes) and reports every figure."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(tmp_path):
  out = tmp_path / "gpu.json"
  r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"),
                      "--dry-run", "--out", str(out)], capture_output=True, text=True,
                     timeout=600, check=False)
  assert r.returncode == 0, r.stderr[-3000:]
  import json
  res = json.loads(out.read_text())
  assert res["dry_run"] and res["matmul_peak_flops"] > 0
  assert res["decode_b1"]["tokens_per_s"] > 0 and res["decode_b4"]["tokens_per_s"] > 0
  assert res["train_step"]["flops_per_s"] > 0 and res["train_step"]["seconds"] > 0
  assert "train step" in r.stdout and "decode batch" in r.stdout
