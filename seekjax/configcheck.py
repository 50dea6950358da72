"""What a config may hold: configs/_base.py's rules, no secrets, and its plain-JSON form.

`validate` checks a loaded config against the one schema (`_base.SCHEMA`: each key's
default and allowed values) once, before anything is written. Every problem is a
one-line `ConfigError`:

    config.rl.group_size: got 0; allowed: an int >= 2
    config.rl.betaa: unknown key 'betaa' under rl; valid keys: ... (did you mean 'beta'?)

Configs hold no secrets, only the names of environment variables that do: a
credential-looking value is refused without being shown, and what is written or shown
of a URL has no user:password@ and no query string (`config_to_dict`, `scrub_url`).
"""
from __future__ import annotations

import difflib
import json
import math
import re

import ml_collections

from configs import _base

_SECRET_NAME = re.compile(r"(api_?key|passw(or)?d|private_key)|(^|_)(secret|secret_key|"
                          r"access_token|auth_token|bearer_token|hf_token|credentials?)$", re.I)
_SECRET_NAME_OK = re.compile(r"_(env|env_var|file|path|name)$", re.I)
# Credential shapes anywhere in a value: provider key prefixes, bearer tokens and
# `key=`/`token=` assignments (URL queries); long hex runs are raw keys (except in paths).
_SECRET_TEXT = re.compile(
    r"(?<![A-Za-z0-9])((sk|pk|rk)-|(hf|gh[pousr]|glpat|xox[abprs])[_-][A-Za-z0-9_-]{12})|"
    r"AKIA[0-9A-Z]{16}|bearer\s+\S|(key|token|secret|passw(or)?d|auth|sig|signature|"
    r"credential)s?=[^\s&;]", re.I)
_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_URL = re.compile(r"(\w+://)([^/?#\s@]*@)?([^?#\s]*)([?#]\S*)?")



class ConfigError(ValueError):
  """A config problem, reported in one line."""


class UnknownConfigKey(ConfigError):
  """A key that configs/_base.py does not have (or a config lacks one that it has)."""


# ----------------------------------------------------------------------------- validation


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


def validate(cfg, path: str = "") -> None:
  """Raise a one-line ConfigError unless cfg has exactly configs/_base.py's keys (a key
  problem names the config file `path`), each of its type, allowed, and no secret."""
  try:
    _check(cfg, _base.SCHEMA, "config")
  except UnknownConfigKey as e:   # overrides are checked before: the file made this key
    raise UnknownConfigKey(f"{path}: {e}" if path else str(e)) from None


def _check(cfg, schema: dict, prefix: str) -> None:
  extra = [k for k in cfg.keys() if k not in schema]
  if extra:
    raise UnknownConfigKey(f"{prefix}.{extra[0]}: "
                           + _unknown(extra[0], prefix.partition(".")[2] or prefix, schema))
  for key, entry in schema.items():
    name, value = f"{prefix}.{key}", cfg.get(key, KeyError)
    if value is KeyError:
      raise UnknownConfigKey(f"{name}: missing (config files derive from configs/_base.py)")
    if isinstance(entry, dict) and isinstance(value, ml_collections.ConfigDict):
      _check(value, entry, name)
      continue
    problem = (f"{name}: expected a section, got {shown(name, value)}" if isinstance(entry, dict)
               else _secret_problem(name, value) or _value_problem(name, value, *entry))
    if problem:
      raise ConfigError(problem)


def _value_problem(name: str, value, default, allowed) -> str | None:
  """What is wrong with a value under its schema entry (type, then rule), or None."""
  if value is None and isinstance(default, _base.optional):
    return None
  want = default.type if isinstance(default, _base.optional) else type(default)
  items = tuple(value) if want is tuple and isinstance(value, (tuple, list)) else (value,)
  item = type(default[0]) if want is tuple else want
  if (want is tuple) != isinstance(value, (tuple, list)) or not all(
      type(v) is item or (item is float and type(v) is int) for v in items):
    what = f"a tuple of {item.__name__}" if want is tuple else want.__name__
    return f"{name}: expected {what}, got {shown(name, value)}"
  bad = [v for v in items if not _allowed(v, allowed)]
  return f"{name}: got {shown(name, value)}; allowed: {_describe(bad[0], allowed)}" if bad else None


def _allowed(v, allowed) -> bool:
  """Whether v is within `allowed` (a rule of configs/_base.py); floats must be finite."""
  if isinstance(v, float) and not math.isfinite(v):
    return False
  if allowed is None or isinstance(allowed, tuple):
    return allowed is None or v in allowed
  if allowed == _base.JSON_OBJECT:
    return json_object(v) is not None
  bound = re.fullmatch(r"(>=?)\s*(\S+)", allowed)
  if bound:
    return v >= float(bound[2]) if bound[1] == ">=" else v > float(bound[2])
  lo_in, lo, hi, hi_in = re.fullmatch(r"([\[(])\s*(\S+),\s*(\S+)\s*([\])])", allowed).groups()
  return ((v >= float(lo)) if lo_in == "[" else (v > float(lo))) and (
      (v <= float(hi)) if hi_in == "]" else (v < float(hi)))


def json_object(text: str) -> dict | None:
  """The dict a "json object" key holds ({} for ""), or None when it holds no JSON object."""
  if not text.strip():
    return {}
  try:
    value = json.loads(text)
  except ValueError:
    return None
  return value if isinstance(value, dict) else None


def _describe(v, allowed) -> str:
  if isinstance(allowed, tuple):
    return "one of " + ", ".join(allowed)
  if allowed == _base.JSON_OBJECT:
    return """a JSON object such as '{"chat_template_kwargs": {"enable_thinking": false}}', or ''"""
  what = "a finite float" if isinstance(v, float) else "an int"
  return f"{what} in {allowed}" if allowed and allowed[0] in "[(" else f"{what} {allowed or ''}".strip()


# ----------------------------------------------------------------------------- secrets


def _is_secret(key: str, value) -> bool:
  """Whether `value` under `key` is, or holds, a credential."""
  if isinstance(value, (tuple, list)):
    return any(_is_secret(key, v) for v in value)
  if _SECRET_NAME.search(key) and not _SECRET_NAME_OK.search(key) and value not in (None, "", False):
    return True
  path_key = key == "path" or key.endswith(("_path", "_dir"))   # e.g. an HF snapshot's sha
  return isinstance(value, str) and bool(
      _SECRET_TEXT.search(value) or (not path_key and _HEX_RUN.search(value)))


def _secret_problem(name: str, value) -> str | None:
  """The one-line refusal of a value that is, or may be, a credential (never shown)."""
  key = name.rsplit(".", 1)[-1]
  if _is_secret(key, value):
    return (f"{name}: holds a secret-looking value (not shown); configs name the environment "
            "variable instead (e.g. api_key_env='OPENAI_API_KEY')")
  if key.endswith("_env") and value and not _ENV_NAME.fullmatch(str(value)):
    return f"{name}: expected an environment variable name ([A-Z_][A-Z0-9_]*); value not shown"
  return None


def scrub_url(text: str) -> str:
  """`text` with each URL's user:password@ and ?query / #fragment cut out."""
  return _URL.sub(lambda m: m[1] + m[3] + ("?..." if m[4] else ""), text)


def shown(key: str, value) -> str:
  """The value as an error message may show it (never a secret)."""
  if _is_secret(key.rsplit(".", 1)[-1], value):
    return "<redacted>"
  return repr(scrub_url(value) if isinstance(value, str) else value)


# ----------------------------------------------------------------------------- writing


def config_to_dict(cfg, prefix: str = "config") -> dict:
  """A config (any ConfigDict) as plain JSON types, tuples as lists and URLs scrubbed;
  a ConfigError if it holds a secret."""
  out = {}
  for k, v in cfg.items():
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      out[str(k)] = config_to_dict(v, f"{prefix}.{k}")
    elif _secret_problem(f"{prefix}.{k}", v):
      raise ConfigError(_secret_problem(f"{prefix}.{k}", v))
    elif isinstance(v, (tuple, list)):
      out[str(k)] = [scrub_url(x) if isinstance(x, str) else x for x in v]
    else:
      out[str(k)] = scrub_url(v) if isinstance(v, str) else v
  return out


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
  lines = []
  for k in sorted(d):
    if isinstance(d[k], dict) and d[k]:
      lines += [f"{' ' * indent}{k}:", to_yaml(d[k], indent + 2)]
    else:
      lines.append(f"{' ' * indent}{k}: {json.dumps(d[k])}")
  return "\n".join(lines)
