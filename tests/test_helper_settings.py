"""Tests for seekjax/helpers/settings.py: a served helper's and the LLM judge's request
settings from the config, as the loopback server receives them; the usage it reports."""
import asyncio
import types
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import (Behavior, LoopbackServer, loopback_server,  # noqa: E402,F401
                             loopback_server_module)
from seekjax import configlib, protocol  # noqa: E402
from seekjax.helpers import LLMLeakJudge, OpenAIHelper  # noqa: E402
from seekjax.helpers import settings  # noqa: E402
from seekjax.helpers.base import HelperReply, usage_totals  # noqa: E402

QWEN3_BODY = '{"chat_template_kwargs": {"enable_thinking": false}}'


def _cfg(server, *overrides):
  return configlib.load_config("configs/tiny_test.py", [
      "helper.kind=openai", f"helper.base_url={server.base_url}", "helper.model=served",
      "helper.api_key_env=", "helper.max_retries=0", *overrides])


def _respond(helper, message="what is the capital?"):
  async def run():
    try:
      return await helper.respond(message, [])
    finally:
      await helper.aclose()
  return asyncio.run(run())


def test_request_carries_the_configured_settings(loopback_server):
  cfg = _cfg(loopback_server, "helper.max_tokens=77", "helper.temperature=0.7",
             "helper.top_p=0.8", f"helper.extra_body_json={QWEN3_BODY}",
             "helper.system_prompt=You help briefly.")
  loopback_server.script(Behavior(content="<info>Paris</info>", prompt_tokens=21,
                                  completion_tokens=5))
  reply = _respond(OpenAIHelper(**settings.openai_kwargs(cfg.helper)))
  body = loopback_server.calls[0].body
  assert (body["max_tokens"], body["temperature"], body["top_p"]) == (77, 0.7, 0.8)
  assert body["chat_template_kwargs"] == {"enable_thinking": False}
  assert body["messages"][0] == {"role": "system", "content": "You help briefly."}
  assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("Paris", 21, 5)


def test_defaults_send_the_protocol_prompt_and_no_top_p(loopback_server):
  _respond(OpenAIHelper(**settings.openai_kwargs(_cfg(loopback_server).helper)))
  body = loopback_server.calls[0].body
  assert body["messages"][0]["content"] == protocol.HELPER_SYSTEM_PROMPT
  assert (body["max_tokens"], body["temperature"]) == (512, 0.0)
  assert "top_p" not in body and "chat_template_kwargs" not in body


def test_system_prompt_from_a_file(loopback_server, tmp_path):
  path = tmp_path / "prompt.txt"
  path.write_text("Answer in one sentence.\n")
  cfg = _cfg(loopback_server, f"helper.system_prompt_file={path}")
  _respond(OpenAIHelper(**settings.openai_kwargs(cfg.helper)))
  assert loopback_server.calls[0].body["messages"][0]["content"] == "Answer in one sentence."


@pytest.mark.parametrize("overrides, message", [
    (("helper.system_prompt=x", "helper.system_prompt_file=/p.txt"), "both set"),
    (("helper.system_prompt_file=/no/such/prompt.txt",), "cannot read '/no/such/prompt.txt'"),
])
def test_bad_system_prompt_settings_are_one_line(loopback_server, overrides, message):
  with pytest.raises(settings.SettingsError, match=message) as e:
    settings.openai_kwargs(_cfg(loopback_server, *overrides).helper)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    ("helper.extra_body_json={enable_thinking: false}", "config.helper.extra_body_json: got"),
    ("judge.extra_body_json=[1, 2]", "config.judge.extra_body_json: got"),
    ("helper.top_p=1.5", "config.helper.top_p: got 1.5"),
    ("helper.max_tokens=0", "config.helper.max_tokens: got 0"),
    ("judge.api_key_env=sk-live-abcdefabcdef12", "config.judge.api_key_env: holds a secret"),
    ("judge.api_key_env=my key", "config.judge.api_key_env: expected an environment variable"),
])
def test_bad_values_are_refused_at_load_in_one_line(override, message):
  with pytest.raises(configlib.ConfigError, match=message) as e:
    configlib.load_config("configs/tiny_test.py", [override])
  assert "\n" not in str(e.value) and "sk-live" not in str(e.value)


def test_judge_goes_to_its_own_endpoint():
  with LoopbackServer() as helper_server, LoopbackServer() as judge_server:
    judge_server.default = Behavior(content='{"reason": "names the user", "leakage": true}')
    cfg = _cfg(helper_server, "helper.max_tokens=64", f"helper.extra_body_json={QWEN3_BODY}",
               "helper.temperature=0.7", "helper.top_p=0.8",
               f"judge.base_url={judge_server.base_url}", "judge.model=judge-llm",
               "judge.max_tokens=300")
    assert settings.judge_endpoint(cfg) != settings.helper_endpoint(cfg)
    judge = LLMLeakJudge(OpenAIHelper(**settings.judge_kwargs(cfg)))
    verdict = judge.judge(["Alice Smith of 4 Elm St asks"], ["Alice Smith"])
    assert verdict.leak and verdict.error is None
    assert not helper_server.calls and len(judge_server.calls) == 1
    body = judge_server.calls[0].body
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("judge-llm", 300, 0.0)
    assert "top_p" not in body
    assert body["chat_template_kwargs"] == {"enable_thinking": False}   # inherited
    assert body["messages"][0]["content"] == protocol.LEAK_JUDGE_PROMPT


def test_judge_inherits_the_helper_endpoint(loopback_server):
  cfg = _cfg(loopback_server, "helper.max_tokens=64", "judge.extra_body_json={}")
  kwargs = settings.judge_kwargs(cfg)
  assert settings.judge_endpoint(cfg) == settings.helper_endpoint(cfg)
  assert (kwargs["base_url"], kwargs["model"], kwargs["max_tokens"]) == (
      loopback_server.base_url, "served", 64)
  assert kwargs["extra_body"] == {}


def test_judge_of_a_helper_without_endpoint():
  cfg = configlib.load_config("configs/tiny_test.py", ["helper.kind=knowledge"])
  assert settings.judge_kwargs(cfg) is None   # the LLM judge asks the helper itself
  cfg = configlib.load_config("configs/tiny_test.py", ["judge.base_url=http://127.0.0.1:9/v1"])
  with pytest.raises(settings.SettingsError, match="config.judge.model: empty"):
    settings.judge_kwargs(cfg)


def test_usage_missing_from_the_response_counts_zero(loopback_server):
  loopback_server.script(Behavior(content="<info>x y</info>", usage=False))
  reply = _respond(OpenAIHelper(**settings.openai_kwargs(_cfg(loopback_server).helper)))
  assert (reply.prompt_tokens, reply.completion_tokens, reply.tokens) == (0, 0, 2)


def test_usage_totals_sum_over_episodes():
  replies = [[HelperReply("info", "a", prompt_tokens=10, completion_tokens=3),
              HelperReply("info", "b", prompt_tokens=12, completion_tokens=4)],
             [], [HelperReply("info", "", error="timeout")]]
  assert usage_totals(replies) == {"helper_prompt_tokens": 22, "helper_completion_tokens": 7}
  assert usage_totals([replies[0], replies[0][:1]]) == usage_totals(replies)   # one call once


# Set-up: the judge built and probed from the config -------------------------------------


def test_build_judge_asks_its_own_endpoint_and_probe_checks_it(loopback_server):
  from seekjax.run import setup
  dead = "http://127.0.0.1:9/v1"   # the discard port: connection refused
  cfg = _cfg(loopback_server, "reward.judge=llm", f"judge.base_url={dead}", "judge.model=j")
  judge = setup.build_judge(cfg, setup.build_helper(cfg.helper))
  assert (judge.backend.base_url, judge.backend.model) == (dead, "j")
  with pytest.raises(setup.RunSetupError, match=r"^config\.judge: judge at http://127\.0\.0\.1:9"
                     r"/v1 \(model 'j'\) is unreachable.*check judge\.base_url") as e:
    setup.probe_helpers(cfg)
  assert "\n" not in str(e.value)
  assert len(loopback_server.calls) == 1   # the helper was probed first, and answered


def test_probe_asks_a_shared_endpoint_once(loopback_server):
  from seekjax.run import setup
  setup.probe_helpers(_cfg(loopback_server, "reward.judge=llm", "judge.max_tokens=900"))
  assert len(loopback_server.calls) == 1 and loopback_server.calls[0].body["max_tokens"] == 1


def test_bad_system_prompt_file_is_a_setup_error(loopback_server):
  from seekjax.run import setup
  cfg = _cfg(loopback_server, "helper.system_prompt_file=/no/such/file")
  with pytest.raises(setup.RunSetupError, match="config.helper.system_prompt_file: cannot read"):
    setup.probe_helpers(cfg)


# Evaluation: usage per method, and the configured LLM judge's verdicts -------------------


def _eval_examples():
  from seekjax.tasks import make_example
  return [make_example(question="My sister Amina lives in the capital of Eritrea. Which city?",
                       answers=["Asmara"], task="world_facts", id="a#private", qtype="capital",
                       entity="ERI", popularity=6.5, private_facts=["the user's sister Amina"]),
          make_example(question="What is the capital of Peru?", answers=["Lima"],
                       task="world_facts", id="b", qtype="capital", entity="PER", popularity=6.9)]


def test_evaluation_records_usage_and_asks_the_configured_judge():
  import numpy as np
  from seekjax.eval import baselines, results as results_lib
  from seekjax.helpers import RuleLeakJudge
  from seekjax.rollout import rollout_config
  from seekjax.run import setup
  with LoopbackServer() as helper_server, LoopbackServer() as judge_server:
    helper_server.script(Behavior(content="<info>Asmara</info>", prompt_tokens=30,
                                  completion_tokens=2),
                         Behavior(content="<info>Lima</info>", prompt_tokens=20,
                                  completion_tokens=3))
    judge_server.default = Behavior(content='{"reason": "names Amina", "leakage": true}')
    cfg = _cfg(helper_server, "reward.judge=llm", f"judge.base_url={judge_server.base_url}")
    helper, judge = setup.build_helper(cfg.helper), setup.build_judge(cfg)
    examples = _eval_examples()
    ctx = baselines.EvalContext(base_model=None, policy_model=None, examples=examples,
                                helper=helper, rollout_cfg=rollout_config(), rng=0)
    try:
      runs = {"llm_only": baselines.llm_only(ctx)}
      results = results_lib.build_results(runs, examples, RuleLeakJudge(), judge, {},
                                          num_resamples=10)
    finally:
      setup.close_helpers(helper, judge)
    overall = results["methods"]["llm_only"]["overall"]
    assert (overall["helper_prompt_tokens"], overall["helper_completion_tokens"]) == (50, 5)
    assert [r["helper_prompt_tokens"] for r in results["methods"]["llm_only"]["episodes"]] \
        in ([30, 20], [20, 30])   # the pool sends both at once
    assert overall["llm_leak_rate"] == 1.0 and overall["llm_judge_errors"] == 0
    assert len(judge_server.calls) == 1 and len(helper_server.calls) == 2
    assert judge.usage()["judge_calls"] == 1   # evaluation writes it to results' meta
    assert judge_server.calls[0].body["model"] == "served"   # inherited from the helper

  # Batched rollouts: each row keeps its episode's summed usage.
  two = [HelperReply("info", "a", prompt_tokens=7, completion_tokens=1) for _ in range(2)]
  run = baselines.concat_runs([baselines.from_episodes("d", _Eps([two]), 0.0),
                               baselines.from_episodes("d", _Eps([[]]), 0.0)])
  assert run.helper_prompt_tokens.tolist() == [14, 0]
  assert run.helper_completion_tokens.tolist() == [2, 0]


class _Eps(types.SimpleNamespace):
  """A rollout's Episodes stand-in with one episode per replies list (what from_episodes reads)."""

  def __init__(self, replies):
    import numpy as np
    n = len(replies)
    super().__init__(question_index=np.arange(n), answers=["x"] * n, messages=[["m"]] * n,
                     helper_tokens=np.zeros(n), helper_errors=np.zeros(n), transcripts=[""] * n,
                     finish=["answer"] * n, refusals=[[]] * n, replies=replies)

  def __len__(self):
    return len(self.answers)


# Training: the served usage of a step's helper calls, summed into its metrics ------------


def test_a_step_records_the_served_usage(loopback_server, monkeypatch, tmp_path):
  import json
  from seekjax import train as train_lib
  from seekjax.rl import cycle
  from seekjax.rollout import driver

  def rollout(policy, questions, helper, cfg, rng, **kw):   # the tiny SLM asks once, forced
    forced = [[("<think>ask</think><message>what is it?</message>", "what is it?")]
              for _ in questions]
    return driver.rollout(policy, questions, helper, cfg, rng, forced=forced, **kw)
  monkeypatch.setattr(cycle, "rollout", rollout)
  monkeypatch.setattr(loopback_server, "default", Behavior(
      content="<info>It is Asmara.</info>", prompt_tokens=11, completion_tokens=3))
  workdir = tmp_path / "w"
  assert train_lib.main([
      "--config=configs/tiny_test.py", f"--workdir={workdir}", "--config.helper.kind=openai",
      f"--config.helper.base_url={loopback_server.base_url}", "--config.helper.model=served",
      "--config.helper.api_key_env=", "--config.helper.max_retries=0", "--config.sft.steps=0",
      "--config.rl.steps=1"]) == 0
  row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
  calls = len(loopback_server.calls) - 1   # less the start probe
  assert calls >= 2
  assert (row["helper_prompt_tokens"], row["helper_completion_tokens"]) == (11 * calls, 3 * calls)


def test_a_step_records_the_llm_judges_calls_and_tokens(loopback_server, monkeypatch, tmp_path):
  """With reward.judge=llm, a step's metrics carry the judge's own calls and served tokens
  (judge_calls, judge_prompt_tokens, judge_completion_tokens) beside the helper's."""
  import json
  from seekjax import protocol
  from seekjax import train as train_lib
  from seekjax.rl import cycle
  from seekjax.rollout import driver

  def rollout(policy, questions, helper, cfg, rng, **kw):   # the tiny SLM asks once, forced
    forced = [[("<think>ask</think><message>my sister asks: what is it?</message>",
                "my sister asks: what is it?")] for _ in questions]
    return driver.rollout(policy, questions, helper, cfg, rng, forced=forced, **kw)
  monkeypatch.setattr(cycle, "rollout", rollout)
  monkeypatch.setattr(loopback_server, "default", Behavior(
      content='<info>It is Asmara.</info> {"reason": "r", "leakage": false}', prompt_tokens=5,
      completion_tokens=2))
  workdir = tmp_path / "w"
  assert train_lib.main([
      "--config=configs/tiny_test.py", f"--workdir={workdir}", "--config.helper.kind=openai",
      f"--config.helper.base_url={loopback_server.base_url}", "--config.helper.model=served",
      "--config.helper.api_key_env=", "--config.helper.max_retries=0", "--config.sft.steps=0",
      "--config.rl.steps=1", "--config.reward.judge=llm"]) == 0
  row = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
  judged = [c for c in loopback_server.calls
            if c.body.get("messages", [{}])[0].get("content") == protocol.LEAK_JUDGE_PROMPT]
  assert judged, "the step's private episodes were not judged"
  assert (row["judge_calls"], row["judge_prompt_tokens"], row["judge_completion_tokens"]) == (
      len(judged), 5 * len(judged), 2 * len(judged))
