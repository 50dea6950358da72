"""Config files and command-line overrides: `--config=configs/x.py[:arg] --config.rl.beta=0.01`.

Configs are Python files with `get_config(arg="")` returning an ml_collections
ConfigDict (big_vision style). Overrides are typed by the field they replace; an
unknown key or a value of the wrong type is a one-line ConfigError.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re

import ml_collections

SECRET_KEY_RE = re.compile(r"(api_key|secret|token|password)$", re.I)


class ConfigError(ValueError):
  """A config problem, reported in one line."""


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Load `path.py` or `path.py:arg` and call its get_config(arg)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"--config: no such file {path!r}")
  module_spec = importlib.util.spec_from_file_location("seekjax_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - a broken config file is a config error
    raise ConfigError(f"{path}: cannot load ({type(e).__name__}: {e})") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: has no get_config() function")
  cfg = module.get_config(arg) if arg else module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
  return cfg


def _parse_value(key: str, raw: str, current):
  """Convert `raw` to the type of `current` (the value it replaces)."""
  if isinstance(current, bool):
    low = raw.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"config.{key}: expected bool, got {raw!r}")
  if isinstance(current, (int, float)) and not isinstance(current, bool):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      raise ConfigError(f"config.{key}: expected {type(current).__name__}, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"config.{key}: expected {type(current).__name__}, got {raw!r}")
    if isinstance(current, int) and isinstance(value, float):
      if not value.is_integer():
        raise ConfigError(f"config.{key}: expected int, got {raw!r}")
      value = int(value)
    return type(current)(value)
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = tuple(s.strip() for s in raw.split(",") if s.strip())
    if not isinstance(value, (tuple, list)):
      value = (value,)
    return type(current)(value)
  if current is None:
    try:
      return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      return raw
  return raw


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]):
  """Apply ["rl.beta=0.01", ...] in place; returns cfg."""
  for item in overrides:
    key, eq, raw = item.partition("=")
    if not eq:
      raise ConfigError(f"--config.{key}: needs a value (--config.{key}=VALUE)")
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = ".".join(parts[:i]) or "<top>"
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ConfigError(f"config.{key}: unknown key {part!r} under {where}; valid keys: "
                          f"{', '.join(valid)}")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"config.{key}: is a section; set one of its keys: "
                        f"{', '.join(sorted(current.keys()))}")
    value = _parse_value(key, raw, current)
    try:
      node[parts[-1]] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.{key}: {e}") from None
  return cfg


def config_to_dict(cfg) -> dict:
  """A JSON-able dict of the resolved config; secret-looking values are refused."""
  def walk(node, prefix):
    out = {}
    for k, v in node.items():
      name = f"{prefix}{k}"
      if isinstance(v, ml_collections.ConfigDict):
        out[k] = walk(v, name + ".")
      else:
        if SECRET_KEY_RE.search(k) and v:
          raise ConfigError(f"config.{name}: holds a secret value; configs name the "
                            "environment variable instead (e.g. api_key_env)")
        out[k] = list(v) if isinstance(v, tuple) else v
    return out
  return json.loads(json.dumps(walk(cfg, ""), default=str))


def dump_config(cfg, workdir: str) -> str:
  """Write the resolved config as config.json (and a readable config.txt)."""
  d = config_to_dict(cfg)
  path = os.path.join(workdir, "config.json")
  with open(path, "w") as f:
    json.dump(d, f, indent=2, sort_keys=True)
  with open(os.path.join(workdir, "config.txt"), "w") as f:
    f.write(str(cfg))
  return path


FLAGS = ("overwrite",)
INT_FLAGS = ("stop_after",)


def parse_argv(argv: list[str]):
  """(cfg, workdir, flags) from `--config=F[:arg] --workdir=D [--overwrite] [--config.k=v]`."""
  config_spec, workdir, overrides, flags = None, None, [], {}
  for a in argv:
    if a.startswith("--config="):
      config_spec = a.split("=", 1)[1]
    elif a.startswith("--config."):
      overrides.append(a[len("--config."):])
    elif a.startswith("--workdir="):
      workdir = a.split("=", 1)[1]
    elif a.lstrip("-") in FLAGS:
      flags[a.lstrip("-")] = True
    elif a.lstrip("-").split("=")[0] in INT_FLAGS and "=" in a:
      name, raw = a.lstrip("-").split("=", 1)
      try:
        flags[name] = int(raw)
      except ValueError:
        raise ConfigError(f"--{name}: expected an int, got {raw!r}") from None
    else:
      raise ConfigError(f"unknown argument {a!r}; expected --config=FILE, --workdir=DIR, "
                        f"--config.KEY=VALUE, --stop_after=N or --overwrite")
  if config_spec is None:
    raise ConfigError("--config=FILE.py is required")
  if workdir is None:
    raise ConfigError("--workdir=DIR is required")
  cfg = apply_overrides(load_config(config_spec), overrides)
  return cfg, workdir, flags
