"""A scriptable fake OpenAI-compatible chat server on 127.0.0.1, for tests.

It serves ``POST /v1/chat/completions`` from an aiohttp app running in a background
thread, and binds only the loopback interface on a free port. Each request takes the
next scripted ``Behavior`` (or the default one) and answers accordingly:

  ok         200 with a chat completion (content from ``Behavior.content`` or the
             server's ``responder(request_json) -> str``), with usage (prompt_tokens: the
             words of the request's messages, completion_tokens: of the reply, unless set)
  slow       like ok, after ``delay`` seconds
  status     HTTP ``status`` (e.g. 500) with an OpenAI-style error body
  rate_limit HTTP 429 with ``Retry-After: retry_after``
  malformed  200 with a body that is not a chat completion (``body``)
  drop       the connection is closed without any response

Fault injection (``FaultConfig``) replaces the default behaviour with random faults of
given probabilities (seeded), plus an outage window during which every call gets
``outage_status``. Use it as a pytest fixture::

  from loopback_server import loopback_server  # noqa: F401  (re-export the fixture)

  def test_x(loopback_server):
    loopback_server.script(Behavior("status", status=500), Behavior("ok", content="hi"))
    url = loopback_server.base_url   # "http://127.0.0.1:PORT/v1"
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import random
import threading
import time
from typing import Callable
from unittest import mock

import pytest
from aiohttp import web

KINDS = ("ok", "slow", "status", "rate_limit", "malformed", "drop")


@dataclasses.dataclass
class Behavior:
  """What the server does for one request (see the module docstring)."""

  kind: str = "ok"
  content: str | None = None
  delay: float = 0.0
  status: int = 500
  retry_after: float | str = 1
  body: str = "this is not json"
  completion_tokens: int | None = None
  prompt_tokens: int | None = None   # None: the words of the request's messages
  usage: bool = True                 # False: the body has no "usage" (some servers)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown behavior {self.kind!r}; expected one of {KINDS}")


@dataclasses.dataclass
class FaultConfig:
  """Random faults for reliability tests. Probabilities are per request, checked in order
  drop, status (500), rate_limit (429), malformed, slow; the rest are ok."""

  p_drop: float = 0.0
  p_500: float = 0.0
  p_429: float = 0.0
  p_malformed: float = 0.0
  p_slow: float = 0.0
  slow_delay: float = 1.0
  retry_after: float = 0.05
  outage: tuple[float, float] | None = None   # (start, end) seconds since set_faults
  outage_status: int = 503
  seed: int = 0


@dataclasses.dataclass
class Call:
  """One received request: its parsed JSON, headers, the behaviour applied, the time."""

  body: dict | None
  headers: dict
  behavior: Behavior
  time: float


def _echo(request: dict) -> str:
  msgs = request.get("messages") or [{}]
  return f"<info>echo: {msgs[-1].get('content', '')}</info>"


class LoopbackServer:
  """The server. ``start()`` returns once it is listening; ``stop()`` shuts it down."""

  def __init__(self, responder: Callable[[dict], str] = _echo, default: Behavior | None = None):
    self.responder = responder
    self.default = default or Behavior("ok")
    self.calls: list[Call] = []
    self.max_in_flight = 0   # the most requests held at once since the last reset()
    self._generation = 0
    self._active: collections.Counter = collections.Counter()
    self._script: collections.deque = collections.deque()
    self._faults: FaultConfig | None = None
    self._fault_rng = random.Random(0)
    self._fault_t0 = 0.0
    self._lock = threading.Lock()
    self._loop: asyncio.AbstractEventLoop | None = None
    self._runner: web.AppRunner | None = None
    self._thread: threading.Thread | None = None
    self.port = 0
    self.addresses: list[tuple[str, int]] = []   # every (host, port) the server bound

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.port}/v1"

  def script(self, *behaviors: Behavior) -> None:
    """Queue behaviours for the next requests, in order (then the default applies)."""
    with self._lock:
      self._script.extend(behaviors)

  def set_faults(self, faults: FaultConfig | None) -> None:
    """Turn fault injection on (or off with None); the outage clock starts now."""
    with self._lock:
      self._faults = faults
      self._fault_rng = random.Random(faults.seed if faults else 0)
      self._fault_t0 = time.monotonic()

  def reset(self) -> None:
    with self._lock:
      self._script.clear()
      self.calls.clear()
      self._faults = None
      self.max_in_flight = 0
      self._generation += 1

  def _next_behavior(self) -> Behavior:
    with self._lock:
      if self._script:
        return self._script.popleft()
      f = self._faults
      if f is None:
        return self.default
      if f.outage and f.outage[0] <= time.monotonic() - self._fault_t0 < f.outage[1]:
        return Behavior("status", status=f.outage_status)
      u = self._fault_rng.random()
      for p, b in ((f.p_drop, Behavior("drop")), (f.p_500, Behavior("status", status=500)),
                   (f.p_429, Behavior("rate_limit", retry_after=f.retry_after)),
                   (f.p_malformed, Behavior("malformed")),
                   (f.p_slow, Behavior("slow", delay=f.slow_delay))):
        if u < p:
          return b
        u -= p
      return self.default

  async def _handle(self, request: web.Request) -> web.StreamResponse:
    with self._lock:   # count only requests that arrived since the last reset()
      gen = self._generation
      self._active[gen] += 1
      self.max_in_flight = max(self.max_in_flight, self._active[self._generation])
    try:
      return await self._respond(request)
    finally:
      with self._lock:
        self._active[gen] -= 1

  async def _respond(self, request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    try:
      body = json.loads(raw)
    except ValueError:
      body = None
    b = self._next_behavior()
    with self._lock:
      self.calls.append(Call(body, dict(request.headers), b, time.monotonic()))
    if b.kind == "drop":
      request.transport.close()
      raise asyncio.CancelledError()
    if b.kind == "status":
      error = {"message": f"injected {b.status}", "type": "server_error"}
      return web.json_response({"error": error}, status=b.status)
    if b.kind == "rate_limit":
      return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}},
                               status=429, headers={"Retry-After": str(b.retry_after)})
    if b.kind == "malformed":
      return web.Response(text=b.body, content_type="application/json")
    if b.kind == "slow":
      await asyncio.sleep(b.delay)
    content = b.content if b.content is not None else self.responder(body or {})
    tokens = b.completion_tokens if b.completion_tokens is not None else len(content.split())
    prompt = b.prompt_tokens if b.prompt_tokens is not None else sum(
        len(str(m.get("content", "")).split()) for m in (body or {}).get("messages") or [])
    out = {
        "id": f"chatcmpl-{len(self.calls)}", "object": "chat.completion",
        "created": int(time.time()), "model": (body or {}).get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    }
    if b.usage:
      out["usage"] = {"prompt_tokens": prompt, "completion_tokens": tokens,
                      "total_tokens": prompt + tokens}
    return web.json_response(out)

  async def _start_async(self) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", self._handle)
    self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await self._runner.setup()
    site = web.TCPSite(self._runner, host="127.0.0.1", port=0)
    await site.start()
    sockets = site._server.sockets  # pylint: disable=protected-access
    self.addresses = [sock.getsockname()[:2] for sock in sockets]
    self.port = self.addresses[0][1]

  def start(self) -> "LoopbackServer":
    ready = threading.Event()
    errors: list[BaseException] = []

    def run():
      self._loop = asyncio.new_event_loop()
      asyncio.set_event_loop(self._loop)
      try:
        self._loop.run_until_complete(self._start_async())
      except BaseException as e:  # pylint: disable=broad-except
        errors.append(e)
        ready.set()
        return
      ready.set()
      self._loop.run_forever()
      self._loop.run_until_complete(self._runner.cleanup())
      self._loop.close()

    self._thread = threading.Thread(target=run, name="loopback-server", daemon=True)
    self._thread.start()
    ready.wait(10)
    if errors:
      raise errors[0]
    return self

  def stop(self) -> None:
    if self._loop is not None and self._thread is not None:
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join(10)

  def __enter__(self) -> "LoopbackServer":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()


@contextlib.contextmanager
def cancelling_loopback_server():
  """A running LoopbackServer that cancels a handler when its client hangs up (as vLLM
  aborts such a request), so its in-flight count holds only the calls some client still
  waits on."""
  runner = functools.partial(web.AppRunner, handler_cancellation=True)
  with mock.patch.object(web, "AppRunner", runner):
    server = LoopbackServer().start()
  try:
    yield server
  finally:
    server.stop()


@pytest.fixture(scope="module")
def loopback_server_module():
  """One server per test module; reset it between tests with the function fixture."""
  with LoopbackServer() as server:
    yield server


@pytest.fixture
def loopback_server(loopback_server_module):  # pylint: disable=redefined-outer-name
  """A running LoopbackServer, reset (no script, no faults, no calls) for each test."""
  loopback_server_module.reset()
  yield loopback_server_module
  loopback_server_module.reset()
