"""Tests for seekjax/helpers/: OpenAIHelper (against the loopback server), KnowledgeHelper,
LocalLMHelper."""
import asyncio
import logging
import os
import sys
import threading
import time

import ml_collections
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import (Behavior, FaultConfig, loopback_server,  # noqa: E402,F401
                             loopback_server_module)
from seekjax import protocol  # noqa: E402
from seekjax.helpers import HelperReply, KnowledgeHelper, OpenAIHelper  # noqa: E402

KEY = "sk-test-DO-NOT-LEAK-4b1d9c"


@pytest.fixture
def api_key(monkeypatch):
  monkeypatch.setenv("SEEKJAX_TEST_KEY", KEY)
  return "SEEKJAX_TEST_KEY"


def _helper(server, api_key_env=None, **kw):
  kw = {"timeout": 2.0, "max_retries": 2, "backoff_base": 0.01, **kw}
  return OpenAIHelper(server.base_url, "fake-llm", api_key_env=api_key_env, **kw)


def _ask(helper, *messages, history=()):
  async def run():
    try:
      if len(messages) == 1:
        return await helper.respond(messages[0], list(history))
      return await asyncio.gather(*(helper.respond(m, list(history)) for m in messages))
    finally:
      await helper.aclose()
  return asyncio.run(run())


# OpenAIHelper ---------------------------------------------------------------------------

def test_server_binds_loopback_only(loopback_server):
  assert loopback_server.addresses and all(h == "127.0.0.1" for h, _ in loopback_server.addresses)


def test_happy_path_parses_reply_and_sends_the_protocol(loopback_server, api_key):
  loopback_server.script(Behavior(
      "ok", content="<think>private</think><need>Which country?</need>", completion_tokens=7))
  history = [("earlier", HelperReply("info", "old fact"))]
  reply = _ask(_helper(loopback_server, api_key, temperature=0.3, max_tokens=99), "capital?",
               history=history)
  assert (reply.kind, reply.text, reply.tokens, reply.error) == ("need", "Which country?", 7, None)
  assert reply.latency > 0
  call = loopback_server.calls[0]
  assert call.headers["Authorization"] == f"Bearer {KEY}"
  body = call.body
  assert (body["model"], body["temperature"], body["max_tokens"]) == ("fake-llm", 0.3, 99)
  assert body["messages"] == protocol.helper_messages("capital?", history)


def test_slow_reply_times_out_after_retries(loopback_server):
  loopback_server.script(*[Behavior("slow", delay=1.5)] * 2)
  t0 = time.perf_counter()
  reply = _ask(_helper(loopback_server, timeout=0.25, max_retries=1), "hi")
  elapsed = time.perf_counter() - t0
  assert reply.error == "timeout" and reply.text == protocol.HELPER_UNAVAILABLE_TEXT
  assert len(loopback_server.calls) == 2 and 0.45 < elapsed < 1.4


def test_http_500_is_retried_then_reported(loopback_server):
  loopback_server.script(*[Behavior("status", status=500)] * 3)
  reply = _ask(_helper(loopback_server, max_retries=2), "hi")
  assert reply.error == "http_500" and len(loopback_server.calls) == 3
  loopback_server.reset()
  loopback_server.script(Behavior("status", status=503), Behavior("ok", content="<info>ok</info>"))
  reply = _ask(_helper(loopback_server, max_retries=2), "hi")
  assert (reply.text, reply.error, len(loopback_server.calls)) == ("ok", None, 2)


def test_client_errors_are_not_retried(loopback_server):
  loopback_server.script(Behavior("status", status=400))
  reply = _ask(_helper(loopback_server, max_retries=3), "hi")
  assert reply.error == "http_400" and len(loopback_server.calls) == 1


def test_rate_limit_honours_retry_after(loopback_server):
  loopback_server.script(Behavior("rate_limit", retry_after=0.4), Behavior("ok", content="fine"))
  reply = _ask(_helper(loopback_server, max_retries=1, backoff_base=0.001), "hi")
  t = [c.time for c in loopback_server.calls]
  assert reply.error is None and reply.text == "fine"
  assert t[1] - t[0] >= 0.38
  loopback_server.script(*[Behavior("rate_limit", retry_after=0.01)] * 2)
  assert _ask(_helper(loopback_server, max_retries=1), "hi").error == "rate_limited"


@pytest.mark.parametrize("body", ["this is not json", '{"choices": []}',
                                  '{"choices": [{"message": {"content": null}}]}'])
def test_malformed_body_is_reported_not_retried(loopback_server, body):
  loopback_server.script(Behavior("malformed", body=body))
  reply = _ask(_helper(loopback_server, max_retries=3), "hi")
  assert reply.error == "malformed" and len(loopback_server.calls) == 1


def test_dropped_connection(loopback_server):
  loopback_server.script(*[Behavior("drop")] * 2)
  reply = _ask(_helper(loopback_server, max_retries=1), "hi")
  assert reply.error == "connection" and len(loopback_server.calls) == 2
  loopback_server.script(Behavior("drop"), Behavior("ok", content="<info>back</info>"))
  assert _ask(_helper(loopback_server, max_retries=1), "hi").text == "back"


def test_concurrency_limit(loopback_server):
  loopback_server.default = Behavior("slow", delay=0.15)
  try:
    replies = _ask(_helper(loopback_server, max_concurrency=2), *[f"q{i}" for i in range(6)])
  finally:
    loopback_server.default = Behavior("ok")
  assert all(r.error is None for r in replies)
  assert [r.text for r in replies] == [f"echo: q{i}" for i in range(6)]
  assert loopback_server.max_in_flight == 2


def test_api_key_never_in_logs_repr_or_errors(loopback_server, api_key, caplog):
  caplog.set_level(logging.DEBUG)
  helper = _helper(loopback_server, api_key, timeout=0.2, max_retries=1)
  behaviours = [Behavior("status", status=401), Behavior("status", status=500),
                Behavior("status", status=500), Behavior("drop"), Behavior("drop"),
                Behavior("slow", delay=1), Behavior("slow", delay=1), Behavior("malformed"),
                Behavior("ok")]
  loopback_server.script(*behaviours)
  replies = [_ask(helper, "hi") for _ in range(6)]
  assert [r.error for r in replies] == ["http_401", "http_500", "connection", "timeout",
                                        "malformed", None]
  assert len(caplog.records) > 5               # the client and we did log at DEBUG/INFO
  assert KEY not in caplog.text
  assert all(KEY not in str(r) for r in replies)
  assert KEY not in repr(helper) and KEY not in str(helper)
  assert "SEEKJAX_TEST_KEY" in repr(helper)


def test_from_config():
  cfg = ml_collections.ConfigDict({"kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                                   "model": "m", "timeout": 3.0, "max_retries": 1,
                                   "max_concurrency": 4, "temperature": 0.7})
  h = OpenAIHelper.from_config(cfg)
  assert (h.model, h.timeout, h.max_retries, h.max_concurrency, h.temperature) == (
      "m", 3.0, 1, 4, 0.7)
  assert OpenAIHelper.from_config(cfg.to_dict()).base_url == cfg.base_url


def test_build_helper_openai_from_the_default_helper_section(loopback_server, api_key):
  """The run config's helper section also holds other helpers' and the pool's keys
  (coverage, concurrency, on_outage, ...): build_helper passes OpenAIHelper only its own."""
  from seekjax import configlib
  from seekjax.run import setup as setup_lib
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  hcfg = configlib.load_config(os.path.join(root, "configs", "smollm2_worldfacts.py")).helper
  assert {"concurrency", "on_outage", "coverage", "style"} <= set(hcfg)   # not vacuous
  hcfg.kind, hcfg.base_url, hcfg.api_key_env = "openai", loopback_server.base_url, api_key
  for empty in ("", "  "):   # the default section names no served model: refused
    hcfg.model = empty
    with pytest.raises(setup_lib.RunSetupError, match=r"^config\.helper\.model: empty"):
      setup_lib.build_helper(hcfg)
  hcfg.model = "fake-llm"
  helper = setup_lib.build_helper(hcfg)
  assert isinstance(helper, OpenAIHelper)
  assert (helper.timeout, helper.max_retries, helper.max_concurrency) == (
      hcfg.timeout, hcfg.max_retries, hcfg.concurrency)
  loopback_server.script(Behavior("ok", content="<info>Asmara is the capital.</info>"))
  reply = _ask(helper, "capital of Eritrea?")
  assert (reply.kind, reply.text, reply.error) == ("info", "Asmara is the capital.", None)
  assert loopback_server.calls[0].headers["Authorization"] == f"Bearer {KEY}"


def test_unreachable_server_is_a_connection_error():
  h = OpenAIHelper("http://127.0.0.1:9/v1", "m", api_key_env=None, max_retries=0, timeout=1)
  assert _ask(h, "hi").error == "connection"


def test_fault_injection_and_outage(loopback_server):
  loopback_server.set_faults(FaultConfig(p_500=0.5, seed=1))
  errors = [_ask(_helper(loopback_server, max_retries=0), "q").error for _ in range(30)]
  assert 5 <= errors.count("http_500") <= 25 and set(errors) <= {None, "http_500"}
  loopback_server.set_faults(FaultConfig(outage=(0.0, 0.3)))
  during = _ask(_helper(loopback_server, max_retries=0), "q").error
  time.sleep(0.35)
  after = _ask(_helper(loopback_server, max_retries=0), "q").error
  assert (during, after) == ("http_503", None)


# KnowledgeHelper ------------------------------------------------------------------------

COUNTRIES = {"Eritrea": "Asmara", "Burkina Faso": "Ouagadougou", "Niger": "Niamey",
             "Nigeria": "Abuja", "Bhutan": "Thimphu", "Suriname": "Paramaribo"}
FACTS = [f"The capital of {c} is {k}." for c, k in COUNTRIES.items()] + [
    "Eritrea uses the nakfa as its currency.", "Bhutan measures gross national happiness.",
    "Niger is named after the Niger River."]


def _kh(**kw):
  return KnowledgeHelper(FACTS, entities=list(COUNTRIES), entity_kind="country", **kw)


def test_knowledge_helper_retrieves_entity_facts_first():
  r = _kh(top_k=2).reply("What is the capital of eritrea?")
  assert r.kind == "info" and r.error is None
  assert r.text.startswith("The capital of Eritrea is Asmara.") and "nakfa" in r.text
  assert r.tokens == len(r.text.split())
  # word boundaries: "Nigeria" does not name "Niger"
  assert _kh(top_k=1).reply("capital of Nigeria").text == "The capital of Nigeria is Abuja."


def test_knowledge_helper_asks_for_the_entity_once():
  h = _kh()
  need = h.reply("What is the capital of her country?")
  assert need.kind == "need" and need.text == "Which country do you mean? Please name it."
  again = h.reply("What is the capital of her country?", [("q", need)])
  assert again.kind == "info"                        # never repeats a request
  assert KnowledgeHelper(FACTS).reply("capital of her country").kind == "info"  # no entities


def test_coverage_is_a_nested_deterministic_subset():
  known = {c: set(_kh(coverage=c, seed=3).known) for c in (0.0, 0.3, 0.6, 1.0)}
  assert [len(known[c]) for c in (0.0, 0.3, 0.6, 1.0)] == [0, 3, 5, 9]
  assert known[0.3] <= known[0.6] <= known[1.0] == set(FACTS)
  assert set(_kh(coverage=0.6, seed=3).known) == known[0.6]
  assert set(_kh(coverage=0.6, seed=4).known) != known[0.6]
  assert _kh(coverage=0.0).reply("capital of Bhutan").text == "I do not know."


def test_noise_rate_and_determinism():
  h = _kh(noise=0.3, top_k=1)
  messages = [f"Tell me fact {i} about the capital of Bhutan" for i in range(300)]
  wrong = [h.reply(m).text != "The capital of Bhutan is Thimphu." for m in messages]
  assert 0.22 < sum(wrong) / len(wrong) < 0.38
  assert [h.reply(m).text for m in messages[:20]] == [h.reply(m).text for m in messages[:20]]
  always = _kh(noise=1.0, top_k=1).reply("capital of Bhutan").text
  assert always != "The capital of Bhutan is Thimphu." and always in FACTS


def test_top_k_and_style():
  terse, verbose = _kh(top_k=1), _kh(top_k=3, style="verbose")
  t, v = terse.reply("capital of Niger"), verbose.reply("capital of Niger")
  assert t.text == "The capital of Niger is Niamey."
  assert v.text.count("(") == 3 and "Niamey" in v.text and v.tokens > 3 * t.tokens
  assert verbose.reply("her country?").text.startswith("I cannot see your original question")
  with pytest.raises(ValueError):
    KnowledgeHelper(FACTS, style="chatty")


def test_knowledge_helper_is_fast_on_a_large_fact_base():
  facts = [f"The capital of Land{i} is City{i}." for i in range(5000)]
  t0 = time.perf_counter()
  h = KnowledgeHelper(facts, entities=[f"Land{i}" for i in range(5000)])
  build = time.perf_counter() - t0
  t0 = time.perf_counter()

  async def ask_all():
    return await asyncio.gather(*(h.respond(f"capital of Land{i}?", [])
                                  for i in range(0, 5000, 25)))

  replies = asyncio.run(ask_all())
  per_query = (time.perf_counter() - t0) / len(replies)
  assert replies[7].text.startswith("The capital of Land175 is City175.")
  assert build < 5.0 and per_query < 0.02


# LocalLMHelper --------------------------------------------------------------------------

def test_local_lm_helper_runs_jax_on_its_own_thread(tiny_model, monkeypatch, request):
  from seekjax.helpers.local_lm import LocalLMHelper, facts_prompt
  from seekjax.models import generate as gen
  threads, durations, slept, original = [], [], [], gen.generate_ids

  def spy(*a, **kw):
    threads.append(threading.current_thread().name)
    t0 = time.perf_counter()
    try:
      if len(threads) == 1:
        time.sleep(1.0)   # a call that surely blocks its thread for a second
        slept.append((t0, time.perf_counter()))
      return original(*a, **kw)
    finally:
      durations.append(time.perf_counter() - t0)

  monkeypatch.setattr(gen, "generate_ids", spy)
  # The first generate call must really compile (seconds), not read the persistent
  # compilation cache that an earlier run's set-up turned on in this process.
  import jax  # pylint: disable=import-outside-toplevel
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  request.addfinalizer(lambda: jax.config.update("jax_enable_compilation_cache", enabled))
  helper = LocalLMHelper(tiny_model, facts=FACTS, top_k=1, max_new_tokens=8)
  assert helper.retrieve("capital of Bhutan?") == ["The capital of Bhutan is Thimphu."]
  assert "- The capital of Bhutan is Thimphu." in facts_prompt("S", helper.retrieve("Bhutan"))

  ticks = []

  async def run():
    stop = False

    async def ticker():
      while not stop:
        await asyncio.sleep(0.005)
        ticks.append(time.perf_counter())

    tick = asyncio.create_task(ticker())
    replies = await asyncio.gather(*(helper.respond(f"capital {i}?", []) for i in range(4)))
    again = [await helper.respond("capital 0?", []) for _ in range(2)]
    stop = True
    await tick
    await helper.aclose()
    late = await helper.respond("after close", [])
    return replies, again, late

  replies, again, late = asyncio.run(run())
  assert threads and all(n.startswith("seekjax-local-lm") for n in threads)
  assert sum(helper.batch_sizes) == 6 and len(helper.batch_sizes) <= 4   # 4 requests batched
  # a random model may emit no letters at all: then the reply is defined as malformed
  assert all(r.error in (None, "malformed") and 0 < r.tokens <= 8 for r in replies)
  assert again[0].text == again[1].text                                  # greedy: deterministic
  # Had a generate call run on the event loop, the loop could not have ticked while the
  # spy's first call slept. On the worker's thread the sleep releases the GIL and the loop
  # ticks through it. (Stalls elsewhere do not decide anything: the worker holds the GIL
  # while it traces, for a time that depends on the box's load.)
  assert max(durations) >= 1.0 and len(slept) == 1
  start, end = slept[0]
  assert sum(start + 0.1 < t < end - 0.1 for t in ticks) >= 10, (slept, len(ticks))
  assert late.error == "exception:RuntimeError"


# One helper, many rollouts --------------------------------------------------------------

def _two_rollouts(model, helper):
  """Two consecutive rollouts (two helper pools) with one helper instance; each asks the
  helper once, in a forced turn. Returns each rollout's one reply."""
  import jax
  from seekjax.rollout import rollout, rollout_config
  cfg = rollout_config(max_turns=1, max_new_tokens=8, max_message_tokens=8,
                       max_feedback_tokens=32, temperature=0.0, helper_timeout=30.0)
  forced = [[("<message>capital of Eritrea?</message>", "capital of Eritrea?")]]
  replies = []
  for seed in range(2):
    eps = rollout(model, ["What is the capital of Eritrea?"], helper, cfg,
                  jax.random.PRNGKey(seed), forced=forced)
    replies.append(eps.replies[0][0])
  return replies


def test_local_lm_helper_serves_consecutive_rollouts(tiny_model):
  """The pool does not own the helper: closing a rollout's pool must not shut it down."""
  from seekjax.helpers.local_lm import LocalLMHelper
  helper = LocalLMHelper(tiny_model, max_new_tokens=4)
  try:
    first, second = _two_rollouts(tiny_model, helper)
  finally:
    helper.close()
  # a random model may emit no letters at all: then the reply is defined as malformed
  for reply in (first, second):
    assert reply.error in (None, "malformed") and 0 < reply.tokens <= 4, reply
  assert sum(helper.batch_sizes) == 2


def test_openai_helper_serves_consecutive_rollouts(tiny_model, loopback_server):
  """Each pool's loop gets its own HTTP client, closed with that pool; the helper lives on."""
  helper = _helper(loopback_server)
  loopback_server.script(Behavior("ok", content="<info>Asmara is the capital.</info>"),
                         Behavior("ok", content="<info>It is Asmara.</info>"))
  first, second = _two_rollouts(tiny_model, helper)
  assert [(r.kind, r.text, r.error) for r in (first, second)] == [
      ("info", "Asmara is the capital.", None), ("info", "It is Asmara.", None)]
  assert len(loopback_server.calls) == 2
  assert helper._client is None   # the last pool closed its loop's client   # pylint: disable=protected-access


def test_close_helpers_closes_each_backend_once_and_reports_failures(capsys):
  from seekjax.helpers.judges import LLMLeakJudge
  from seekjax.run.setup import close_helpers

  class Closable:
    def __init__(self, fail=False):
      self.closed, self.fail = 0, fail

    async def aclose(self):
      self.closed += 1
      if self.fail:
        raise OSError("socket already gone")

  helper, broken = Closable(), Closable(fail=True)
  close_helpers(helper, LLMLeakJudge(helper), broken, None)
  assert helper.closed == 1 and broken.closed == 1
  assert "closing Closable failed" in capsys.readouterr().err
