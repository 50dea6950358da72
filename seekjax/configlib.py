"""Config files and command-line overrides: `--config=configs/x.py[:arg] --config.rl.beta=0.01`.

Configs are Python files whose `get_config(arg)` returns an ml_collections ConfigDict
(big_vision style; `file.py:arg` passes "arg"). Overrides are typed by the field they
replace. Every problem is a `ConfigError` (a ValueError) with a one-line message:

    config.rl.beta: expected float, got 'abc'
    config.rl.betaa: unknown key 'betaa' under rl; valid keys: ... (did you mean 'beta'?)

Config files are built from a base config (configs/_base.py), which declares itself with
`declare_base`; a loaded config is checked against every base it was built from, so a
key that a config file adds, not only one that an override names, is refused:

    configs/x.py: config.rl.klbeta: unknown key 'klbeta' under rl; valid keys: ...

Configs hold no secrets, only the names of environment variables that do
(`api_key_env="OPENAI_API_KEY"`). A secret-named key with a value, or a value that looks
like a credential, is refused on load and never written by `dump_config`.
"""
from __future__ import annotations

import ast
import contextvars
import copy
import difflib
import hashlib
import importlib.util
import inspect
import json
import math
import os
import re
from typing import Any, Sequence

import ml_collections

# Key names that would hold a credential: any name containing api_key/password, or ending
# in secret/access_token/... Names ending in _env/_env_var/_file/_path/_name say where
# the secret lives, not what it is, and are allowed.
_SECRET_NAME = re.compile(
    r"(api_?key|passw(or)?d|private_key)|(^|_)(secret|secret_key|access_token|auth_token|"
    r"bearer_token|hf_token|credentials?)$", re.I)
_SECRET_NAME_OK = re.compile(r"_(env|env_var|file|path|name)$", re.I)
# Values that look like a credential whatever their key (OpenAI, Hugging Face, GitHub...).
_SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
                           r"AKIA[0-9A-Z]{16}|Bearer\s+\S{8,})$")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ConfigError(ValueError):
  """A config problem, reported in one line."""


class UnknownConfigKey(ConfigError):
  """An override names a key that the config does not have (or a config file adds one)."""


# The bases declared while `load_config` runs a config file (None outside load_config).
_BASES: contextvars.ContextVar = contextvars.ContextVar("seekjax_config_bases", default=None)


# ----------------------------------------------------------------------------- loading


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Load `path.py` or `path.py:arg` and return its get_config(arg) (get_config() if no arg).

  A config built from a base config (`declare_base`) may only set the base's keys.
  """
  path, _, arg = spec.partition(":")
  if not path.endswith(".py"):
    raise ConfigError(f"--config: expected a .py file (optionally file.py:arg), got {spec!r}")
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no such file {path!r}")
  outer, bases = _BASES.get(), []
  token = _BASES.set(bases)
  try:
    cfg = _run_config_file(path, spec, arg)
  finally:
    _BASES.reset(token)
    if outer is not None:   # a config file that loads another through load_config
      outer.extend(bases)
  for base in bases:
    try:
      check_known_keys(cfg, base)
    except UnknownConfigKey as e:
      raise UnknownConfigKey(f"{path}: {e}") from None
  check_no_secrets(cfg)
  return cfg


def _run_config_file(path: str, spec: str, arg: str) -> ml_collections.ConfigDict:
  """Execute the config file and return its get_config(arg), as a ConfigDict."""
  digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
  module_spec = importlib.util.spec_from_file_location(f"seekjax_config_{digest}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - a broken config file is a config error
    raise ConfigError(f"{path}: cannot load ({type(e).__name__}: {_one_line(e)})") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"{path}: has no get_config() function")
  if arg and not inspect.signature(get_config).parameters:
    raise ConfigError(f"{path}: get_config() takes no argument, but {spec!r} passes {arg!r}")
  try:
    cfg = get_config(arg) if arg else get_config()
  except Exception as e:  # noqa: BLE001
    call = f"get_config({arg!r})" if arg else "get_config()"
    raise ConfigError(f"{path}: {call} failed ({type(e).__name__}: {_one_line(e)})") from None
  if isinstance(cfg, ml_collections.FrozenConfigDict):
    cfg = ml_collections.ConfigDict(cfg)
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, got "
                      f"{type(cfg).__name__}")
  return cfg


def declare_base(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Mark `cfg` as a base config: configs built from it change its values, never add keys.

  A base config file returns `declare_base(c)`. While `load_config` runs a config file,
  each base declared on the way is kept (as a copy, before the file changes it), and
  the loaded config is checked against it with `check_known_keys`. Returns cfg.
  """
  bases = _BASES.get()
  if bases is not None:
    bases.append(copy.deepcopy(cfg))
  return cfg


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())


# ----------------------------------------------------------------------------- overrides


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]):
  """Apply overrides like ["rl.beta=0.01", "model.remat"] to cfg in place; returns cfg.

  Each value is parsed as the type of the field it replaces (see `parse_value`); a bare
  key ("model.remat") sets a bool field to True. Raises UnknownConfigKey for a key the
  config lacks and ConfigError for a value of the wrong type.
  """
  for item in overrides:
    key, eq, raw = item.partition("=")
    key = key.strip()
    if key.startswith("config."):
      key = key[len("config."):]
    node, name = _resolve(cfg, key)
    current = node[name]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"config.{key}: is a section; set one of its keys: "
                        f"{', '.join(sorted(current.keys()))}")
    if not eq:
      if _field_type(node, name) is not bool:
        raise ConfigError(f"config.{key}: needs a value (--config.{key}=VALUE)")
      raw = "true"
    value = parse_value(key, raw, current, _field_type(node, name))
    if value is not None and not _is_secret_free(key.rsplit(".", 1)[-1], value):
      raise ConfigError(f"config.{key}: refusing a secret value; put the secret in an "
                        "environment variable and name that variable in the config")
    try:
      node[name] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.{key}: {_one_line(e)}") from None
  return cfg


def check_known_keys(cfg, schema, prefix: str = "config") -> None:
  """Raises UnknownConfigKey for the first key of cfg that `schema` (a reference config,
  e.g. the base config a file derives from) lacks: a typo such as `c.rl.klbeta = 0.5`
  in a config file would otherwise be added silently and never read."""
  for k, v in cfg.items():
    if k not in schema:
      valid = sorted(schema.keys())
      near = difflib.get_close_matches(k, valid, n=1)
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      where = prefix.split(".", 1)[1] if "." in prefix else prefix
      raise UnknownConfigKey(f"{prefix}.{k}: unknown key {k!r} under {where}; valid keys: "
                             f"{', '.join(valid)}{hint}")
    if isinstance(v, ml_collections.ConfigDict) and isinstance(schema[k], ml_collections.ConfigDict):
      check_known_keys(v, schema[k], f"{prefix}.{k}")


def _resolve(cfg, key: str):
  """(parent ConfigDict, leaf name) for a dotted key; UnknownConfigKey when absent."""
  parts = key.split(".")
  if not key or any(not p for p in parts):
    raise ConfigError(f"config.{key}: malformed key")
  node = cfg
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict):
      where = "config." + ".".join(parts[:i])
      raise UnknownConfigKey(f"config.{key}: {where} is a value, not a section")
    if part not in node:
      where = ".".join(parts[:i]) or "config"
      valid = sorted(node.keys())
      near = difflib.get_close_matches(part, valid, n=1)
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      raise UnknownConfigKey(f"config.{key}: unknown key {part!r} under {where}; "
                             f"valid keys: {', '.join(valid)}{hint}")
    if i < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def _field_type(node, name):
  """The declared type of a field (a placeholder's type even while its value is None)."""
  try:
    return node.get_type(name)
  except (AttributeError, KeyError):
    return type(node[name])


def parse_value(key: str, raw: str, current: Any, field_type: type | None = None):
  """Convert the string `raw` to the type of `current`, the value it replaces.

  bool: true/false/yes/no/on/off/1/0. int: an integer literal ("3.0" is accepted as 3).
  float: any number, inf, nan. str: the text as given. tuple/list: "(1, 2)", "[1, 2]" or
  "1,2", each element converted like the current elements. None (untyped): a Python
  literal if it parses, else the text. "None" sets any field to None.
  """
  field_type = field_type or type(current)
  if raw.strip() == "None" and field_type is not str:
    return None
  if field_type is type(None):
    try:
      return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      return raw
  if field_type in (tuple, list):
    return field_type(_parse_sequence(key, raw, current))
  if field_type is dict:
    value = _literal(raw)
    if not isinstance(value, dict):
      raise ConfigError(f"config.{key}: expected dict, got {_shown(key, raw)}")
    return value
  if field_type in (bool, int, float, str):
    return _parse_scalar(key, raw, field_type)
  return raw


def _parse_scalar(key: str, raw: str, field_type: type):
  text = raw.strip()
  if field_type is str:
    return raw
  if field_type is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
  elif field_type is int:
    value = _literal(text)
    if isinstance(value, float) and value.is_integer():
      value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif field_type is float:
    value = _literal(text)
    if value is None and text.lower() in ("inf", "+inf", "-inf", "nan"):
      value = float(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  raise ConfigError(f"config.{key}: expected {field_type.__name__}, got {_shown(key, raw)}")


def _parse_sequence(key: str, raw: str, current):
  text = raw.strip()
  if text.startswith(("(", "[")):
    value = _literal(text)
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f"config.{key}: expected a tuple like (1, 2), got {_shown(key, raw)}")
    items = list(value)
  else:
    items = [s.strip() for s in text.split(",")] if text else []
  element_types = {type(x) for x in (current or ())}
  if len(element_types) != 1 or element_types - {bool, int, float, str}:
    return [_literal_or_text(x) if isinstance(x, str) else x for x in items]
  (element_type,) = element_types
  out = []
  for i, x in enumerate(items):
    if isinstance(x, element_type) and not (element_type is int and isinstance(x, bool)):
      out.append(x)
    else:
      out.append(_parse_scalar(f"{key}[{i}]", str(x), element_type))
  return out


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, MemoryError, RecursionError):
    return None


def _literal_or_text(text: str):
  value = _literal(text)
  return text if value is None else value


def _shown(key: str, raw: str) -> str:
  """The value as an error message may show it (never a secret)."""
  return repr(raw) if _is_secret_free(key.rsplit(".", 1)[-1], raw) else "<redacted>"


# ----------------------------------------------------------------------------- secrets


def _is_secret_name(name: str) -> bool:
  return bool(_SECRET_NAME.search(name)) and not _SECRET_NAME_OK.search(name)


def _is_secret_free(name: str, value) -> bool:
  """False if `value` under key `name` is (or contains) a credential."""
  if isinstance(value, (tuple, list)):
    return all(_is_secret_free(name, v) for v in value)
  if _is_secret_name(name) and value not in (None, "", False):
    return False
  return not (isinstance(value, str) and _SECRET_VALUE.match(value.strip()))


def check_no_secrets(cfg, prefix: str = "config") -> None:
  """Raises ConfigError naming (never showing) the first field that holds a secret."""
  for k, v in cfg.items():
    name = f"{prefix}.{k}"
    if isinstance(v, ml_collections.ConfigDict):
      check_no_secrets(v, name)
    elif not _is_secret_free(k, v):
      raise ConfigError(f"{name}: holds a secret value; configs name the environment "
                        "variable instead (e.g. api_key_env='OPENAI_API_KEY')")


# ----------------------------------------------------------------------------- writing


BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "_base.py")


def base_defaults() -> dict:
  """configs/_base.py's values as plain JSON types ({} when the file is not there)."""
  if not os.path.exists(BASE_CONFIG):
    return {}
  spec = importlib.util.spec_from_file_location("seekjax_cfg_base_defaults", BASE_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_to_dict(module.base_config())


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


def config_to_dict(cfg) -> dict:
  """The resolved config as plain JSON types (tuples become lists); refuses secrets."""
  check_no_secrets(cfg)

  def plain(v):
    if isinstance(v, ml_collections.ConfigDict):
      return {k: plain(x) for k, x in v.items()}
    if isinstance(v, dict):
      return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
      return [plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
      return v
    return str(v)
  return plain(cfg)


def to_yaml(d: dict, indent: int = 0) -> str:
  """A readable YAML rendering of a JSON-able dict (scalars in JSON syntax, valid YAML)."""
  lines = []
  pad = " " * indent
  for k in sorted(d):
    v = d[k]
    if isinstance(v, dict) and v:
      lines.append(f"{pad}{k}:")
      lines.append(to_yaml(v, indent + 2))
    else:
      lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
  return "\n".join(lines)


def _yaml_scalar(v) -> str:
  if isinstance(v, float) and not math.isfinite(v):
    return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")
  if isinstance(v, (list, dict)):
    return json.dumps(v, allow_nan=False) if _finite(v) else json.dumps(str(v))
  return json.dumps(v)


def _finite(v) -> bool:
  if isinstance(v, float):
    return math.isfinite(v)
  if isinstance(v, list):
    return all(_finite(x) for x in v)
  if isinstance(v, dict):
    return all(_finite(x) for x in v.values())
  return True


def dump_config(cfg, path: str) -> str:
  """Write the resolved config as JSON plus a readable YAML twin; returns the JSON path.

  `path` is either a directory (writes config.json and config.yaml in it) or a file
  path ending in .json (the YAML goes beside it with a .yaml suffix). Each file is
  written atomically (`write_atomic`). Refuses (with a ConfigError, writing nothing) a
  config that holds a secret.
  """
  d = config_to_dict(cfg)
  if os.path.isdir(path) or not path.endswith(".json"):
    os.makedirs(path, exist_ok=True)
    json_path = os.path.join(path, "config.json")
  else:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    json_path = path
  yaml_path = json_path[:-len(".json")] + ".yaml"
  write_atomic(json_path, json.dumps(d, indent=2, sort_keys=True) + "\n")
  write_atomic(yaml_path, to_yaml(d) + "\n")
  return json_path


def write_atomic(path: str, text: str) -> None:
  """Write `text` to a temporary file beside `path`, then rename it over `path`.

  A reader (or a run restarted after a kill) sees the old file or the new one, never a
  half-written one.
  """
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


# ----------------------------------------------------------------------------- argv


def parse_argv(argv: Sequence[str], *, bool_flags: Sequence[str] = ("overwrite",),
               int_flags: Sequence[str] = ("stop_after",), str_flags: Sequence[str] = ()):
  """(cfg, workdir, flags) from a CLI's arguments (without the program name).

  Accepts --config=FILE.py[:arg], --workdir=DIR, --config.KEY=VALUE (also as two
  arguments, `--config.KEY VALUE`; a bare `--config.KEY` sets a bool to True), and the
  given extra flags: `--name` / `--noname` for bool flags, `--name=V` for int and str
  flags. `flags` holds every extra flag (False / None when not given).
  """
  flags: dict[str, Any] = {name: False for name in bool_flags}
  flags.update({name: None for name in tuple(int_flags) + tuple(str_flags)})
  valued = {"config", "workdir", *int_flags, *str_flags}
  config_spec, workdir, overrides = None, None, []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}; {_usage(bool_flags, int_flags, str_flags)}")
    name, eq, value = arg[2:].partition("=")
    if name.startswith("config."):
      if not eq and i < len(args) and not args[i].startswith("--"):
        value, eq = args[i], "="
        i += 1
      overrides.append(name + ("=" + value if eq else ""))
      continue
    if name in valued and not eq:
      if i >= len(args) or args[i].startswith("--"):
        raise ConfigError(f"--{name}: needs a value (--{name}=VALUE)")
      value, eq = args[i], "="
      i += 1
    if name == "config":
      if config_spec is not None:
        raise ConfigError("--config: given twice")
      config_spec = value
    elif name == "workdir":
      workdir = value
    elif name in bool_flags or (name.startswith("no") and name[2:] in bool_flags):
      flag = name if name in bool_flags else name[2:]
      if eq and value.strip().lower() not in _TRUE + _FALSE:
        raise ConfigError(f"--{flag}: expected bool, got {value!r}")
      flags[flag] = value.strip().lower() in _TRUE if eq else flag == name
    elif name in int_flags:
      try:
        flags[name] = int(value)
      except ValueError:
        raise ConfigError(f"--{name}: expected int, got {value!r}") from None
    elif name in str_flags:
      flags[name] = value
    else:
      raise ConfigError(f"unknown flag --{name}; {_usage(bool_flags, int_flags, str_flags)}")
  if config_spec is None:
    raise ConfigError(f"--config=FILE.py is required; {_usage(bool_flags, int_flags, str_flags)}")
  if not workdir:
    raise ConfigError(f"--workdir=DIR is required; {_usage(bool_flags, int_flags, str_flags)}")
  cfg = apply_overrides(load_config(config_spec), overrides)
  return cfg, workdir, flags


def _usage(bool_flags, int_flags, str_flags) -> str:
  extra = [f"[--{n}]" for n in bool_flags] + [f"[--{n}=N]" for n in int_flags]
  extra += [f"[--{n}=VALUE]" for n in str_flags]
  return ("usage: --config=FILE.py[:arg] --workdir=DIR [--config.KEY=VALUE ...] "
          + " ".join(extra)).strip()
