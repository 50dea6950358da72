"""`task.privacy`: each split's chosen share replaced by checked private variants, from
templates or from an LLM endpoint (the paper's 3-step recipe), with the LLM's rows cached
in the workdir (`seekjax.run.setup.build_task` calls `apply_privacy`)."""
from __future__ import annotations

import collections

import jax

from seekjax.helpers import HelperUnusable, OpenAIHelper
from seekjax.rollout.pool import run_coroutine
from seekjax.run import workdir as workdir_lib
from seekjax.run.errors import RunSetupError
from seekjax.run.helper_setup import openai_helper_kwargs
from seekjax.run.metrics import log
from seekjax.tasks import LLMPrivacySynthesizer, RowCache
from seekjax.tasks import privacy


def privacy_cache_path(cfg, workdir):
  """Where `task.privacy='llm'` caches its rows: <workdir>/privacy/<task.name>.llm.jsonl."""
  return workdir_lib.as_path(workdir) / "privacy" / f"{cfg.task.name}.llm.jsonl"


def privacy_backend(cfg) -> OpenAIHelper:
  """The endpoint the LLM privacy recipe asks: task.privacy_base_url / _model /
  _api_key_env, each empty one the helper's (helper.kind='openai'); the helper
  section's request settings (timeout, retries, max_tokens, extra_body, ...)."""
  t = cfg.task
  if cfg.helper.kind != "openai" and not t.privacy_base_url:
    raise RunSetupError("config.task.privacy_base_url: empty; task.privacy='llm' needs an "
                        "endpoint (its own, or the helper's with helper.kind='openai')")
  kwargs = openai_helper_kwargs(cfg.helper)
  if cfg.helper.kind != "openai":
    kwargs["model"] = ""
  for key in ("base_url", "model", "api_key_env"):
    if t.get(f"privacy_{key}"):
      kwargs[key] = t[f"privacy_{key}"]
  if not str(kwargs.get("model") or "").strip():
    raise RunSetupError("config.task.privacy_model: empty; task.privacy='llm' needs the "
                        "served model's name")
  return OpenAIHelper(**kwargs)


async def _llm_rows(cfg, examples, cache, stats) -> list[dict]:
  """The LLM recipe over `examples` (a probe first when one is not cached)."""
  backend = privacy_backend(cfg)
  synth = LLMPrivacySynthesizer(backend, concurrency=cfg.helper.concurrency,
                                model=backend.model)
  try:
    if cache is None or not all(cache.has(e) for e in examples):
      try:
        await backend.probe("privacy")
      except HelperUnusable as e:
        raise RunSetupError(f"config.task.privacy_base_url: {e}") from None
    rows = await synth.asynthesize(examples, cache)
  finally:
    await backend.aclose()
  stats.update(synth.stats)
  stats["requests"] = synth.requests
  return rows


def _cached_rows(examples, cache, stats) -> list[dict]:
  """The rows `cache` holds for `examples` (an uncached one counts as a backend error)."""
  rows = []
  for e in examples:
    row, outcome = cache.get(e) if cache.has(e) else (None, "backend_error")
    stats[outcome] += 1
    rows += [row] if row is not None else []
  return rows


def privacy_rows(cfg, examples: list[dict], seed: int, workdir=None,
                 should_stop=None) -> tuple[list[dict], collections.Counter]:
  """(checked private variants of `examples`, Counter of "kept" and drop reasons) by
  `task.privacy`. With several processes, process 0 asks the endpoint and the others
  read its rows from the workdir's cache after a barrier."""
  if cfg.task.privacy == "template":
    return privacy.template_rows(examples, seed)
  stats = collections.Counter()
  if workdir is None:
    if jax.process_count() > 1:
      raise RunSetupError("config.task.privacy='llm' on several processes needs a workdir")
    return run_coroutine(_llm_rows(cfg, examples, None, stats), should_stop), stats
  path = privacy_cache_path(cfg, workdir)
  if jax.process_index() == 0:
    rows = run_coroutine(_llm_rows(cfg, examples, RowCache(path), stats), should_stop)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("seekjax: privacy rows")
  if jax.process_index() != 0:
    rows = _cached_rows(examples, RowCache(path), stats)
  return rows, stats


def apply_privacy(cfg, train: list[dict], evaluation: list[dict], seed: int, workdir=None,
                  should_stop=None) -> tuple[list[dict], list[dict]]:
  """Each split with its chosen share (`task.private_fraction`) replaced by checked
  private variants; a variant that fails a check drops its row. One log line counts
  the outcomes by reason."""
  mode, fraction = cfg.task.privacy, cfg.task.private_fraction
  if mode == "none":
    return train, evaluation
  chosen = privacy.chosen(train + evaluation, fraction, seed)
  if chosen and privacy.without_answers(chosen) == len(chosen):
    raise RunSetupError(f"config.task.privacy: task {cfg.task.name!r} has no gold answers to "
                        "check private variants against; use task.privacy='none'")
  rows, stats = privacy_rows(cfg, chosen, seed, workdir, should_stop)
  requests = stats.pop("requests", None)
  log(f"task privacy={mode}: {privacy.summary(stats)}"
      + ("" if requests is None else f"; {requests} requests"))
  return (privacy.merge(train, rows, fraction, seed),
          privacy.merge(evaluation, rows, fraction, seed))
