"""A served helper's and the LLM judge's request settings, from the run config.

Pure functions from config sections to `OpenAIHelper` arguments, so set-up code only
constructs. The helper section (configs/_base.py `helper`) gives the endpoint and the
request fields (max_tokens, temperature, top_p, extra_body_json, the system prompt
inline or from a file). The `judge` section gives the LLM leak judge its own endpoint;
each of its empty (or 0) keys inherits the helper's value, except temperature, which is
the judge's own (a judge decides greedily by default). Bad settings raise SettingsError
with one line naming the key.
"""
from __future__ import annotations

import inspect

from seekjax import configcheck
from seekjax import protocol
from seekjax.helpers.openai_helper import OpenAIHelper

ENDPOINT_KEYS = ("base_url", "model", "api_key_env")


class SettingsError(ValueError):
  """A helper or judge setting that cannot be used; one line naming the key."""


def _as_dict(section) -> dict:
  if section is None:
    return {}
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def extra_body(text: str, key: str) -> dict:
  """The dict a `*.extra_body_json` key holds ({} for ""); SettingsError unless an object."""
  value = configcheck.json_object(text)
  if value is None:
    raise SettingsError(f"config.{key}: expected a JSON object such as "
                        """'{"chat_template_kwargs": {"enable_thinking": false}}'""")
  return value


def system_prompt(hcfg) -> str:
  """The helper's system prompt: helper.system_prompt, or the text of
  helper.system_prompt_file, or the protocol's prompt when neither is set."""
  d = _as_dict(hcfg)
  inline, path = d.get("system_prompt"), d.get("system_prompt_file")
  if inline is not None and path:
    raise SettingsError("config.helper: system_prompt and system_prompt_file are both set; "
                        "keep one")
  if path:
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    except OSError as e:
      raise SettingsError(f"config.helper.system_prompt_file: cannot read {path!r} "
                          f"({e.strerror or type(e).__name__})") from None
    if not text:
      raise SettingsError(f"config.helper.system_prompt_file: {path!r} is empty")
    return text
  return protocol.HELPER_SYSTEM_PROMPT if inline is None else inline


def openai_kwargs(hcfg) -> dict:
  """OpenAIHelper's arguments from a helper config section.

  The section also holds other helpers' keys (coverage, style, ...) and the helper
  pool's (concurrency, on_outage, ...; see `seekjax.rollout.pool.HelperPool`): only
  the constructor's own arguments are kept. `concurrency` also bounds the helper's own
  connections (max_concurrency) unless the section sets max_concurrency.
  """
  d = _as_dict(hcfg)
  accepted = set(inspect.signature(OpenAIHelper.__init__).parameters) - {"self"}
  kwargs = {k: v for k, v in d.items() if k in accepted}
  if "concurrency" in d:
    kwargs.setdefault("max_concurrency", d["concurrency"])
  if "extra_body_json" in d:
    kwargs["extra_body"] = extra_body(d["extra_body_json"], "helper.extra_body_json")
  kwargs["system_prompt"] = system_prompt(d)
  return kwargs


def judge_kwargs(cfg) -> dict | None:
  """OpenAIHelper's arguments for the LLM judge's backend, or None when the judge asks
  the run's helper itself (a helper without an endpoint and no judge.base_url)."""
  helper, judge = _as_dict(cfg.helper), _as_dict(cfg.get("judge"))
  if helper.get("kind") != "openai" and not judge.get("base_url"):
    return None
  kwargs = openai_kwargs(helper)
  if helper.get("kind") != "openai":   # a helper without an endpoint lends it none
    kwargs.pop("model", None)
  for key in ENDPOINT_KEYS:
    if judge.get(key):
      kwargs[key] = judge[key]
  if not str(kwargs.get("model") or "").strip():
    raise SettingsError("config.judge.model: empty; an LLM judge at judge.base_url needs the "
                        "served model's name")
  if judge.get("max_tokens"):
    kwargs["max_tokens"] = judge["max_tokens"]
  if judge.get("extra_body_json"):
    kwargs["extra_body"] = extra_body(judge["extra_body_json"], "judge.extra_body_json")
  kwargs["temperature"] = judge.get("temperature", 0.0)
  kwargs["top_p"] = None   # greedy by default: the helper's nucleus is not the judge's
  kwargs["system_prompt"] = protocol.HELPER_SYSTEM_PROMPT   # unused: LLMLeakJudge sends its own
  return kwargs


def judge_endpoint(cfg) -> tuple | None:
  """(base_url, model, api_key_env) the LLM judge asks, or None when it asks the helper."""
  kwargs = judge_kwargs(cfg)
  return None if kwargs is None else tuple(kwargs.get(k) for k in ENDPOINT_KEYS)


def helper_endpoint(cfg) -> tuple | None:
  """(base_url, model, api_key_env) of a served helper, or None for other kinds."""
  helper = _as_dict(cfg.helper)
  if helper.get("kind") != "openai":
    return None
  return tuple(helper.get(k) for k in ENDPOINT_KEYS)
