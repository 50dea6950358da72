"""seekjax.configlib: config files, typed overrides, one-line errors, dumps without secrets."""
import json
import os
import textwrap

import ml_collections
import pytest

from seekjax import configlib
from seekjax.configlib import ConfigError, UnknownConfigKey

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = '''
import ml_collections
from ml_collections import config_dict


def get_config(arg=""):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.name = "run"
  c.rl = ml_collections.ConfigDict(dict(beta=0.02, steps=24, whiten=False, kl_method="k3",
                                        mesh=(1, -1, 1), targets=("q", "v"), extra=None,
                                        cap=config_dict.placeholder(float)))
  c.helper = ml_collections.ConfigDict(dict(api_key_env="OPENAI_API_KEY", api_key=""))
  if arg:
    c.rl.steps = int(arg)
  return c
'''


@pytest.fixture
def config_path(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(CONFIG)
  return str(path)


def _one_line_error(exc_type, fn, *args, **kw):
  with pytest.raises(exc_type) as e:
    fn(*args, **kw)
  msg = str(e.value)
  assert "\n" not in msg and msg
  return msg


# ----------------------------------------------------------------------------- loading


def test_load_config_with_and_without_arg(config_path):
  assert configlib.load_config(config_path).rl.steps == 24
  assert configlib.load_config(config_path + ":7").rl.steps == 7
  tiny = configlib.load_config(os.path.join(ROOT, "configs", "tiny_test.py") + ":3")
  assert tiny.rl.steps == 3


@pytest.mark.parametrize("body, match", [
    ("x = 1\n", "has no get_config"),
    ("def get_config():\n  return {}\n", "must return an ml_collections.ConfigDict, got dict"),
    ("def get_config(arg=''):\n  raise KeyError('boom')\n", "get_config() failed (KeyError: 'boom')"),
    ("def get_config(:\n", "cannot load (SyntaxError"),
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict("
     "dict(api_key='sk-abcdefghijklmnopqrstuvwxyz'))\n", "config.api_key: holds a secret value"),
])
def test_broken_config_files_are_one_line_errors(tmp_path, body, match):
  path = tmp_path / "bad.py"
  path.write_text(body)
  msg = _one_line_error(ConfigError, configlib.load_config, str(path))
  assert match in msg
  assert "sk-abc" not in msg


def test_load_config_missing_file_and_unwanted_arg(tmp_path, config_path):
  assert "no such file" in _one_line_error(ConfigError, configlib.load_config,
                                           str(tmp_path / "nope.py"))
  path = tmp_path / "noarg.py"
  path.write_text("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict()\n")
  assert "takes no argument" in _one_line_error(ConfigError, configlib.load_config,
                                                f"{path}:x")


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("override, key, want", [
    ("rl.beta=0.01", "beta", 0.01),
    ("rl.beta=1", "beta", 1.0),
    ("rl.beta=1e-3", "beta", 1e-3),
    ("rl.beta=inf", "beta", float("inf")),
    ("rl.steps=100", "steps", 100),
    ("rl.steps=1_000", "steps", 1000),
    ("rl.whiten=true", "whiten", True),
    ("rl.whiten=False", "whiten", False),
    ("rl.whiten=1", "whiten", True),
    ("rl.whiten", "whiten", True),
    ("rl.kl_method=k1", "kl_method", "k1"),
    ("rl.kl_method=", "kl_method", ""),
    ("rl.mesh=1,2,1", "mesh", (1, 2, 1)),
    ("rl.mesh=(2, -1)", "mesh", (2, -1)),
    ("rl.mesh=[4]", "mesh", (4,)),
    ("rl.targets=q,k,v", "targets", ("q", "k", "v")),
    ("rl.targets=('o',)", "targets", ("o",)),
    ("rl.targets=", "targets", ()),
    ("rl.extra=3", "extra", 3),
    ("rl.extra=hello", "extra", "hello"),
    ("rl.extra=[1, 2]", "extra", [1, 2]),
    ("rl.cap=2", "cap", 2.0),
    ("rl.beta=None", "beta", None),
    ("config.rl.beta=0.5", "beta", 0.5),
])
def test_overrides_are_typed_by_the_field(config_path, override, key, want):
  cfg = configlib.apply_overrides(configlib.load_config(config_path), [override])
  got = cfg.rl[key]
  assert got == want and type(got) is type(want), (got, want)


@pytest.mark.parametrize("override, message", [
    ("rl.beta=abc", "config.rl.beta: expected float, got 'abc'"),
    ("rl.beta=true", "config.rl.beta: expected float, got 'true'"),
    ("rl.steps=2.5", "config.rl.steps: expected int, got '2.5'"),
    ("rl.steps=ten", "config.rl.steps: expected int, got 'ten'"),
    ("rl.whiten=maybe", "config.rl.whiten: expected bool, got 'maybe'"),
    ("rl.mesh=1,x", "config.rl.mesh[1]: expected int, got 'x'"),
    ("rl.cap=abc", "config.rl.cap: expected float, got 'abc'"),
    ("rl.beta", "config.rl.beta: needs a value (--config.rl.beta=VALUE)"),
    ("rl=3", "config.rl: is a section; set one of its keys: beta, cap, extra, kl_method, mesh, "
             "steps, targets, whiten"),
])
def test_bad_values_are_one_line_errors(config_path, override, message):
  cfg = configlib.load_config(config_path)
  assert _one_line_error(ConfigError, configlib.apply_overrides, cfg, [override]) == message


def test_unknown_keys_list_the_valid_keys_at_that_level(config_path):
  cfg = configlib.load_config(config_path)
  msg = _one_line_error(UnknownConfigKey, configlib.apply_overrides, cfg, ["rl.betta=0.1"])
  assert msg == ("config.rl.betta: unknown key 'betta' under rl; valid keys: beta, cap, extra, "
                 "kl_method, mesh, steps, targets, whiten (did you mean 'beta'?)")
  msg = _one_line_error(UnknownConfigKey, configlib.apply_overrides, cfg, ["optim.lr=1"])
  assert msg.startswith("config.optim.lr: unknown key 'optim' under config;")
  assert "valid keys: helper, name, rl, seed" in msg
  msg = _one_line_error(UnknownConfigKey, configlib.apply_overrides, cfg, ["seed.x=1"])
  assert msg == "config.seed.x: config.seed is a value, not a section"
  assert issubclass(UnknownConfigKey, ConfigError) and issubclass(ConfigError, ValueError)
  assert cfg.rl.beta == 0.02                       # nothing half-applied to that key


def test_later_overrides_win_and_placeholders_keep_their_type(config_path):
  cfg = configlib.apply_overrides(configlib.load_config(config_path),
                                  ["rl.beta=0.1", "rl.beta=0.3", "rl.cap=1.5"])
  assert cfg.rl.beta == 0.3 and cfg.rl.cap == 1.5
  with pytest.raises(ConfigError):
    configlib.apply_overrides(cfg, ["rl.cap=x"])


def test_check_known_keys_catches_a_typo_added_by_a_config_file(config_path):
  schema = configlib.load_config(config_path)
  cfg = configlib.load_config(config_path)
  configlib.check_known_keys(cfg, schema)
  cfg.rl.klbeta = 0.5
  msg = _one_line_error(UnknownConfigKey, configlib.check_known_keys, cfg, schema)
  assert msg.startswith("config.rl.klbeta: unknown key 'klbeta' under rl; valid keys: beta,")


SHIPPED = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))
DERIVED = """import importlib.util
_spec = importlib.util.spec_from_file_location("b", {base!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg=""):
  c = _base.load({name!r})
  {line}
  return c
"""


def _derived(tmp_path, name, line):
  path = tmp_path / f"from_{name}.py"
  path.write_text(DERIVED.format(base=os.path.join(ROOT, "configs", "_base.py"), name=name,
                                 line=line))
  return str(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_key_that_a_config_file_adds_is_refused_for_every_shipped_config(tmp_path, name):
  """Every shipped config is built from configs/_base.py, so a config file built from any
  of them that sets a key the base lacks is refused in one line naming the key, the
  valid keys and the file; setting a known key is fine."""
  assert configlib.load_config(_derived(tmp_path, name, "c.rl.kl_beta = 0.1")).rl.kl_beta == 0.1
  path = _derived(tmp_path, name, "c.rl.betta = 0.1")
  msg = _one_line_error(UnknownConfigKey, configlib.load_config, path)
  assert msg.startswith(f"{path}: config.rl.betta: unknown key 'betta' under rl; valid keys: "
                        "advantage, aggregation, epsilon,"), msg
  assert "kl_beta" in msg
  msg = _one_line_error(UnknownConfigKey, configlib.load_config,
                        _derived(tmp_path, name, "c.evaluation = dict(redact=False)"))
  assert "config.evaluation: unknown key 'evaluation' under config; valid keys: " in msg
  assert "eval, helper," in msg


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_within_the_base(name):
  base = _load_base().base_config()
  cfg = configlib.load_config(os.path.join(ROOT, "configs", name + ".py"))
  configlib.check_known_keys(cfg, base)
  assert cfg.eval.redact_private is True
  # None = the protocol's full prompt; the CPU configs set a short one of their own
  assert cfg.rollout.system_prompt is None or (isinstance(cfg.rollout.system_prompt, str)
                                               and "<answer>" in cfg.rollout.system_prompt)


def _load_base():
  import importlib.util
  spec = importlib.util.spec_from_file_location("b", os.path.join(ROOT, "configs", "_base.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_keys_the_code_reads_are_in_the_base():
  """rollout.system_prompt (read by the cold start and the rollout) and the pool's
  helper.on_outage reach the rollout settings; a config file may set them."""
  from seekjax.train import make_rollout_config
  base = _load_base().base_config()
  base.rollout.system_prompt, base.helper.on_outage = "Be brief.", "wait"
  rcfg = make_rollout_config(base)
  assert (rcfg.system_prompt, rcfg.on_outage) == ("Be brief.", "wait")
  assert make_rollout_config(_load_base().base_config()).on_outage == "feedback_error"


# ----------------------------------------------------------------------------- secrets and dumps


def test_secrets_are_refused_and_never_shown(config_path, tmp_path):
  cfg = configlib.load_config(config_path)
  secret = "sk-proj-0123456789abcdefghijABCDEFGHIJ"
  msg = _one_line_error(ConfigError, configlib.apply_overrides, cfg, [f"helper.api_key={secret}"])
  assert "refusing a secret value" in msg and secret not in msg
  msg = _one_line_error(ConfigError, configlib.apply_overrides, cfg,
                        [f"helper.api_key_env={secret}"])  # a key pasted into the name field
  assert secret not in msg
  msg = _one_line_error(ConfigError, configlib.apply_overrides, cfg, [f"rl.steps={secret}"])
  assert msg == "config.rl.steps: expected int, got <redacted>"
  assert cfg.helper.api_key == "" and cfg.helper.api_key_env == "OPENAI_API_KEY"
  # A config built in code with a secret is refused by dump_config, which writes nothing.
  cfg.helper.api_key = "hunter2-not-an-env-var"
  out = tmp_path / "out"
  msg = _one_line_error(ConfigError, configlib.dump_config, cfg, str(out))
  assert msg.startswith("config.helper.api_key: holds a secret value") and "hunter2" not in msg
  assert not out.exists() or not os.listdir(out)


def test_dump_config_writes_json_and_yaml_of_the_resolved_config(config_path, tmp_path):
  cfg = configlib.apply_overrides(configlib.load_config(config_path), ["rl.beta=0.5"])
  json_path = configlib.dump_config(cfg, str(tmp_path))
  assert json_path == str(tmp_path / "config.json")
  d = json.load(open(json_path))
  assert d == configlib.config_to_dict(cfg)
  assert d["rl"]["beta"] == 0.5 and d["rl"]["mesh"] == [1, -1, 1] and d["rl"]["cap"] is None
  assert d["helper"] == {"api_key_env": "OPENAI_API_KEY", "api_key": ""}
  text = open(tmp_path / "config.yaml").read()
  assert "  beta: 0.5\n" in text and 'api_key_env: "OPENAI_API_KEY"' in text
  yaml = pytest.importorskip("yaml")
  assert yaml.safe_load(text) == d
  # An explicit .json path puts the YAML twin beside it.
  other = configlib.dump_config(cfg, str(tmp_path / "sub" / "run.json"))
  assert os.path.exists(other) and os.path.exists(tmp_path / "sub" / "run.yaml")


def test_dump_config_replaces_files_atomically(config_path, tmp_path, monkeypatch):
  """A kill mid-write leaves the old config.json/.yaml, never half a file: each is written
  to a temporary file in the same directory, then renamed over the old one."""
  cfg = configlib.load_config(config_path)
  configlib.dump_config(cfg, str(tmp_path))
  before = {n: (tmp_path / n).read_text() for n in ("config.json", "config.yaml")}
  renames, real = [], os.replace

  def replace(src, dst):
    renames.append((os.path.dirname(src), os.path.basename(dst)))
    if dst.endswith(".yaml"):
      raise OSError("killed")
    real(src, dst)
  monkeypatch.setattr(configlib.os, "replace", replace)
  cfg.rl.beta = 0.75
  with pytest.raises(OSError):
    configlib.dump_config(cfg, str(tmp_path))
  assert renames == [(str(tmp_path), "config.json"), (str(tmp_path), "config.yaml")]
  assert json.loads((tmp_path / "config.json").read_text())["rl"]["beta"] == 0.75
  assert (tmp_path / "config.yaml").read_text() == before["config.yaml"]
  assert sorted(os.listdir(tmp_path)) == ["cfg.py", "config.json", "config.yaml"]


def test_config_to_dict_roundtrips_the_shipped_configs():
  for name in ("smollm2_worldfacts.py", "tiny_test.py"):
    cfg = configlib.load_config(os.path.join(ROOT, "configs", name))
    d = configlib.config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert d["helper"]["api_key_env"] == "OPENAI_API_KEY"


# ----------------------------------------------------------------------------- argv


def test_parse_argv_reads_config_workdir_overrides_and_flags(config_path):
  cfg, workdir, flags = configlib.parse_argv([
      f"--config={config_path}:5", "--workdir=/tmp/w", "--config.rl.beta=0.01",
      "--config.rl.mesh", "(2,1,1)", "--config.rl.whiten", "--overwrite", "--stop_after=2"])
  assert (cfg.rl.steps, cfg.rl.beta, cfg.rl.mesh, cfg.rl.whiten) == (5, 0.01, (2, 1, 1), True)
  assert workdir == "/tmp/w" and flags == {"overwrite": True, "stop_after": 2}
  cfg, workdir, flags = configlib.parse_argv(["--config", config_path, "--workdir", "w",
                                              "--nooverwrite"])
  assert workdir == "w" and flags == {"overwrite": False, "stop_after": None}
  _, _, flags = configlib.parse_argv([f"--config={config_path}", "--workdir=w", "--split=test",
                                      "--checkpoint=3"], bool_flags=(), int_flags=("checkpoint",),
                                     str_flags=("split",))
  assert flags == {"split": "test", "checkpoint": 3}


@pytest.mark.parametrize("argv, message", [
    (["--workdir=w"], "--config=FILE.py is required; usage: "),
    (["--config={cfg}"], "--workdir=DIR is required; usage: "),
    (["--config={cfg}", "--workdir=w", "--lr=3"], "unknown flag --lr; usage: "),
    (["--config={cfg}", "--workdir=w", "stray"], "unexpected argument 'stray'; usage: "),
    (["--config={cfg}", "--workdir=w", "--stop_after=x"], "--stop_after: expected int, got 'x'"),
    (["--config={cfg}", "--workdir=w", "--overwrite=perhaps"], "--overwrite: expected bool"),
    (["--config={cfg}", "--workdir"], "--workdir: needs a value"),
    (["--config={cfg}", "--config={cfg}", "--workdir=w"], "--config: given twice"),
    (["--config={cfg}", "--workdir=w", "--config.rl.beta=abc"],
     "config.rl.beta: expected float, got 'abc'"),
    (["--config={cfg}", "--workdir=w", "--config.rl.nope=1"], "unknown key 'nope' under rl; valid keys: beta,"),
])
def test_parse_argv_errors_are_one_line(config_path, argv, message):
  argv = [a.format(cfg=config_path) for a in argv]
  assert message in _one_line_error(ConfigError, configlib.parse_argv, argv)


def test_train_cli_style_invocation_on_the_tiny_config():
  tiny = os.path.join(ROOT, "configs", "tiny_test.py")
  cfg, _, _ = configlib.parse_argv([f"--config={tiny}", "--workdir=w", "--config.rl.kl_beta=0.05",
                                    "--config.model.lora_targets=q,k,v",
                                    "--config.reward.helper_error_policy=score"])
  assert cfg.rl.kl_beta == 0.05 and cfg.model.lora_targets == ("q", "k", "v")
  assert isinstance(cfg, ml_collections.ConfigDict)
  assert textwrap.dedent(configlib.to_yaml(configlib.config_to_dict(cfg))).startswith("distributed:")
