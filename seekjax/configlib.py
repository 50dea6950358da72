"""Run configs from the command line: `--config=configs/x.py[:arg] --config.rl.kl_beta=0.05`.

`ml_collections.config_flags` (absl flags) loads the config file (its `get_config(arg)`)
and types each override by its field; every config derives from configs/_base.py, and
`seekjax.configcheck.validate` checks it once, at load, before anything is written. Any
problem, a flag's included, is one line: a `ConfigError`.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import FlagOrderError

from seekjax.configcheck import ConfigError, schema_entry, shown, validate

# ----------------------------------------------------------------------------- parsing


def parse_argv(argv: Sequence[str], *, bool_flags: Sequence[str] = ("overwrite",),
               int_flags: Sequence[str] = ("stop_after",), str_flags: Sequence[str] = (),
               need_workdir: bool = True):
  """(cfg, workdir, flags) from a CLI's arguments (without the program name).

  --config=FILE.py[:arg] --workdir=DIR --config.KEY=VALUE ..., plus the given extra
  flags (`--name`/`--noname` for bools, `--name=V` otherwise), each in `flags` (False /
  None when not given). The config is validated.
  """
  argv, usage = [str(a) for a in argv], _usage(bool_flags, int_flags, str_flags)
  spec = _flag_value(argv, "config")
  if spec is None:
    raise ConfigError(f"--config=FILE.py is required; {usage}")
  path = spec.split(":", 1)[0]
  if not path.endswith(".py") or not os.path.isfile(path):
    raise ConfigError(f"--config: no such .py file {path!r} (expected FILE.py[:arg])")
  fv = _flag_values(argv)
  config_flags.DEFINE_config_file("config", None, "FILE.py[:arg]", flag_values=fv,
                                  sys_argv=["seekjax", *argv])
  flags.DEFINE_string("workdir", None, "where the run writes", flag_values=fv)
  for names, define, default in ((bool_flags, flags.DEFINE_boolean, False),
                                 (int_flags, flags.DEFINE_integer, None),
                                 (str_flags, flags.DEFINE_string, None)):
    for name in names:
      define(name, default, name, flag_values=fv)
  rest = _parse(fv, argv, path, usage)
  if rest:
    raise ConfigError(f"unexpected argument {rest[0]!r}; {usage}")
  if need_workdir and not fv.workdir:
    raise ConfigError(f"--workdir=DIR is required; {usage}")
  if not isinstance(fv.config, ml_collections.ConfigDict):   # config_flags keeps an IOError
    error = getattr(fv.config, "__dict__", {}).get("_error", f"get_config() returned {type(fv.config).__name__}")
    raise ConfigError(f"{path}: cannot load ({_one_line(error)}; expected a ConfigDict)")
  validate(fv.config, path)
  return fv.config, fv.workdir, {n: fv[n].value for n in (*bool_flags, *int_flags, *str_flags)}


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The validated config of `FILE.py[:arg]` with overrides like ["rl.kl_beta=0.1"]."""
  argv = [f"--config={spec}"] + [f"--config.{o.removeprefix('config.')}" for o in overrides]
  return parse_argv(argv, bool_flags=(), int_flags=(), need_workdir=False)[0]


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]):
  """Apply overrides like ["rl.kl_beta=0.1"] to cfg in place, as `--config.` flags do,
  then validate it; returns cfg."""
  argv = [f"--config.{o.removeprefix('config.')}" for o in overrides]
  fv = _flag_values(argv)
  config_flags.DEFINE_config_dict("config", cfg, flag_values=fv, sys_argv=["seekjax", *argv])
  _parse(fv, argv, "", "")
  validate(cfg)
  return cfg


def _flag_values(argv: list[str]) -> flags.FlagValues:
  """New absl flags for argv, once its override keys are known to the schema."""
  for arg in argv:
    key = re.match(r"--(?:no)?config\.([^=]*)", arg)
    if key:
      schema_entry(key[1])
  sys.modules.pop("config_config", None)   # config_flags' module of the last file it loaded
  return flags.FlagValues()


def _parse(fv, argv: list[str], path: str, usage: str) -> list[str]:
  """Parse argv into fv; returns the arguments left over. Each absl or config_flags
  error becomes one ConfigError line."""
  try:
    return fv(["seekjax", *argv])[1:]
  except flags.UnrecognizedFlagError as e:
    raise ConfigError(f"unknown flag --{e.flagname}; {usage}") from None
  except FlagOrderError:
    raise ConfigError("--config=FILE.py must come before its --config.KEY=VALUE overrides") from None
  except flags.IllegalFlagValueError as e:   # "flag --NAME=VALUE: reason"
    name = re.match(r"flag --([^=]+)=", str(e))[1]
    if name == "config":   # get_config raised: config_flags appends the traceback
      raise ConfigError(f"{path}: cannot load ({str(e).strip().splitlines()[-1].strip()})") from None
    kind = {"string": "str", "tuple": "a tuple like (1, 2)"}.get(fv[name].flag_type(),
                                                                  fv[name].flag_type())
    flag = name if name.startswith("config.") else f"--{name}"
    raise ConfigError(f"{flag}: expected {kind}, got {shown(name, _flag_value(argv, name))}") \
        from None
  except Exception as e:  # noqa: BLE001 - the config file failed to run
    raise ConfigError(f"{path}: cannot load ({type(e).__name__}: {_one_line(e)})") from None


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last value given to --name (as --name=V or --name V)."""
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  values += [b for a, b in zip(argv, argv[1:]) if a == f"--{name}"]
  return values[-1] if values else None


def _usage(bool_flags, int_flags, str_flags) -> str:
  return " ".join(["usage: --config=FILE.py[:arg] --workdir=DIR [--config.KEY=VALUE ...]"]
                  + [f"[--{n}]" for n in bool_flags] + [f"[--{n}=N]" for n in int_flags]
                  + [f"[--{n}=VALUE]" for n in str_flags])


def _one_line(e) -> str:
  return " ".join(str(e).split())


