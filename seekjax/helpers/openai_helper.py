"""A helper served by any OpenAI-compatible chat endpoint (vLLM, SGLang, hosted APIs).

``OpenAIHelper.respond`` never raises: failures come back as a HelperReply with
``error`` set to one of "timeout", "connection", "rate_limited", "http_<status>",
"malformed" or "exception:<Type>", and the defined "helper unavailable" text. Transient
failures (timeout, connection, 429, 5xx) are retried with exponential backoff and
jitter. A Retry-After header (on a 429 or a 5xx) is honoured: no retry goes out before
it, and a Retry-After longer than ``max_retry_after`` ends the call instead. Inside a
rollout's helper pool, each attempt is reported to the pool's outage gate
(``seekjax.helpers.faults``), which counts faults and may hold attempts back while the
endpoint is down. Each request carries an ``X-Seekjax-Call: <call id>/<attempt>`` header,
so server logs can be matched to rows. The API key is read from the environment
variable named by ``api_key_env`` and is never stored on the helper, logged, shown in
repr, or put into an error.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import sys
import time
import urllib.parse

import openai

from seekjax import protocol
from seekjax.helpers.base import Helper, HelperReply, HelperUnusable, History, Usage
from seekjax.helpers import faults

log = logging.getLogger(__name__)

RETRYABLE = ("timeout", "connection", "rate_limited")
NO_KEY = "EMPTY"  # what local servers (vLLM, SGLang) accept when they need no key


def _retry_after_seconds(headers) -> float | None:
  """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
  value = headers.get("retry-after") if headers is not None else None
  if value is None:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
    return max(0.0, when.timestamp() - time.time())
  except (TypeError, ValueError):
    return None


def classify_error(e: BaseException) -> tuple[str, float | None]:
  """Map an exception from the client to (error code, retry-after seconds or None)."""
  if isinstance(e, (openai.APITimeoutError, asyncio.TimeoutError)):
    return "timeout", None
  if isinstance(e, openai.APIConnectionError):
    return "connection", None
  if isinstance(e, openai.RateLimitError):
    return "rate_limited", _retry_after_seconds(getattr(e.response, "headers", None))
  if isinstance(e, openai.APIStatusError):
    retry_after = (_retry_after_seconds(getattr(e.response, "headers", None))
                   if e.status_code >= 500 else None)
    return f"http_{e.status_code}", retry_after
  if isinstance(e, (openai.APIResponseValidationError, ValueError, KeyError, TypeError,
                    AttributeError, IndexError)):
    return protocol.MALFORMED, None
  return f"exception:{type(e).__name__}", None


def _is_retryable(error: str) -> bool:
  return error in RETRYABLE or (error.startswith("http_") and error[5:].isdigit()
                                and int(error[5:]) >= 500)


def _content_and_usage(completion) -> tuple[str, Usage]:
  """The first choice's text and the usage the server reported; raises on a malformed body."""
  choices = getattr(completion, "choices", None)
  if not choices:
    raise ValueError("no choices")
  content = choices[0].message.content
  if not isinstance(content, str):
    raise ValueError("content is not text")
  return content, _usage(getattr(completion, "usage", None))


def _usage(usage) -> Usage:
  """(prompt_tokens, completion_tokens) of a response's usage; None where not reported."""
  counts = [getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens")]
  return Usage(*(c if isinstance(c, int) and not isinstance(c, bool) else None for c in counts))


class OpenAIHelper(Helper):
  """Helper over an OpenAI-compatible ``/chat/completions`` endpoint."""

  name = "openai"
  reports_attempts = True   # each HTTP attempt goes to the pool's outage gate

  def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
               timeout: float = 60.0, max_retries: int = 3, backoff_base: float = 0.5,
               backoff_max: float = 30.0, max_retry_after: float = 60.0,
               max_concurrency: int = 16, temperature: float = 0.0,
               max_tokens: int = 512, top_p: float | None = None,
               system_prompt: str = protocol.HELPER_SYSTEM_PROMPT,
               seed: int | None = None, extra_body: dict | None = None):
    self.base_url = base_url
    self.model = model
    self.api_key_env = api_key_env
    self.timeout = float(timeout)
    self.max_retries = int(max_retries)
    self.backoff_base = float(backoff_base)
    self.backoff_max = float(backoff_max)
    self.max_retry_after = float(max_retry_after)
    self.max_concurrency = int(max_concurrency)
    self.temperature = float(temperature)
    self.max_tokens = int(max_tokens)
    self.top_p = None if top_p is None else float(top_p)
    self.system_prompt = system_prompt
    self.extra_body = dict(extra_body or {})
    self._rng = random.Random(seed)
    self._loop = None
    self._client = None
    self._semaphore = None

  @classmethod
  def from_config(cls, cfg) -> "OpenAIHelper":
    """Build from a ConfigDict or dict with keys matching the constructor's arguments."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    d.pop("kind", None)
    return cls(d.pop("base_url"), d.pop("model"), **d)

  def __repr__(self) -> str:
    return (f"OpenAIHelper(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, max_concurrency={self.max_concurrency})")

  __str__ = __repr__

  def _ensure_client(self):
    """One client and semaphore per event loop (they cannot be shared across loops)."""
    loop = asyncio.get_running_loop()
    if self._loop is not loop:
      key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
      if self.api_key_env and not key:
        log.warning("environment variable %s is not set; sending no API key", self.api_key_env)
      self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key or NO_KEY,
                                        timeout=self.timeout, max_retries=0)
      self._semaphore = asyncio.Semaphore(self.max_concurrency)
      self._loop = loop
    return self._client

  def _backoff(self, attempt: int, retry_after: float | None) -> float:
    delay = min(self.backoff_max, self.backoff_base * 2 ** attempt)
    delay *= 0.5 + self._rng.random()   # jitter in [0.5, 1.5)
    if retry_after is not None:   # never earlier than the server asked
      delay = max(delay, retry_after)
    return delay

  async def _complete_once(self, messages: list[dict], call: faults.CallContext | None,
                           max_tokens: int | None = None) -> tuple[str, Usage]:
    client = self._ensure_client()
    headers = {"X-Seekjax-Call": f"{call.call_id}/{call.attempts}"} if call else None
    sampling = {"top_p": self.top_p} if self.top_p is not None else {}
    async with self._semaphore:
      completion = await client.chat.completions.create(
          model=self.model, messages=messages, temperature=self.temperature,
          max_tokens=max_tokens or self.max_tokens, extra_body=self.extra_body or None,
          extra_headers=headers, **sampling)
    return _content_and_usage(completion)

  async def probe(self, role: str = "helper") -> None:
    """One 1-token request, with the usual retries, before a run starts: raises
    HelperUnusable (one line) when the endpoint refuses the key (HTTP 401/403), is not
    there (connection refused, DNS, HTTP 404) or never answers (timeout). Other failures
    (5xx, 429, 400 ...) are warned about in one line; the run's outage handling copes.
    role: the config section the endpoint comes from ("helper" or "judge"), for the hints."""
    _, _, error = await self.acomplete([{"role": "user", "content": "ping"}], max_tokens=1)
    if error is None:
      return
    where = f"{role} at {_url_for_humans(self.base_url)} (model {self.model!r})"
    if error in ("http_401", "http_403"):
      key = (f"environment variable {self.api_key_env}" if self.api_key_env else "no API key")
      unset = " (it is not set)" if self.api_key_env and not os.environ.get(self.api_key_env) else ""
      raise HelperUnusable(f"{where} refused the API key ({error.replace('_', ' ').upper()}; "
                           f"the key comes from {key}{unset})")
    if error == "connection":
      raise HelperUnusable(f"{where} is unreachable (connection failed after "
                           f"{self.max_retries + 1} tries); check {role}.base_url and that the "
                           "server is up")
    if error == "http_404":
      raise HelperUnusable(f"{where}: HTTP 404; check {role}.base_url (it usually ends in /v1) "
                           f"and {role}.model")
    if error == "timeout":
      raise HelperUnusable(f"{where} did not answer a 1-token request within "
                           f"helper.timeout={self.timeout:g}s ({self.max_retries + 1} tries)")
    print(f"[seekjax.helper] warning: {where} answered the start probe with error {error}; "
          "starting anyway", file=sys.stderr, flush=True)

  async def acomplete(self, messages: list[dict],
                      max_tokens: int | None = None) -> tuple[str, int | None, str | None]:
    """Raw completion with retries: (text, completion tokens or None, error or None)."""
    text, usage, error = await self.acomplete_usage(messages, max_tokens)
    return text, usage.completion_tokens, error

  async def acomplete_usage(self, messages: list[dict], max_tokens: int | None = None
                            ) -> tuple[str, Usage, str | None]:
    """Raw completion with retries: (text, the server's usage, error or None).

    Inside a helper pool, the pool's outage gate may hold an attempt back, or refuse it
    (error "outage"). Failures during an outage that the gate paces do not use up
    ``max_retries``.
    """
    call = faults.current_call()
    error, attempt = None, 0
    while True:
      if call is not None:
        refused = await call.before_attempt()
        if refused is not None:
          error = refused
          break
      try:
        text, usage = await self._complete_once(messages, call, max_tokens)
      except asyncio.CancelledError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        error, retry_after = classify_error(e)
      else:
        if call is not None:
          call.after_attempt(None)
        return text, usage, None
      paced = call.after_attempt(error, retry_after) if call is not None else False
      if not _is_retryable(error):
        break
      if paced:   # the endpoint is down: the gate decides when this goes out again
        continue
      if (retry_after or 0.0) > self.max_retry_after:
        break
      if attempt == self.max_retries:
        if call is not None and await call.hold_last_failure(error):
          continue   # an outage was declared meanwhile: the gate paces the retry
        break
      delay = self._backoff(attempt, retry_after)
      log.info("helper call failed (%s); retry %d/%d in %.2fs", error, attempt + 1,
               self.max_retries, delay)
      attempt += 1
      await asyncio.sleep(delay)
    log.warning("helper call failed: %s", error)
    return "", Usage(), error

  async def respond(self, message: str, history: History) -> HelperReply:
    start = time.perf_counter()
    text, usage, error = await self.acomplete_usage(
        protocol.helper_messages(message, history, self.system_prompt))
    latency = time.perf_counter() - start
    if error is not None:
      return HelperReply("info", protocol.HELPER_UNAVAILABLE_TEXT, 0, latency, error)
    reply = parse_reply_with_tokens(text, usage.completion_tokens)
    reply.latency = latency
    reply.prompt_tokens = usage.prompt_tokens or 0
    reply.completion_tokens = usage.completion_tokens or 0
    return reply

  async def release_loop(self) -> None:
    """Close the client of the running loop (a helper pool's, before it stops); the next
    call makes a new one on its own loop."""
    if self._client is not None and self._loop is asyncio.get_running_loop():
      await self.aclose()

  async def aclose(self) -> None:
    """Close the HTTP client. The helper stays usable: a later call makes a new client."""
    if self._client is not None:
      client, self._client, self._loop, self._semaphore = self._client, None, None, None
      try:
        await client.close()
      except Exception:  # pylint: disable=broad-except  (closing on another loop)
        pass


def _url_for_humans(url: str) -> str:
  """scheme://host[:port]/path of a URL: no userinfo, query or fragment (keys hide there)."""
  parts = urllib.parse.urlsplit(url)
  host = parts.hostname or ""
  if parts.port:
    host = f"{host}:{parts.port}"
  return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_reply_with_tokens(raw: str, tokens: int | None) -> HelperReply:
  """parse_helper_reply, with tokens = completion tokens or the raw whitespace count."""
  reply = protocol.parse_helper_reply(raw)
  reply.tokens = tokens if tokens is not None else len(raw.split())
  return reply
