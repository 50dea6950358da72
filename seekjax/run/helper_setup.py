"""The run's helper and leak judge from its config: built, probed before the model loads,
and closed at the end (`seekjax.run.setup.build_parts` calls these in order)."""
from __future__ import annotations

import asyncio
import contextlib
import sys

from seekjax.helpers import (HelperUnusable, KnowledgeHelper, LocalLMHelper, OpenAIHelper,
                             RuleLeakJudge)
from seekjax.helpers import settings as helper_settings
from seekjax.helpers.judges import LLMLeakJudge
from seekjax.models.api import load_model
from seekjax.rollout.pool import run_coroutine
from seekjax.run.errors import RunSetupError
from seekjax.tasks import world_fact_base


def openai_helper_kwargs(hcfg) -> dict:
  """OpenAIHelper's arguments from a helper config section (`seekjax.helpers.settings`)."""
  with _settings_errors():
    return helper_settings.openai_kwargs(hcfg)


@contextlib.contextmanager
def _settings_errors():
  """A helper or judge setting that cannot be used is a RunSetupError (one line)."""
  try:
    yield
  except helper_settings.SettingsError as e:
    raise RunSetupError(str(e)) from None


def build_helper(hcfg, slm_model=None):
  """The helper named by `hcfg.kind`. KnowledgeHelper is a documented stand-in for an LLM."""
  if hcfg.kind == "knowledge":
    facts, entities = world_fact_base()
    return KnowledgeHelper(facts, entities, coverage=hcfg.coverage, noise=hcfg.noise,
                           top_k=hcfg.top_k, style=hcfg.style, entity_kind="country")
  if hcfg.kind == "openai":
    if not str(hcfg.get("model") or "").strip():
      raise RunSetupError("config.helper.model: empty; helper.kind='openai' needs the served "
                          "model's name (e.g. --config.helper.model=Qwen/Qwen3-32B)")
    return OpenAIHelper(**openai_helper_kwargs(hcfg))
  if hcfg.kind == "local_lm":
    model = slm_model if not hcfg.get("model") else load_model(hcfg.model)
    facts, _ = world_fact_base()
    with _settings_errors():
      system = helper_settings.system_prompt(hcfg)
    return LocalLMHelper(model, facts=facts, top_k=hcfg.top_k, system_prompt=system)
  raise RunSetupError(f"config.helper.kind: unknown {hcfg.kind!r}; valid: knowledge, openai, "
                      "local_lm")


def build_judge(cfg, helper=None):
  """The leak judge of `reward.judge`. The LLM judge asks its own OpenAIHelper at the
  judge section's endpoint (by default the helper's), or, for a helper without an
  endpoint and no judge.base_url, the run's helper itself."""
  if cfg.reward.judge == "rule":
    return RuleLeakJudge()
  if cfg.reward.judge == "llm":
    with _settings_errors():
      kwargs = helper_settings.judge_kwargs(cfg)
    if kwargs is not None:
      return LLMLeakJudge(OpenAIHelper(**kwargs))
    if helper is None:
      raise RunSetupError("config.reward.judge='llm' needs a helper backend or judge.base_url")
    return LLMLeakJudge(helper)
  raise RunSetupError(f"config.reward.judge: unknown {cfg.reward.judge!r}; valid: rule, llm")


def probe_helpers(cfg, should_stop=None) -> None:
  """One request to each endpoint the run will ask (the helper's; the LLM judge's when it
  differs) before the model loads: a refused key, a missing server or a silent one is a
  RunSetupError (one line), not a run that trains on errors. Helpers without an endpoint
  (knowledge, local_lm) have nothing to probe; they are not built here (local_lm loads a
  model).

  should_stop: called while waiting; it raises to abandon the probe (a stop signal).
  """
  targets = []
  if cfg.helper.kind == "openai":
    targets.append(("helper", build_helper(cfg.helper)))
  if cfg.reward.judge == "llm":
    with _settings_errors():
      judge_at = helper_settings.judge_endpoint(cfg)
    if judge_at is not None and judge_at != helper_settings.helper_endpoint(cfg):
      targets.append(("judge", build_judge(cfg).backend))

  async def probe_all():
    try:
      for role, target in targets:
        try:
          await target.probe(role)
        except HelperUnusable as e:
          raise RunSetupError(f"config.{role}: {e}") from None
    finally:
      for _, target in targets:
        await target.aclose()
  if targets:
    run_coroutine(probe_all(), should_stop)


def close_helpers(*helpers) -> None:
  """Release what the run's helpers hold (HTTP clients, a LocalLMHelper's worker), once each.

  For the helpers' owner at the end of a run. A failure to close is reported, not raised:
  the run's results are already written.
  """
  seen = set()
  for h in helpers:
    inner = getattr(h, "backend", None)  # an LLM judge wraps a helper backend
    for obj in (h, inner):
      if obj is None or id(obj) in seen or not hasattr(obj, "aclose"):
        continue
      seen.add(id(obj))
      try:
        asyncio.run(obj.aclose())
      except Exception as e:  # pylint: disable=broad-except
        print(f"[seekjax] warning: closing {type(obj).__name__} failed: {e!r}", file=sys.stderr)
