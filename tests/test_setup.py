"""seekjax.run.setup: the set-up both entry points use, and the RL settings it resolves."""
import os

import pytest

from seekjax import configlib, plan
from seekjax.rl.settings import rl_settings
from seekjax.run import setup as setup_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
def test_the_kl_goes_to_one_place(kl_in):
  s = rl_settings(_cfg(f"rl.kl_in={kl_in}", "rl.kl_beta=0.25"))
  assert (s.kl_loss_beta, s.kl_reward_beta) == ((0.25, 0.0) if kl_in == "loss" else (0.0, 0.25))


def test_max_error_share_is_a_checked_config_key():
  assert rl_settings(_cfg()).max_error_share == 0.5
  assert rl_settings(_cfg("helper.max_error_share=0.2")).max_error_share == 0.2
  with pytest.raises(configlib.ConfigError, match="helper.max_error_share"):
    _cfg("helper.max_error_share=1.5")


def test_settings_are_frozen():
  s = rl_settings(_cfg())
  with pytest.raises(AttributeError):
    s.kl_beta = 1.0


def test_a_config_that_does_not_fit_stops_at_set_up_before_the_model_loads(tmp_path, monkeypatch,
                                                                          capsys):
  """The memory plan runs right after the batch-split check: on a device too small for
  the config, the run exits 2 with the plan's one line, builds no model and writes no
  workdir."""
  from seekjax import train as train_lib
  monkeypatch.setattr(plan, "device_hbm_gib", lambda: 1e-4)
  monkeypatch.setattr(setup_lib, "build_model", lambda *a: pytest.fail("built a model"))
  workdir = tmp_path / "w"
  assert train_lib.main([f"--config={TINY}", f"--workdir={workdir}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and "plan: does not fit" in err[-1] and "Traceback" not in "\n".join(err)
  assert not workdir.exists()


def test_on_cpu_the_plan_check_is_skipped():
  assert plan.device_hbm_gib() is None and plan.check_devices(_cfg()) is None
