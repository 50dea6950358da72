"""Run configs: `--config=configs/x.py[:arg] --config.rl.kl_beta=0.05` through absl flags.

Config files return an ml_collections ConfigDict from `get_config(arg)` and derive from
configs/_base.py, the one schema (`SCHEMA`: each key's default and allowed values).
`ml_collections.config_flags` loads the file and types the overrides; this module
checks the result once, before anything is written, and reports every problem as a
one-line `ConfigError` that names the key, the value and what is allowed:

    config.rl.group_size: got 0; allowed: an int >= 2
    config.rl.betaa: unknown key 'betaa' under rl; valid keys: ... (did you mean 'beta'?)

Configs hold no secrets, only the names of environment variables that do
(`api_key_env="OPENAI_API_KEY"`): a credential-looking value is refused without being
shown, and URLs lose their query string and user:password@ in what is written.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import FlagOrderError

from configs import _base

_SECRET_NAME = re.compile(r"(api_?key|passw(or)?d|private_key)|(^|_)(secret|secret_key|"
                          r"access_token|auth_token|bearer_token|hf_token|credentials?)$", re.I)
_SECRET_NAME_OK = re.compile(r"_(env|env_var|file|path|name)$", re.I)
# Credential shapes anywhere inside a value: provider key prefixes, bearer tokens,
# `key=`/`token=` assignments (URL queries), and long hex strings (raw keys).
_SECRET_TEXT = re.compile(
    r"(?<![A-Za-z0-9])(sk|pk|rk)-[A-Za-z0-9_-]+|(?<![A-Za-z0-9])(hf|gh[pousr]|glpat|xox[abprs])"
    r"[_-][A-Za-z0-9_-]{12,}|AKIA[0-9A-Z]{16}|bearer\s+\S+|(key|token|secret|passw(or)?d|"
    r"auth|sig|signature|credential)s?=[^\s&;]", re.I)
_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_URL_PARTS = re.compile(r"(\w+://)([^/?#\s@]*@)?([^?#\s]*)([?#]\S*)?")


class ConfigError(ValueError):
  """A config problem, reported in one line."""


class UnknownConfigKey(ConfigError):
  """A key that configs/_base.py does not have (or a config lacks one that it has)."""


# ----------------------------------------------------------------------------- parsing


def parse_argv(argv: Sequence[str], *, bool_flags: Sequence[str] = ("overwrite",),
               int_flags: Sequence[str] = ("stop_after",), str_flags: Sequence[str] = (),
               need_workdir: bool = True):
  """(cfg, workdir, flags) from a CLI's arguments (without the program name).

  --config=FILE.py[:arg] --workdir=DIR --config.KEY=VALUE ..., and the given extra absl
  flags (`--name`/`--noname` for bools, `--name=V` otherwise); `flags` maps each extra
  flag to its value (False / None when not given). The config is validated.
  """
  argv = [str(a) for a in argv]
  usage = _usage(bool_flags, int_flags, str_flags)
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  if spec is None:
    raise ConfigError(f"--config=FILE.py is required; {usage}")
  path = spec.split(":", 1)[0]
  if not path.endswith(".py") or not os.path.isfile(path):
    raise ConfigError(f"--config: no such .py file {path!r} (expected FILE.py[:arg])")
  for arg in argv:
    key = re.match(r"--(?:no)?config\.([^=]*)", arg)
    if key:
      schema_entry(key.group(1))
  sys.modules.pop("config_config", None)   # config_flags' module of the last file loaded
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file, FILE.py[:arg]", flag_values=fv,
                                  sys_argv=["seekjax", *argv])
  flags.DEFINE_string("workdir", None, "where the run writes", flag_values=fv)
  for name in bool_flags:
    flags.DEFINE_boolean(name, False, name, flag_values=fv)
  for name in int_flags:
    flags.DEFINE_integer(name, None, name, flag_values=fv)
  for name in str_flags:
    flags.DEFINE_string(name, None, name, flag_values=fv)
  try:
    rest = fv(["seekjax", *argv])[1:]
  except flags.UnrecognizedFlagError as e:
    raise ConfigError(f"unknown flag --{e.flagname}; {usage}") from None
  except FlagOrderError:
    raise ConfigError("--config=FILE.py must come before the --config.KEY=VALUE overrides") from None
  except flags.IllegalFlagValueError as e:
    raise ConfigError(_bad_flag_value(fv, argv, path, str(e))) from None
  except Exception as e:  # noqa: BLE001 - a config file that fails to run
    raise ConfigError(f"{path}: cannot load ({type(e).__name__}: {_one_line(e)})") from None
  if rest:
    raise ConfigError(f"unexpected argument {rest[0]!r}; {usage}")
  if need_workdir and not fv.workdir:
    raise ConfigError(f"--workdir=DIR is required; {usage}")
  cfg = fv.config
  if not isinstance(cfg, ml_collections.ConfigDict):
    error = getattr(cfg, "__dict__", {}).get("_error", f"get_config() returned {type(cfg).__name__}")
    raise ConfigError(f"{path}: cannot load ({_one_line(error)}; expected a ConfigDict)")
  validate(cfg, path)
  return cfg, fv.workdir, {n: fv[n].value for n in (*bool_flags, *int_flags, *str_flags)}


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The validated config of `FILE.py[:arg]` with overrides like ["rl.kl_beta=0.1"]."""
  argv = [f"--config={spec}"] + [f"--config.{o.removeprefix('config.')}" for o in overrides]
  return parse_argv(argv, bool_flags=(), int_flags=(), need_workdir=False)[0]


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]):
  """Apply overrides like ["rl.kl_beta=0.1"] to cfg in place, as `--config.` flags would
  (each typed by its field), then validate; returns cfg."""
  argv = [f"--config.{o.removeprefix('config.')}" for o in overrides]
  for arg in argv:
    schema_entry(re.match(r"--(?:no)?config\.([^=]*)", arg).group(1))
  fv = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", cfg, flag_values=fv, sys_argv=["seekjax", *argv])
  try:
    fv(["seekjax", *argv])
  except flags.IllegalFlagValueError as e:
    raise ConfigError(_bad_flag_value(fv, argv, "", str(e))) from None
  validate(cfg)
  return cfg


def schema_entry(key: str):
  """configs/_base.py's (default, allowed) for a dotted key; UnknownConfigKey when absent."""
  parts, node = key.split("."), _base.SCHEMA
  for i, part in enumerate(parts):
    where = ".".join(parts[:i]) or "config"
    if not isinstance(node, dict):
      raise UnknownConfigKey(f"config.{key}: config.{where} is a value, not a section")
    if part not in node:
      raise UnknownConfigKey(f"config.{key}: {_unknown(part, where, node)}")
    node = node[part]
  if isinstance(node, dict):
    raise ConfigError(f"config.{key}: is a section; set one of its keys: {', '.join(node)}")
  return node


def _unknown(key: str, where: str, node: dict) -> str:
  near = difflib.get_close_matches(key, list(node), n=1)
  hint = f" (did you mean {near[0]!r}?)" if near else ""
  return f"unknown key {key!r} under {where}; valid keys: {', '.join(sorted(node))}{hint}"


def _bad_flag_value(fv, argv, path: str, message: str) -> str:
  """One line for absl's IllegalFlagValueError: a config file that raised while it ran
  (its traceback's last line), or a value that its flag's type cannot parse."""
  name = re.match(r"flag --([^=]+)=", message).group(1)
  if name == "config":
    lines = [l for l in message.splitlines() if l.strip()]
    return f"{path}: cannot load ({lines[-1].strip()})"
  raw = next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith(f"--{name}=")), "")
  kind = {"string": "str", "tuple": "a tuple like (1, 2)"}.get(fv[name].flag_type(),
                                                                fv[name].flag_type())
  shown = name if name.startswith("config.") else f"--{name}"
  return f"{shown}: expected {kind}, got {_shown(name, raw)}"


def _usage(bool_flags, int_flags, str_flags) -> str:
  extra = [f"[--{n}]" for n in bool_flags] + [f"[--{n}=N]" for n in int_flags]
  extra += [f"[--{n}=VALUE]" for n in str_flags]
  return " ".join(["usage: --config=FILE.py[:arg] --workdir=DIR [--config.KEY=VALUE ...]"] + extra)


def _one_line(e) -> str:
  return " ".join(str(e).split())


# ----------------------------------------------------------------------------- validation


def validate(cfg, path: str = "") -> None:
  """Raise a one-line ConfigError unless cfg has exactly configs/_base.py's keys (a key
  problem names the config file), each of its type, allowed and free of secrets."""
  try:
    _check(cfg, _base.SCHEMA, "config")
  except UnknownConfigKey as e:   # overrides are checked before: the file added the key
    raise UnknownConfigKey(f"{path}: {e}" if path else str(e)) from None


def _check(cfg, schema: dict, prefix: str) -> None:
  for key in cfg.keys():
    if key not in schema:
      where = prefix.split(".", 1)[1] if "." in prefix else prefix
      raise UnknownConfigKey(f"{prefix}.{key}: {_unknown(key, where, schema)}")
  for key, entry in schema.items():
    name = f"{prefix}.{key}"
    if key not in cfg:
      raise UnknownConfigKey(f"{name}: missing (config files derive from configs/_base.py)")
    if isinstance(entry, dict):
      if not isinstance(cfg[key], ml_collections.ConfigDict):
        raise ConfigError(f"{name}: expected a section, got {_shown(name, cfg[key])}")
      _check(cfg[key], entry, name)
    else:
      _check_value(name, cfg[key], *entry)


def _check_value(name: str, value, default, allowed) -> None:
  if _secret_problem(name, value):
    raise ConfigError(_secret_problem(name, value))
  if value is None and isinstance(default, _base.optional):
    return
  want = default.type if isinstance(default, _base.optional) else type(default)
  items = value if isinstance(value, (tuple, list)) and want is tuple else (value,)
  item_type = type(default[0]) if want is tuple and default else want
  if (want is tuple) != isinstance(value, (tuple, list)) or any(
      type(v) is not item_type and not (item_type is float and type(v) is int) for v in items):
    what = f"a tuple of {item_type.__name__}" if want is tuple else want.__name__
    raise ConfigError(f"{name}: expected {what}, got {_shown(name, value)}")
  for v in items:
    if not _allowed(v, allowed):
      raise ConfigError(f"{name}: got {_shown(name, value)}; allowed: {_describe(v, allowed)}")


def _allowed(v, allowed) -> bool:
  """Whether v is within `allowed` (a rule of configs/_base.py); floats must be finite."""
  if isinstance(v, float) and not math.isfinite(v):
    return False
  if allowed is None:
    return True
  if isinstance(allowed, tuple):
    return v in allowed
  bound = re.fullmatch(r"(>=?)\s*(\S+)", allowed)
  if bound:
    return v >= float(bound[2]) if bound[1] == ">=" else v > float(bound[2])
  lo_in, lo, hi, hi_in = re.fullmatch(r"([\[(])\s*(\S+),\s*(\S+)\s*([\])])", allowed).groups()
  above = v >= float(lo) if lo_in == "[" else v > float(lo)
  below = v <= float(hi) if hi_in == "]" else v < float(hi)
  return above and below


def _describe(v, allowed) -> str:
  if isinstance(allowed, tuple):
    return "one of " + ", ".join(allowed)
  what = "a finite float" if isinstance(v, float) else "an int"
  return f"{what} in {allowed}" if allowed and allowed[0] in "[(" else f"{what} {allowed or ''}".strip()


# ----------------------------------------------------------------------------- secrets


def _is_secret(key: str, value) -> bool:
  """Whether `value` under `key` is, or holds, a credential."""
  if isinstance(value, (tuple, list)):
    return any(_is_secret(key, v) for v in value)
  if _SECRET_NAME.search(key) and not _SECRET_NAME_OK.search(key) and value not in (None, "", False):
    return True
  if not isinstance(value, str):
    return False
  hex_ok = key == "path" or key.endswith(("_path", "_dir"))   # e.g. an HF snapshot's sha
  return bool(_SECRET_TEXT.search(value) or (not hex_ok and _HEX_RUN.search(value)))


def scrub_url(text: str) -> str:
  """`text` with each URL's user:password@ and ?query/#fragment removed (what may be shown)."""
  return _URL_PARTS.sub(lambda m: m[1] + m[3] + ("?..." if m[4] else ""), text)


def _shown(key: str, value) -> str:
  """The value as an error message may show it (never a secret)."""
  if _is_secret(key.rsplit(".", 1)[-1], value):
    return "<redacted>"
  return repr(scrub_url(value) if isinstance(value, str) else value)


def check_no_secrets(cfg, prefix: str = "config") -> None:
  """Raise ConfigError naming (never showing) the first value that holds a secret."""
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      check_no_secrets(v, f"{prefix}.{k}")
    elif _secret_problem(f"{prefix}.{k}", v):
      raise ConfigError(_secret_problem(f"{prefix}.{k}", v))


def _secret_problem(name: str, value) -> str | None:
  """The one-line refusal of a value that is, or may be, a credential (never shown)."""
  key = name.rsplit(".", 1)[-1]
  if _is_secret(key, value):
    return (f"{name}: holds a secret-looking value (not shown); configs name the environment "
            "variable instead (e.g. api_key_env='OPENAI_API_KEY')")
  if key.endswith("_env") and value and not _ENV_NAME.fullmatch(str(value)):
    return f"{name}: expected an environment variable name ([A-Z_][A-Z0-9_]*); value not shown"
  return None


# ----------------------------------------------------------------------------- writing


def config_to_dict(cfg) -> dict:
  """The config as plain JSON types (tuples become lists, URLs scrubbed); refuses secrets."""
  check_no_secrets(cfg)

  def plain(v):
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
      return [plain(x) for x in v]
    if isinstance(v, str):
      return scrub_url(v)
    return v if v is None or isinstance(v, (bool, int, float)) else str(v)
  return plain(cfg)


def base_defaults() -> dict:
  """configs/_base.py's defaults as plain JSON types."""
  return config_to_dict(_base.get_config())


def fill_added_keys(saved: dict, current: dict, defaults: dict) -> dict:
  """`saved` (a workdir's config.json) plus each key it lacks that `current` has at its base
  default: a run written before a setting existed ran as that setting's default does
  (new settings default to the old behaviour), so it is the same run, not another one."""
  out = dict(saved)
  for k, v in current.items():
    if k not in out:
      if k in defaults and defaults[k] == v:
        out[k] = v
    elif isinstance(v, dict) and isinstance(out[k], dict) and isinstance(defaults.get(k), dict):
      out[k] = fill_added_keys(out[k], v, defaults[k])
  return out


def to_yaml(d: dict, indent: int = 0) -> str:
  """A readable YAML rendering of a JSON-able dict (scalars in JSON syntax, valid YAML)."""
  pad, lines = " " * indent, []
  for k in sorted(d):
    if isinstance(d[k], dict) and d[k]:
      lines += [f"{pad}{k}:", to_yaml(d[k], indent + 2)]
    elif isinstance(d[k], float) and not math.isfinite(d[k]):
      lines.append(f"{pad}{k}: " + (".nan" if math.isnan(d[k]) else ("" if d[k] > 0 else "-") + ".inf"))
    else:
      lines.append(f"{pad}{k}: {json.dumps(d[k])}")
  return "\n".join(lines)


def dump_config(cfg, path: str) -> str:
  """Write the config as JSON plus a readable YAML twin; returns the JSON path.

  `path` is a directory (config.json and config.yaml in it) or a .json file path (the
  YAML beside it). Each file is written atomically; a config holding a secret is
  refused (ConfigError) before anything is written.
  """
  d = config_to_dict(cfg)
  if os.path.isdir(path) or not path.endswith(".json"):
    os.makedirs(path, exist_ok=True)
    path = os.path.join(path, "config.json")
  else:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_atomic(path, json.dumps(d, indent=2, sort_keys=True) + "\n")
  write_atomic(path[:-len(".json")] + ".yaml", to_yaml(d) + "\n")
  return path


def write_atomic(path: str, text: str) -> None:
  """Write `text` to a temporary file beside `path`, then rename it over `path`: a reader
  (or a run restarted after a kill) sees the old file or the new one, never half of one."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
