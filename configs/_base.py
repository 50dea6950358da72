"""Shared helper for config files: load another config file by path (configs stay plain files)."""
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name: str, arg: str = ""):
  """get_config(arg) of configs/<name>.py."""
  spec = importlib.util.spec_from_file_location(f"seekjax_cfg_{name}", os.path.join(HERE, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
