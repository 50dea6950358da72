"""seekjax.configlib and configs/_base.py: config files and `--config.k=v` on absl flags, one
schema validated once at load, one-line errors, and no credential on disk or on stderr."""
import json
import os
import subprocess
import sys

import pytest

from configs import _base
from seekjax import configcheck, configlib
from seekjax.configcheck import ConfigError, UnknownConfigKey

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
SHIPPED = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))


def _one_line_error(exc_type, fn, *args, **kw):
  with pytest.raises(exc_type) as e:
    fn(*args, **kw)
  msg = str(e.value)
  assert "\n" not in msg and msg
  return msg


def _config_file(tmp_path, body, name="cfg.py"):
  path = tmp_path / name
  path.write_text(body)
  return str(path)


DERIVED = "from configs.tiny_test import get_config as parent\n\n\ndef get_config():\n  c = parent()\n  {line}\n  return c\n"


# ----------------------------------------------------------------------------- loading


def test_load_config_with_and_without_arg():
  assert configlib.load_config(os.path.join(ROOT, "configs", "_base.py")).rl.steps == 24
  assert configlib.load_config(TINY).rl.steps == 6
  assert configlib.load_config(TINY + ":3").rl.steps == 3
  assert configlib.load_config(TINY, ["rl.steps=4"]).rl.steps == 4


@pytest.mark.parametrize("body, match", [
    ("x = 1\n", "cannot load (AttributeError: module 'config_config' has no attribute 'get_config')"),
    ("def get_config():\n  return {}\n", "cannot load (get_config() returned dict; expected a ConfigDict)"),
    ("def get_config(arg=''):\n  raise KeyError('boom')\n", "cannot load (KeyError: 'boom')"),
    ("def get_config(:\n", "cannot load (SyntaxError"),
    (DERIVED.format(line="c.rl.steps = 2.5"), "cannot load (TypeError: Could not override field 'steps'"),
    (DERIVED.format(line="c.task.path = 5"), "cannot load (TypeError"),
    (DERIVED.format(line="c.rl.klbeta = 0.5"), "config.rl.klbeta: unknown key 'klbeta' under rl; "
                                               "valid keys: advantage,"),
    (DERIVED.format(line="c.evaluation = dict(redact=False)"),
     "config.evaluation: unknown key 'evaluation' under config; valid keys: distributed, eval,"),
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict(dict(seed=1))\n",
     "config.model: missing (config files derive from configs/_base.py)"),
    (DERIVED.format(line="c.helper.api_key_env = 'sk-abcdefghijklmnopqrstuvwxyz'"),
     "config.helper.api_key_env: holds a secret-looking value (not shown)"),
])
def test_broken_config_files_are_one_line_errors(tmp_path, body, match):
  path = _config_file(tmp_path, body)
  msg = _one_line_error(ConfigError, configlib.load_config, path)
  assert match in msg, msg
  assert "sk-abc" not in msg
  if "unknown key" in match or "missing" in match:
    assert msg.startswith(f"{path}: ")   # a key problem names the file that made it


def test_a_file_without_get_config_does_not_reuse_the_last_files(tmp_path):
  """config_flags loads every file as the same module name; an earlier file's get_config
  must not answer for a later file that has none."""
  configlib.load_config(TINY)
  path = _config_file(tmp_path, "x = 1\n")
  assert "no attribute 'get_config'" in _one_line_error(ConfigError, configlib.load_config, path)


def test_load_config_missing_file_and_unwanted_arg(tmp_path):
  assert "no such .py file" in _one_line_error(ConfigError, configlib.load_config,
                                               str(tmp_path / "nope.py"))
  path = _config_file(tmp_path, "from configs import _base\ndef get_config():\n"
                                "  return _base.get_config()\n")
  assert "takes 0 positional arguments but 1 was given" in _one_line_error(
      ConfigError, configlib.load_config, f"{path}:x")


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("override, key, want", [
    ("rl.kl_beta=0.01", "rl.kl_beta", 0.01),
    ("rl.kl_beta=1", "rl.kl_beta", 1.0),
    ("rl.steps=100", "rl.steps", 100),
    ("rl.steps=1_000", "rl.steps", 1000),
    ("rl.whiten=true", "rl.whiten", True),
    ("rl.whiten=False", "rl.whiten", False),
    ("rl.whiten", "rl.whiten", True),
    ("rl.kl_method=k1", "rl.kl_method", "k1"),
    ("task.path=", "task.path", ""),
    ("model.mesh_shape=(2, -1, 1)", "model.mesh_shape", (2, -1, 1)),
    ("model.mesh_shape=2,-1,1", "model.mesh_shape", (2, -1, 1)),
    ("model.lora_targets=('q', 'k', 'v')", "model.lora_targets", ("q", "k", "v")),
    ("rollout.system_prompt=Be brief.", "rollout.system_prompt", "Be brief."),
    ("rollout.max_episode_tokens=300", "rollout.max_episode_tokens", 300),
    ("helper.outage_failures=3", "helper.outage_failures", 3),
    ("config.rl.kl_beta=0.5", "rl.kl_beta", 0.5),
])
def test_overrides_are_typed_by_the_field(override, key, want):
  cfg = configlib.load_config(TINY, [override])
  section, name = key.split(".")
  got = cfg[section][name]
  assert got == want and type(got) is type(want), (got, want)


@pytest.mark.parametrize("override, message", [
    ("rl.kl_beta=abc", "config.rl.kl_beta: expected float, got 'abc'"),
    ("rl.kl_beta=true", "config.rl.kl_beta: expected float, got 'true'"),
    ("rl.steps=2.5", "config.rl.steps: expected int, got '2.5'"),
    ("rl.whiten=maybe", "config.rl.whiten: expected bool, got 'maybe'"),
    ("rl=3", "config.rl: is a section; set one of its keys: steps, questions_per_step,"),
    ("rl.betta=0.1", "config.rl.betta: unknown key 'betta' under rl; valid keys: advantage,"),
    ("optim.lrr=1", "(did you mean 'lr'?)"),
    ("optimizer.lr=1", "config.optimizer.lr: unknown key 'optimizer' under config; valid keys: "
                       "distributed, eval, helper, judge, model, optim,"),
    ("seed.x=1", "config.seed.x: config.seed is a value, not a section"),
    ("model.lora_targets=q,k,v", "config.model.lora_targets: got ('q,k,v',); allowed: one of q, k,"),
])
def test_bad_overrides_are_one_line_errors(override, message):
  msg = _one_line_error(ConfigError, configlib.load_config, TINY, [override])
  assert message in msg and msg.startswith("config."), msg
  assert issubclass(UnknownConfigKey, ConfigError) and issubclass(ConfigError, ValueError)


def test_apply_overrides_changes_a_loaded_config_in_place_and_validates():
  cfg = configlib.load_config(TINY)
  assert configlib.apply_overrides(cfg, ["rl.kl_beta=0.1", "rl.kl_beta=0.3"]) is cfg
  assert cfg.rl.kl_beta == 0.3
  assert "unknown key 'nope'" in _one_line_error(UnknownConfigKey, configlib.apply_overrides, cfg,
                                                 ["rl.nope=1"])
  assert cfg.rl.kl_beta == 0.3
  msg = _one_line_error(ConfigError, configlib.apply_overrides, cfg, ["rl.group_size=1"])
  assert msg == "config.rl.group_size: got 1; allowed: an int >= 2"


# ----------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("override, message", [
    ("helper.concurrency=0", "config.helper.concurrency: got 0; allowed: an int >= 1"),
    ("train.keep_checkpoints=0", "config.train.keep_checkpoints: got 0; allowed: an int >= 1"),
    ("rl.group_size=0", "config.rl.group_size: got 0; allowed: an int >= 2"),
    ("rl.steps=-1", "config.rl.steps: got -1; allowed: an int >= 0"),
    ("optim.lr=nan", "config.optim.lr: got nan; allowed: a finite float > 0"),
    ("optim.lr=0", "config.optim.lr: got 0.0; allowed: a finite float > 0"),
    ("rollout.temperature=nan", "config.rollout.temperature: got nan; allowed: a finite float >= 0"),
    ("rl.kl_beta=inf", "config.rl.kl_beta: got inf; allowed: a finite float >= 0"),
    ("task.private_fraction=1.5", "config.task.private_fraction: got 1.5; allowed: a finite float "
                                  "in [0, 1]"),
    ("rollout.top_p=0", "config.rollout.top_p: got 0.0; allowed: a finite float in (0, 1]"),
    ("rl.advantage=ppo", "config.rl.advantage: got 'ppo'; allowed: one of grpo, drgrpo, rloo"),
    ("model.dtype=float16", "config.model.dtype: got 'float16'; allowed: one of float32, bfloat16"),
    ("rollout.max_episode_tokens=0", "config.rollout.max_episode_tokens: got 0; allowed: an int >= 1"),
])
def test_each_rule_is_refused_in_one_line(override, message):
  assert _one_line_error(ConfigError, configlib.load_config, TINY, [override]) == message


def test_every_schema_key_has_a_default_of_its_type_within_its_rule():
  """The defaults pass their own rules (and every shipped config passes them too)."""
  configcheck.validate(_base.get_config())
  for name in SHIPPED:
    configlib.load_config(os.path.join(ROOT, "configs", name + ".py"))


def test_schema_choices_are_the_codes_registries():
  """Choices in configs/_base.py name what the code implements, no more and no less."""
  from seekjax.helpers.knowledge import STYLES
  from seekjax.rl import advantages, losses, rewards, trainable
  rules = {k: v[1] for s in _base.SCHEMA.values() if isinstance(s, dict) for k, v in s.items()}
  assert set(rules["advantage"]) == set(advantages.advantage_names())
  assert set(rules["aggregation"]) == set(losses.AGGREGATIONS)
  assert set(rules["kl_method"]) == set(losses.KL_METHODS)
  assert set(rules["helper_error_policy"]) == set(rewards.HELPER_ERROR_POLICIES)
  assert set(rules["lora_targets"]) == set(trainable.LORA_TARGETS)
  assert set(rules["style"]) == set(STYLES)


def test_rollout_defaults_are_the_base_configs():
  """One source of defaults: sj.rollout_config() is configs/_base.py's rollout section and
  helper-pool keys, and every key of a run's rollout settings is settable."""
  from seekjax.rollout import rollout_config
  from seekjax.rollout.config import POOL_KEYS
  from seekjax.run.setup import rollout_settings
  base, rcfg = _base.get_config(), rollout_config()
  assert set(rcfg.keys()) == (set(base.rollout.keys()) | set(POOL_KEYS)
                              | {"group_size", "prompt_width", "cache_length"})
  # prompt_width: set-up's; cache_length: the evaluation's (0: derived)
  assert (rcfg.prompt_width, rcfg.cache_length) == (0, 0)
  for k in base.rollout.keys():
    assert rcfg[k] == base.rollout[k], k
  for k, h in POOL_KEYS.items():
    assert rcfg[k] == base.helper[h], k
  assert (rcfg.max_turns, rcfg.max_new_tokens, rcfg.group_size) == (2, 64, 1)
  cfg = configlib.load_config(TINY, [
      "helper.outage_failures=3", "helper.outage_after=2.5", "helper.max_outage_wait=9",
      "helper.outage_probe_min=0.5", "helper.outage_probe_max=4", "helper.on_outage=wait",
      "rollout.per_shard_decode=false", "rollout.max_episode_tokens=200",
      "rollout.system_prompt=Be brief."])
  run = rollout_settings(cfg)
  assert (run.outage_failures, run.outage_after, run.max_outage_wait, run.outage_probe_min,
          run.outage_probe_max, run.on_outage) == (3, 2.5, 9.0, 0.5, 4.0, "wait")
  assert (run.per_shard_decode, run.max_episode_tokens, run.system_prompt) == (False, 200,
                                                                              "Be brief.")
  assert run.group_size == cfg.rl.group_size == 2


def test_every_config_file_derives_by_a_plain_import():
  for name in SHIPPED + ["_base"]:
    text = open(os.path.join(ROOT, "configs", name + ".py")).read()
    assert "importlib" not in text and "exec_module" not in text, name
    assert name == "_base" or "from configs" in text, name


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("override", [
    "helper.api_key_env=0123456789abcdef0123456789abcdef",   # a hex key pasted into the name
    "helper.api_key_env=sk-live-abc",
    "helper.api_key_env=my key",                              # not an env var name
    "helper.model=org/model?token=tok123secret",
    "helper.base_url=http://h:8000/v1?api-key=PLANTEDQUERY",
    "helper.base_url=http://h:8000/v1/sk-planted",
    "rollout.system_prompt=Use Bearer abc.def.ghi",
    "task.name=0123456789abcdef0123456789abcdef",
])
def test_secret_looking_values_are_refused_and_never_shown(override):
  value = override.split("=", 1)[1]
  msg = _one_line_error(ConfigError, configlib.load_config, TINY, [override])
  assert msg.startswith(f"config.{override.split('=')[0]}: ")
  assert value not in msg and "PLANTED" not in msg and "planted" not in msg


def test_secret_in_a_wrongly_typed_override_is_not_shown():
  msg = _one_line_error(ConfigError, configlib.load_config, TINY, ["rl.steps=sk-proj-0123456789"])
  assert msg == "config.rl.steps: expected int, got <redacted>"


def test_hex_in_a_model_path_is_allowed():
  """An HF cache snapshot dir is named by a commit sha: a path, not a key."""
  path = "/cache/models--x/snapshots/0123456789abcdef0123456789abcdef01234567"
  assert configlib.load_config(TINY, [f"model.path={path}"]).model.path == path


def test_urls_are_scrubbed_in_what_is_written():
  cfg = configlib.load_config(TINY, ["helper.base_url=https://alice:PLANTEDPASS@h:8000/v1"
                                     "?deployment=PLANTEDQ#frag"])
  assert "PLANTEDPASS" in cfg.helper.base_url            # the run itself uses the real URL
  d = configcheck.config_to_dict(cfg)
  text = json.dumps(d) + configcheck.to_yaml(d)
  assert "PLANTED" not in text and "alice" not in text, text
  assert d["helper"]["base_url"] == "https://h:8000/v1?..."


def test_config_to_dict_refuses_a_secret_set_in_code():
  cfg = configlib.load_config(TINY)
  cfg.helper.api_key_env = "hunter2 is my password"
  msg = _one_line_error(ConfigError, configcheck.config_to_dict, cfg)
  assert msg.startswith("config.helper.api_key_env: ") and "hunter2" not in msg


def test_config_to_dict_and_yaml_of_the_resolved_config():
  cfg = configlib.load_config(TINY, ["rl.kl_beta=0.5"])
  d = configcheck.config_to_dict(cfg)
  assert d == json.loads(json.dumps(d))
  assert d["rl"]["kl_beta"] == 0.5 and d["model"]["mesh_shape"] == [1, -1, 1]
  assert d["rollout"]["max_episode_tokens"] is None
  assert configcheck.base_defaults() == configcheck.config_to_dict(_base.get_config())
  text = configcheck.to_yaml(d)
  assert "  kl_beta: 0.5\n" in text and 'api_key_env: "OPENAI_API_KEY"' in text
  assert text.startswith("distributed:")
  yaml = pytest.importorskip("yaml")
  assert yaml.safe_load(text) == d


# ----------------------------------------------------------------------------- argv


def test_parse_argv_reads_config_workdir_overrides_and_flags():
  cfg, workdir, flags = configlib.parse_argv([
      f"--config={TINY}:5", "--workdir=/tmp/w", "--config.rl.kl_beta=0.01",
      "--config.model.mesh_shape", "(1,1,1)", "--config.rl.whiten", "--overwrite",
      "--stop_after=2"])
  assert (cfg.rl.steps, cfg.rl.kl_beta, cfg.model.mesh_shape, cfg.rl.whiten) == \
      (5, 0.01, (1, 1, 1), True)
  assert workdir == "/tmp/w" and flags == {"overwrite": True, "stop_after": 2}
  _, workdir, flags = configlib.parse_argv(["--config", TINY, "--workdir", "w", "--nooverwrite"])
  assert workdir == "w" and flags == {"overwrite": False, "stop_after": None}
  _, _, flags = configlib.parse_argv([f"--config={TINY}", "--workdir=w", "--split=test",
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
    (["--config.rl.steps=3", "--config={cfg}", "--workdir=w"],
     "--config=FILE.py must come before its --config.KEY=VALUE overrides"),
    (["--config={cfg}", "--workdir=w", "--config.rl.kl_beta=abc"],
     "config.rl.kl_beta: expected float, got 'abc'"),
])
def test_parse_argv_errors_are_one_line(argv, message):
  argv = [a.format(cfg=TINY) for a in argv]
  assert message in _one_line_error(ConfigError, configlib.parse_argv, argv)


BAD_VALUES = ["--config.helper.concurrency=0", "--config.train.keep_checkpoints=0",
              "--config.optim.lr=nan", "--config.rollout.temperature=nan",
              "--config.rl.group_size=0", "--config.rl.steps=-1", "--config.rl.steps=abc",
              "--config.rl.klbeta=1", "--config.model.dtype=int8",
              "--config.task.private_fraction=2.0", "--config.helper.api_key_env=sk-live-abc"]


@pytest.mark.parametrize("entry", ["train", "evaluate", "main"])
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_bad_values_are_refused_by_every_entry_before_anything_is_written(entry, bad, tmp_path,
                                                                           capsys):
  import importlib
  main = importlib.import_module(f"seekjax.{entry}").main
  workdir = tmp_path / "w"
  rc = main([f"--config={TINY}", f"--workdir={workdir}", bad])
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: config."), captured.err
  assert bad.split("=")[0][2:] in lines[0]
  assert "sk-live" not in captured.err + captured.out
  assert not workdir.exists()


def test_the_cli_process_prints_one_line_and_no_traceback(tmp_path):
  """`python -m seekjax.train` itself (absl flags, config_flags) with a bad value."""
  r = subprocess.run([sys.executable, "-m", "seekjax.train", f"--config={TINY}",
                      f"--workdir={tmp_path / 'w'}", "--config.rl.group_size=0"], cwd=ROOT,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=120, check=False)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      "error: config.rl.group_size: got 0; allowed: an int >= 2"]
  assert not (tmp_path / "w").exists()


PLANTED = {   # override -> the secret it plants
    "--config.helper.api_key_env=0123456789abcdef0123456789abcdef":
        "0123456789abcdef0123456789abcdef",
    "--config.helper.api_key_env=sk-live-abc": "sk-live-abc",
    "--config.helper.base_url=http://127.0.0.1:9/v1?api-key=PLANTEDKEY": "PLANTEDKEY",
    "--config.helper.model=m&token=PLANTEDTOKEN": "PLANTEDTOKEN",
}


def test_planted_secrets_reach_neither_the_workdir_nor_the_output(tmp_path, capfd):
  """Secret shapes are refused (nothing written, not echoed); a URL's user:password@ and
  query, which are allowed, are scrubbed from everything the finished run wrote or printed."""
  from seekjax.train import main
  for i, (arg, secret) in enumerate(PLANTED.items()):
    workdir = tmp_path / f"refused{i}"
    assert main([f"--config={TINY}", f"--workdir={workdir}", arg]) == 2
    out = capfd.readouterr()
    assert len(out.err.strip().splitlines()) == 1 and secret not in out.out + out.err
    assert not workdir.exists()
  workdir = tmp_path / "run"
  url = "http://alice:PLANTEDPASS@127.0.0.1:9/v1?deployment=PLANTEDQUERY"
  assert main([f"--config={TINY}", f"--workdir={workdir}", f"--config.helper.base_url={url}",
               "--config.rl.steps=0", "--config.sft.steps=0"]) == 0
  out = capfd.readouterr()
  written = b"".join(p.read_bytes() for p in workdir.rglob("*") if p.is_file())
  assert b"127.0.0.1:9/v1" in written                     # the URL is recorded, scrubbed
  for secret in ("PLANTEDPASS", "PLANTEDQUERY", "alice"):
    assert secret.encode() not in written and secret not in out.out + out.err, secret
