"""Cold-start demonstrations for every task: from the helper's own replies (QA files,
reasoning-gym), kept only when gold; from a JSONL file; cached in the workdir."""
import asyncio
import dataclasses
import json
import os
import pathlib
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback_server import loopback_server, loopback_server_module  # noqa: E402,F401
from seekjax import configlib, protocol  # noqa: E402
from seekjax.coldstart import cold_start as cold_start_lib  # noqa: E402
from seekjax.coldstart import demo_store, demos, helper_demos  # noqa: E402
from seekjax.helpers.base import Helper, HelperReply  # noqa: E402
from seekjax.run import setup  # noqa: E402
from seekjax.tasks import TemplatePrivacySynthesizer, read_qa, world_facts_examples  # noqa: E402
from test_tasks_readers import HOTPOT_ROW  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
ANSWERS = {f"Which code word did agent {n} use?": f"Falcon{n}" for n in range(16)}


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


def hotpot_file(tmp_path) -> str:
  """A HotpotQA-layout file of 16 questions, one entity each."""
  rows = [dict(HOTPOT_ROW, _id=f"q{n}", question=q, answer=a, type="bridge",
               supporting_facts=[[f"Agent {n}", 0]],
               context=[[f"Agent {n}", [f"Agent {n} used the code word {a}."]]])
          for n, (q, a) in enumerate(ANSWERS.items())]
  path = tmp_path / "hotpot_train.json"
  path.write_text(json.dumps(rows))
  return str(path)


def answer_from_request(request: dict, wrong=()) -> str:
  """The loopback server's reply: the answer to the question in the last message ("Answer:"
  line), a wrong one for questions in `wrong`, a <need> for a message with no question."""
  text = request["messages"][-1]["content"]
  question = next((q for q in ANSWERS if q in text), None)
  if question is None:
    return "<think>No question given.</think><need>Which question do you mean?</need>"
  answer = ANSWERS[question] + ("x" if question in wrong else "")
  return f"<think>I recall it.</think><info>The agent used {answer}.\nAnswer: {answer}</info>"


class WordTokenizer:
  def encode_text(self, text):
    return text.split()


class ScriptedHelper(Helper):
  """Replies with `reply(message, history)`; records every message."""

  def __init__(self, reply):
    self.reply, self.calls = reply, []

  async def respond(self, message, history):
    self.calls.append(message)
    out = self.reply(message, history)
    return out if isinstance(out, HelperReply) else HelperReply("info", out)


def _ask(**kw):
  return helper_demos.AskSettings(**kw)


def _answer_turn(demo):
  return protocol.parse_slm_turn(demo.turns[-1]).text


# ----------------------------------------------------------------------------- file tasks


def test_hotpotqa_cold_starts_with_an_openai_helper(loopback_server, tmp_path, capsys):
  """The paper path's blocker: a HotpotQA file with an OpenAI-compatible helper cold-starts
  (it stopped at "no demonstration could be built"). Wrong replies are dropped and counted,
  kept demos answer gold, and the demos are cached in the workdir."""
  wrong = set(list(ANSWERS)[:4])
  loopback_server.responder = lambda req: answer_from_request(req, wrong)
  workdir = str(tmp_path / "run")
  cfg = _cfg("task.name=hotpotqa", f"task.path={hotpot_file(tmp_path)}", "task.max_eval=2",
             "helper.kind=openai", f"helper.base_url={loopback_server.base_url}",
             "helper.model=served", "helper.api_key_env=", "helper.max_retries=0",
             "sft.need_fraction=0.5", "rollout.max_turns=2", "rl.steps=0", "sft.steps=1")
  from seekjax.train import train
  out = train(cfg, workdir)
  assert out["stopped"] is None
  err = capsys.readouterr().err
  rows = [json.loads(l) for l in open(os.path.join(workdir, "demos.jsonl"))]
  assert rows[0] == {"demos_for": json.loads(json.dumps(cold_start_lib.demo_settings(cfg)))}
  kept = [r for r in rows[1:] if "turns" in r]
  dropped = [r for r in rows[1:] if "dropped" in r]
  train_ids = {r["id"] for r in rows[1:]}
  n_wrong = sum(f"q{n}" in train_ids for n, q in enumerate(ANSWERS) if q in wrong)
  assert n_wrong > 0 and len(dropped) == n_wrong and len(kept) == len(train_ids) - n_wrong
  assert {r["dropped"] for r in dropped} == {helper_demos.DROP_NOT_GOLD}
  assert (f"dropped {n_wrong} of {len(train_ids)} candidates: "
          f"{helper_demos.DROP_NOT_GOLD}: {n_wrong}") in err
  assert any(len(r["turns"]) == 3 for r in kept)   # a <need> exchange happened
  for r in kept:
    demo = demo_store.row_to_demo(r)
    assert _answer_turn(demo) == ANSWERS[demo.question]
    message = protocol.parse_slm_turn(demo.turns[-2]).text
    assert message == f"{demo.question} {helper_demos.ANSWER_REQUEST}"
    assert demo.feedbacks[-1].startswith("<feedback><info>The agent used")
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["0"]


def test_private_examples_ask_the_public_question_only():
  """A private variant is asked through its public source question; one without a safe
  message is dropped, never sent."""
  (public,) = [e for e in read_qa_rows() if e["id"] == "q1"]
  private = TemplatePrivacySynthesizer(0).synthesize_one(public)
  helper = ScriptedHelper(lambda m, h: f"Answer: {public['answers'][0]}")
  demo, reason = asyncio.run(helper_demos.areply_demo(private, helper, _ask(answer_request="")))
  assert reason is None and helper.calls == [public["question"]]
  assert demo.question == private["question"] and _answer_turn(demo) == public["answers"][0]
  assert not any(s in helper.calls[0] for s in private["private_spans"])
  bare = dict(private, meta={})   # no source question: nothing privacy-safe to send
  assert asyncio.run(helper_demos.areply_demo(bare, helper, _ask())) == (
      None, helper_demos.DROP_PRIVATE)
  assert len(helper.calls) == 1


def read_qa_rows():
  """The fixture's examples, read through the HotpotQA reader."""
  with tempfile.TemporaryDirectory() as d:
    return read_qa(hotpot_file(pathlib.Path(d)), "hotpotqa")


def test_long_messages_and_need_limits_follow_the_rollout():
  """A demo never shows a message the rollout would refuse, nor more messages than
  rollout.max_turns."""
  (ex,) = [e for e in read_qa_rows() if e["id"] == "q2"]
  helper = ScriptedHelper(lambda m, h: HelperReply("need", "Which?") if "code word" not in m
                          else HelperReply("info", "Falcon2"))
  short = _ask(answer_request="", max_message_tokens=3, count_tokens=len)
  assert asyncio.run(helper_demos.areply_demo(ex, helper, short)) == (
      None, helper_demos.DROP_TOO_LONG)
  assert helper.calls == []
  one_turn = _ask(answer_request="", max_turns=1)
  demo, _ = asyncio.run(helper_demos.areply_demo(ex, helper, one_turn, need_exchange=True))
  assert len(demo.turns) == 2 and helper.calls == [ex["question"]]
  demo, _ = asyncio.run(helper_demos.areply_demo(ex, helper, _ask(answer_request=""),
                                                 need_exchange=True))
  assert len(demo.turns) == 3 and demo.feedback_kinds == ["need", "info"]
  assert demo.feedbacks[0] == "<feedback><need>Which?</need></feedback>"


@pytest.mark.parametrize("reply, answer", [
    ("It was Falcon2.\nAnswer: **Falcon2**.", "Falcon2"),
    ("<answer>Falcon2</answer>", "Falcon2"),
    ("Falcon2", "Falcon2"),                                          # a short reply is the answer
    ("The agent, according to the files kept at the archive, used the word Falcon2.", "Falcon2"),
    ("Falcon2 is close, but Answer: Eagle", None),                   # the helper's answer rules
    ("Answer: Falcon", None),
])
def test_answer_read_from_the_reply(reply, answer):
  (ex,) = [e for e in read_qa_rows() if e["id"] == "q2"]
  assert helper_demos.reply_answer(reply, ex) == answer


# ----------------------------------------------------------------------------- reasoning-gym


def test_reasoning_gym_demos_keep_only_what_its_scorer_grades_gold(capsys):
  """reasoning-gym examples, a scripted helper right on half of them: those demos are kept
  (graded by the generator's own scorer), the rest dropped and counted in one line."""
  from seekjax.tasks import reasoning_gym_examples
  examples = reasoning_gym_examples("basic_arithmetic", 8, seed=0)
  by_question = {e["question"]: e for e in examples}
  right = {e["id"] for e in examples[::2]}

  def reply(message, history):
    ex = next(e for q, e in by_question.items() if q in message)
    answer = ex["answers"][0] if ex["id"] in right else ex["answers"][0] + "7"
    return f"Let me compute.\nAnswer: {answer}"
  helper = ScriptedHelper(reply)
  cfg = _cfg("task.name=reasoning_gym", "helper.kind=local_lm", "rollout.max_message_tokens=400")
  kept = cold_start_lib.demonstrations(cfg, examples, helper, WordTokenizer())
  assert [d.question for d in kept] == [e["question"] for e in examples if e["id"] in right]
  for demo in kept:
    assert _answer_turn(demo) == by_question[demo.question]["answers"][0]
  assert f"dropped 4 of 8 candidates: {helper_demos.DROP_NOT_GOLD}: 4" in capsys.readouterr().err


def test_no_demo_at_all_is_one_line_naming_the_reasons():
  from seekjax.tasks import reasoning_gym_examples
  examples = reasoning_gym_examples("basic_arithmetic", 3, seed=0)
  helper = ScriptedHelper(lambda m, h: "Answer: -1.5e9")
  cfg = _cfg("task.name=reasoning_gym", "helper.kind=local_lm", "rollout.max_message_tokens=400")
  with pytest.raises(setup.RunSetupError,
                     match=r"^cold start: no demonstration could be built from 3 candidates "
                           r"\(answer not gold: 3\); .*sft.demos_path"):
    cold_start_lib.demonstrations(cfg, examples, helper, WordTokenizer())


def test_world_facts_demos_keep_their_descriptor_messages():
  """World-facts examples still get the descriptor patterns, never the generic ask."""
  examples = world_facts_examples(0)[:40]
  helper = setup.build_helper(_cfg().helper)
  built, dropped = demos.build_demos(examples, helper, seed=0, need_fraction=0.3,
                                     ask=_ask())
  assert len(built) == 40 - sum(dropped.values()) > 20
  messages = [protocol.parse_slm_turn(t).text for d in built for t in d.turns[:-1]]
  assert messages and all(m.startswith(("What is ", "I need to know ")) for m in messages)
  assert set(dropped) <= {helper_demos.DROP_DESCRIPTOR}


# ----------------------------------------------------------------------------- the JSONL file


GOOD_ROWS = [
    {"question": "Capital of Eritrea?",
     "turns": ["<think>I ask.</think><message>What is the capital of Eritrea?</message>",
               "<think>Asmara.</think><answer>Asmara</answer>"],
     "feedbacks": ["<feedback><info>The capital of Eritrea is Asmara.</info></feedback>"]},
    {"question": "2+2?", "turns": ["<think>Easy.</think><answer>4</answer>"], "feedbacks": []},
    {"question": "Capital of Peru?",   # an evaluation transcript, end-of-text token included
     "transcript": "<think>I ask.</think><message>Capital?</message><feedback><need>Of which "
                   "country?</need></feedback>\n<think>Peru.</think><message>Peru's capital?"
                   "</message><feedback><info>Lima</info></feedback>\n<think>Lima.</think>"
                   "<answer>Lima</answer><|im_end|>"},
    {"question": "Capital of Chad?",   # short feedback form, a tag-like body sanitised
     "turns": ["<message>Chad capital?</message>", "<answer>N'Djamena</answer>"],
     "feedbacks": ["<info>N'Djamena <b>city</b></info>"]},
]
BAD_ROWS = [
    ("not json at all", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"question": "", "turns": ["<answer>x</answer>"]}), "question missing or empty"),
    (json.dumps({"question": "q", "turns": ["<think>no answer</think>"]}),
     "the last turn must be a non-empty <answer>"),
    (json.dumps({"question": "q", "turns": ["<message>m</message>", "<answer>a</answer>"],
                 "feedbacks": []}), "needs exactly one feedback between consecutive turns"),
    (json.dumps({"question": "q", "turns": ["<message>m</message> and more",
                                            "<answer>a</answer>"],
                 "feedbacks": ["<info>f</info>"]}), "text after </message>"),
    (json.dumps({"question": "q", "turns": ["<message>m</message>", "<answer>a</answer>"],
                 "feedbacks": ["just text"]}), "a feedback must be"),
]


def test_demos_file_loads_good_rows_and_counts_bad_ones(tmp_path, capsys):
  path = tmp_path / "my_demos.jsonl"
  lines = [json.dumps(r) for r in GOOD_ROWS] + [""] + [line for line, _ in BAD_ROWS]
  path.write_text("\n".join(lines) + "\n")
  loaded, dropped = demo_store.load_demos(str(path))
  assert [d.question for d in loaded] == [r["question"] for r in GOOD_ROWS]
  assert sum(dropped.values()) == len(BAD_ROWS)
  for _, reason in BAD_ROWS:
    assert any(k.startswith(reason) for k in dropped), reason
  peru, chad = loaded[2], loaded[3]
  assert peru.turns[-1] == "<think>Lima.</think><answer>Lima</answer>"
  assert peru.feedback_kinds == ["need", "info"] and len(peru.turns) == 3
  assert chad.feedbacks == ["<feedback><info>N'Djamena \u2039b\u203acity\u2039/b\u203a</info>"
                            "</feedback>"]
  # the cold start takes them instead of asking the helper, and says what it dropped
  helper = ScriptedHelper(lambda m, h: "never asked")
  cfg = _cfg(f"sft.demos_path={path}", "sft.num_demos=3")
  got = cold_start_lib.demonstrations(cfg, [], helper, WordTokenizer())
  assert [d.question for d in got] == [r["question"] for r in GOOD_ROWS[:3]]
  assert helper.calls == []
  assert f"dropped {len(BAD_ROWS)} of sft.demos_path ({path}):" in capsys.readouterr().err


def test_demos_file_missing_or_unreadable_is_one_line(tmp_path):
  missing = tmp_path / "nope.jsonl"
  cfg = _cfg(f"sft.demos_path={missing}")
  with pytest.raises(setup.RunSetupError, match=r"^config.sft.demos_path: .* is not a file$"):
    setup.check_demos_path(cfg)
  with pytest.raises(setup.RunSetupError, match=r"^config.sft.demos_path: .*nope.jsonl does "
                                                r"not exist$"):
    cold_start_lib.demonstrations(cfg, [], None, WordTokenizer())
  cfg = _cfg(f"sft.demos_path={tmp_path}")   # a directory
  with pytest.raises(setup.RunSetupError, match=r"^config.sft.demos_path: .*unreadable"):
    cold_start_lib.demonstrations(cfg, [], None, WordTokenizer())
  empty = tmp_path / "bad.jsonl"
  empty.write_text("{}\n")
  cfg = _cfg(f"sft.demos_path={empty}")
  with pytest.raises(setup.RunSetupError, match=r"no demonstration could be built from "
                                                r"sft.demos_path .*\(question missing or empty: 1\); its rows"):
    cold_start_lib.demonstrations(cfg, [], None, WordTokenizer())
  setup.check_demos_path(_cfg(f"sft.demos_path={missing}", "sft.steps=0"))   # not used: fine


# ----------------------------------------------------------------------------- the cache


def test_a_rerun_takes_its_demos_from_the_workdir_cache(tmp_path):
  """The second cold start in a workdir asks the helper nothing and gets the same demos; a
  partly written cache is completed (only the missing examples are asked); a helper error
  is retried; a cache made under other settings is rebuilt."""
  examples = read_qa_rows()
  workdir = str(tmp_path / "w")
  failing = {"q3"}

  def reply(message, history):
    q = next((q for q in ANSWERS if q in message), None)
    if q is None:
      return HelperReply("need", "Which question?")
    if f"q{list(ANSWERS).index(q)}" in failing:
      return HelperReply("info", protocol.HELPER_UNAVAILABLE_TEXT, error="timeout")
    return "Answer: wrong" if q.endswith("agent 1 use?") else f"Answer: {ANSWERS[q]}"
  cfg = _cfg("task.name=hotpotqa", "helper.kind=openai", "sft.need_fraction=0.5",
             "rollout.max_turns=2", "rollout.max_message_tokens=100", "sft.num_demos=32")
  first = ScriptedHelper(reply)
  built = cold_start_lib.demonstrations(cfg, examples, first, WordTokenizer(), workdir=workdir)
  assert len(built) == len(examples) - 2   # q1 wrong, q3 failed
  path = os.path.join(workdir, "demos.jsonl")
  rows = open(path).read().splitlines()
  assert len(rows) == 1 + len(examples) - 1   # the header; every example but the failed one
  failing.clear()
  second = ScriptedHelper(reply)
  again = cold_start_lib.demonstrations(cfg, examples, second, WordTokenizer(), workdir=workdir)
  q3 = list(ANSWERS)[3]
  assert second.calls and all(q3 in m or m == helper_demos.NEED_OPENER for m in second.calls)
  assert len(again) == len(built) + 1
  third = ScriptedHelper(reply)
  assert [vars(d) for d in cold_start_lib.demonstrations(
      cfg, examples, third, WordTokenizer(), workdir=workdir)] == [vars(d) for d in again]
  assert third.calls == []
  # a cache cut short (a crash between writes) is completed, asking only for the rest
  lines = open(path).read().splitlines()
  open(path, "w").write("\n".join(lines[:6]) + "\n")
  fourth = ScriptedHelper(reply)
  rebuilt = cold_start_lib.demonstrations(cfg, examples, fourth, WordTokenizer(), workdir=workdir)
  assert [vars(d) for d in rebuilt] == [vars(d) for d in again]
  asked = {q for q in ANSWERS if any(q in m for m in fourth.calls)}
  assert asked == {e["question"] for e in examples} - {
      next(e["question"] for e in examples if e["id"] == json.loads(l)["id"]) for l in lines[1:6]}
  # other settings: the cache is not reused
  other = ScriptedHelper(reply)
  cold_start_lib.demonstrations(_cfg("task.name=hotpotqa", "helper.kind=openai",
                                     "sft.need_fraction=0.0", "rollout.max_message_tokens=100"),
                                examples, other, WordTokenizer(), workdir=workdir)
  assert len(other.calls) == len(examples)


def test_answer_request_default_is_the_code_default():
  assert configlib.load_config(TINY).sft.answer_request == helper_demos.ANSWER_REQUEST


def test_a_stopped_cold_start_keeps_the_demos_it_paid_for(tmp_path):
  """A stop signal while helper calls are in flight: the finished examples are in the
  cache, and the rerun asks only for the others."""
  from seekjax.run.signals import Stopped
  examples = read_qa_rows()[:8]
  slow = {e["question"] for e in examples[4:]}

  class Slow(ScriptedHelper):
    async def respond(self, message, history):
      if message.split(" End your")[0] in slow and self.stall:
        await asyncio.sleep(30)
      return await super().respond(message, history)
  helper = Slow(lambda m, h: f"Answer: {next(a for q, a in ANSWERS.items() if q in m)}")
  helper.stall = True
  workdir = str(tmp_path / "w")
  path = os.path.join(workdir, "demos.jsonl")

  def should_stop():
    if os.path.exists(path) and len(open(path).read().splitlines()) == 1 + 4:
      raise Stopped("cold start")
  cfg = _cfg("task.name=hotpotqa", "helper.kind=openai", "sft.need_fraction=0.0",
             "rollout.max_message_tokens=100")
  with pytest.raises(Stopped):
    cold_start_lib.demonstrations(cfg, examples, helper, WordTokenizer(), workdir=workdir,
                                  should_stop=should_stop)
  assert {json.loads(l)["question"] for l in open(path).read().splitlines()[1:]} == {
      e["question"] for e in examples[:4]}
  helper.stall, helper.calls = False, []
  got = cold_start_lib.demonstrations(cfg, examples, helper, WordTokenizer(), workdir=workdir)
  assert [d.question for d in got] == [e["question"] for e in examples]
  assert {c.split(" End your")[0] for c in helper.calls} == slow


# ----------------------------------------------------------------------------- restating


def test_restate_reply_quotes_the_sentence_that_holds_the_answer():
  demo = demos.Demo(
      "My aunt owes money in the currency of Wallis and Futuna. Which currency?",
      ["<think>I ask.</think><message>What is the currency of Wallis and Futuna?</message>",
       "<think>The helper's information answers it.</think><answer>CFP franc</answer>"],
      ["<feedback><info>The capital of Wallis and Futuna is Mata-Utu. The currency of "
       "Wallis and Futuna is the CFP franc (XPF). Its region is Oceania.</info></feedback>"],
      ["info"])
  got = demos.restate_reply(demo)
  assert got.turns[0] == demo.turns[0] and got.feedbacks == demo.feedbacks
  assert got.turns[-1] == ("<think>The helper says: The currency of Wallis and Futuna is the "
                           "CFP franc (XPF).</think><answer>CFP franc</answer>")
  assert demo_store.demo_errors(got) is None
  # a word inside another word is not the answer ("Asia" in "Eurasian"), case folds
  assert demos.answer_sentence("<feedback><info>Eurasian plate. It lies in ASIA.</info>"
                               "</feedback>", "Asia") == "It lies in ASIA."
  # unchanged: an answer without asking; a reply no single sentence of which holds it
  alone = demos.Demo("What is 2+2?", ["<think>I know.</think><answer>4</answer>"], [])
  assert demos.restate_reply(alone) is alone
  split = dataclasses.replace(demo, feedbacks=["<feedback><info>It is the CFP. Franc."
                                               "</info></feedback>"])
  assert demos.restate_reply(split) is split


def test_restate_reply_is_a_config_switch_on_the_cold_starts_demos(tmp_path):
  row = {"question": "Capital of Peru?", "turns": [
      "<think>I ask.</think><message>What is the capital of Peru?</message>",
      "<think>Fixed.</think><answer>Lima</answer>"],
         "feedbacks": ["<feedback><info>Peru is in South America. Its capital is Lima."
                       "</info></feedback>"]}
  path = tmp_path / "d.jsonl"
  path.write_text(json.dumps(row) + "\n")
  plain = cold_start_lib.demonstrations(
      _cfg(f"sft.demos_path={path}", "sft.restate_reply=false"), [], None, WordTokenizer())
  assert plain[0].turns[-1] == "<think>Fixed.</think><answer>Lima</answer>"
  quoted = cold_start_lib.demonstrations(
      _cfg(f"sft.demos_path={path}", "sft.restate_reply=true"), [], None, WordTokenizer())
  assert quoted[0].turns[-1] == ("<think>The helper says: Its capital is Lima.</think>"
                                 "<answer>Lima</answer>")
