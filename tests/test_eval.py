"""Evaluation: bootstrap CIs and metrics against hand-computed values, baseline message
counts on a scripted tiny model, and `python -m seekjax.evaluate` end to end."""
import json
import os

import jax
import numpy as np
import pytest

import seekjax as sj
from seekjax import compiles, configlib, evaluate as evaluate_lib
from seekjax.eval import baselines, metrics, report, results as results_lib, stats
from seekjax.eval.scrub import scrub_question
from seekjax.helpers import RuleLeakJudge
from seekjax.helpers.base import LeakVerdict
from seekjax.run import checkpoint, setup as setup_lib
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.rollout.config import cache_length
from seekjax.tasks import make_example
from tests.scripted import ScriptedHelper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")
QUESTIONS = ["What is the capital of Eritrea?", "Where is Asmara?", "Name a city in Eritrea.",
             "Which country has Asmara?"]


# ----------------------------------------------------------------------------- statistics


def test_paired_difference_interval_holds_the_known_difference_and_pairing_narrows_it():
  rng = np.random.default_rng(0)
  b = (rng.random(400) < 0.4).astype(float)
  a = b.copy()
  a[np.flatnonzero(b == 0)[:16]] = 1.0          # a = b plus 16 more right: +0.04 exactly
  paired = stats.paired_difference_ci(a, b, num_resamples=2000, seed=3)
  assert paired["mean"] == pytest.approx(0.04) and paired["n"] == 400
  assert paired["low"] <= 0.04 <= paired["high"] and paired["low"] > 0   # excludes 0
  # Unpaired, the two means' own intervals overlap: only the pairing shows the gain.
  ia, ib = stats.bootstrap_ci(a, 2000, seed=3), stats.bootstrap_ci(b, 2000, seed=3)
  assert ia["low"] < ib["high"]
  # No difference: a shuffle of the same outcomes; the interval holds 0.
  same = stats.paired_difference_ci(rng.permutation(b), b, num_resamples=2000, seed=3)
  assert same["mean"] == 0.0 and same["low"] < 0 < same["high"]
  assert stats.paired_difference_ci(a, b, 500, seed=7) == stats.paired_difference_ci(a, b, 500,
                                                                                     seed=7)
  with pytest.raises(ValueError, match="pairing needs the same questions"):
    stats.paired_difference_ci(a, b[:10])
  assert stats.paired_difference_ci([], []) is None


def test_percentile_interval_matches_hand_computed_quantiles():
  # 101 evenly spaced means 0.00..1.00: the 2.5% and 97.5% quantiles are 0.025 and 0.975.
  low, high = stats.percentile_interval(np.arange(101) / 100, confidence=0.95)
  assert low == pytest.approx(0.025) and high == pytest.approx(0.975)
  low, high = stats.percentile_interval([0.0, 1.0, 2.0, 3.0, 4.0], confidence=0.5)
  assert (low, high) == (1.0, 3.0)   # 25% and 75% of 5 points


def test_bootstrap_ci_on_binary_values_matches_binomial_quantiles():
  # Resample means of five 1s and five 0s are Binomial(10, 1/2) / 10. P(X <= 1) = 11/1024
  # < 2.5% < P(X <= 2) = 56/1024, so the 95% interval is [0.2, 0.8] (symmetric).
  ci = stats.bootstrap_ci([1] * 5 + [0] * 5, num_resamples=20000, seed=3)
  assert ci == {"mean": 0.5, "low": 0.2, "high": 0.8, "n": 10}
  assert stats.bootstrap_ci([1, 1, 1]) == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}
  assert stats.bootstrap_ci([]) is None
  a = stats.bootstrap_ci(np.arange(7) % 2, seed=5)
  assert a == stats.bootstrap_ci(np.arange(7) % 2, seed=5)   # seeded


# ----------------------------------------------------------------------------- scoring


def _examples():
  return [
      make_example(question="My sister Amina moved to the capital of Eritrea. Which city?",
                   answers=["Asmara"], task="world_facts", id="a#private", qtype="capital",
                   entity="ERI", popularity=6.5, private_facts=["the user's sister Amina moved"
                                                                " to Asmara"]),
      make_example(question="What currency does Japan use?", answers=["yen", "Japanese yen"],
                   task="world_facts", id="b", qtype="currency", entity="JPN", popularity=8.1),
      make_example(question="My uncle Bruno pays in the currency of Peru. Which one?",
                   answers=["sol"], task="world_facts", id="c#private", qtype="currency",
                   entity="PER", popularity=6.0, private_facts=["the user's uncle Bruno pays"
                                                                " in sol"]),
      make_example(question="What is the capital of Peru?", answers=["Lima"], task="world_facts",
                   id="d", qtype="capital", entity="PER", popularity=6.9),
  ]


class NameJudge:
  """Leak iff a message names Amina or Bruno."""

  def judge(self, messages, private_facts):
    return LeakVerdict(any("Amina" in m or "Bruno" in m for m in messages))


class FlakyLLMJudge:
  """An async judge: "leak" for the first case, a backend error for every other."""

  def __init__(self):
    self.calls = 0

  async def ajudge(self, messages, private_facts):
    self.calls += 1
    return LeakVerdict(True) if "Amina" in messages[0] else LeakVerdict(False, error="backend:x")


def _run(name="m", scoring="answer"):
  return baselines.MethodRun(
      name=name, answers=["Asmara", "Japanese yen", None, "Cusco"],
      messages=[["Where did Amina move?"], [], ["currency of Peru?"], ["capital of Peru?"]],
      helper_tokens=np.array([5, 0, 4, 3]), helper_errors=np.array([0, 0, 1, 0]),
      transcripts=["", "", "", ""], scoring=scoring)


def test_score_run_and_summarize_match_hand_computed_values():
  records = metrics.score_run(_run(), _examples(), NameJudge())
  assert [r["em"] for r in records] == [1.0, 1.0, 0.0, 0.0]
  assert [r["leak"] for r in records] == [True, None, False, None]  # only private examples
  assert [r["format_failure"] for r in records] == [False, False, True, False]
  assert [r["popularity"] for r in records] == ["tail", "head", "tail", "tail"]  # head >= 7
  s = metrics.summarize(records, num_resamples=200)
  o = s["overall"]
  assert (o["n"], o["n_private"], o["em"], o["leak_rate"]) == (4, 2, 0.5, 0.5)
  assert o["messages_per_episode"] == 0.75 and o["helper_tokens_per_episode"] == 3.0
  assert o["format_failure_rate"] == 0.25 and o["helper_errors"] == 1
  assert o["llm_leak_rate"] is None and o["llm_leak_rate_ci"] is None
  assert 0.0 <= o["em_ci"][0] <= 0.5 <= o["em_ci"][1] <= 1.0
  assert s["by_qtype"]["capital"]["em"] == 0.5 and s["by_qtype"]["currency"]["em"] == 0.5
  assert s["by_qtype"]["capital"]["leak_rate"] == 1.0
  assert s["by_qtype"]["currency"]["leak_rate"] == 0.0
  assert s["by_popularity"]["head"]["n"] == 1 and s["by_popularity"]["tail"]["em"] == 1 / 3
  llm = FlakyLLMJudge()
  records = metrics.score_run(_run(), _examples(), NameJudge(), llm)
  assert llm.calls == 2 and [r["llm_leak"] for r in records] == [True, None, None, None]
  o = metrics.group_stats(records)   # the failed verdict is left out, not read as "no leak"
  assert o["llm_leak_rate"] == 1.0 and o["llm_judge_errors"] == 1


def test_asking_vs_answering_split_matches_hand_computed_values():
  """feedback_has_answer reads the <feedback> of each transcript (None without a message);
  the summary splits EM by it, and results.md gets the table."""
  run = _run()
  run.transcripts = [
      "<message>Where?</message><feedback><info>The capital of Eritrea is Asmara.</info>"
      "</feedback><answer>Asmara</answer>",                        # reply had it, EM 1
      "<answer>Japanese yen</answer>",                             # no message
      "<message>x</message><feedback><info>Peru uses the sol.</info></feedback>",  # had it, EM 0
      "<message>x</message><feedback><need>Which country?</need></feedback>"
      "<answer>Cusco</answer><feedback><info>Lima is big.</info></feedback>"]   # had it (2nd), EM 0
  records = metrics.score_run(run, _examples(), NameJudge())
  assert [r["feedback_has_answer"] for r in records] == [True, None, True, True]
  o = metrics.group_stats(records)
  assert o["feedback_answer_rate"] == 0.75
  assert o["em_given_feedback_answer"] == 1 / 3 and o["em_without_feedback_answer"] == 1.0
  run.transcripts[0] = "<message>Where?</message><feedback><info>Asmarabad.</info></feedback>"
  assert metrics.score_run(run, _examples(), NameJudge())[0]["feedback_has_answer"] is False
  llm = _run(scoring="containment")        # llm_only: its transcript is the reply itself
  llm.transcripts = ["<info>Asmara</info>", "<info>yen</info>", "<info>?</info>", "<info>Lima</info>"]
  assert [r["feedback_has_answer"] for r in metrics.score_run(llm, _examples(), NameJudge())] == \
      [True, None, False, True]
  res = {"methods": {"static": {"overall": o}, "cot": {"overall": dict(o, messages_per_episode=0.0)}}}
  table = report.asking_table(res["methods"])
  assert "| static | 0.750 | 0.333 | 1.000 | 0.500 |" in table and "| cot |" not in table


def test_containment_scoring_for_llm_only():
  assert metrics.contains_answer("The capital of Eritrea is Asmara.", ["Asmara"]) == 1.0
  assert metrics.contains_answer("Asmarabad is a town.", ["Asmara"]) == 0.0
  assert metrics.contains_answer("It is Mexico City, the capital.", ["Mexico City"]) == 1.0
  assert metrics.contains_answer(None, ["x"]) == 0.0
  run = _run(scoring="containment")
  run.answers = ["Amina lives in Asmara.", "The yen.", "Peru uses the sol.", "Unknown"]
  records = metrics.score_run(run, _examples(), NameJudge())
  assert [r["em"] for r in records] == [1.0, 1.0, 1.0, 0.0]
  assert records[1]["f1"] == 1.0 and all(r["format_failure"] is None for r in records)


def test_results_schema_and_markdown_table():
  runs = {name: _run(name) for name in baselines.DEFAULT_METHODS}
  runs["llm_only"].scoring = "containment"
  meta = dict(model="m", task="world_facts", split="eval", helper="knowledge", judge="rule",
              checkpoint_step=None, baselines_on="base", seed=0, rollout={})
  res = results_lib.build_results(runs, _examples(), NameJudge(), None, meta, num_resamples=100)
  assert results_lib.schema_errors(res) == []
  json.loads(json.dumps(res))   # JSON-able
  assert res["methods"]["slm_cot"]["overall"]["em"] == 0.5
  # Containment: "Asmara" and "Japanese yen" contain an alias, None and "Cusco" do not.
  assert res["methods"]["llm_only"]["overall"]["em"] == 0.5
  md = report.render(res)
  rows = [l for l in md.splitlines() if l.startswith("| ")]
  header = rows[0]
  assert "| EM |" in header and "| messages/episode |" in header
  for name in baselines.DEFAULT_METHODS:
    assert any(r.startswith(f"| {name} |") for r in rows[1:1 + len(runs)]), name
  assert "containment" in md and "## By question type" in md and "| head |" in md
  assert "## Asking vs answering" in md
  broken = json.loads(json.dumps(res))
  del broken["methods"]["dynamic"]["overall"]["em_ci"]
  assert results_lib.schema_errors(broken) == ["dynamic.overall.em_ci missing"]


def test_scrub_removes_the_person_and_first_person_without_labels():
  q = "I sent my partner Isabel money in the currency of Mali. What currency did I send Isabel?"
  s = scrub_question(q)
  assert "Isabel" not in s and "my" not in s.split() and "I" not in s.split()
  assert "currency of Mali" in s
  facts = ["the user's partner is called Isabel", "the user's partner Isabel was sent money in "
           "the CFA franc"]
  judge = RuleLeakJudge()
  assert judge.judge([q], facts).leak and not judge.judge([s], facts).leak
  assert scrub_question("Bruno, my uncle, lives in Peru.") == "A person lives in Peru."


# ----------------------------------------------------------------------------- baselines


def chain_model(script: str):
  """A 2-layer model whose greedy output after the prompt (or any feedback) is `script`.

  Hand-set weights, no training: attention and MLP outputs are zero, so the logits depend
  on the last token only, and an untied LM head maps each script token to its successor
  ("\\n" -> first token of the script, ...). Each turn then repeats the script.
  """
  from seekjax.models.api import TINY_CONFIG, load_tokenizer
  tok = load_tokenizer()
  cfg = TINY_CONFIG.replace(tie_embeddings=False)
  model = sj.random_model(cfg, seed=0, tokenizer=tok)
  start = tok.encode_chat([{"role": "user", "content": "q"}])[-1]   # prompts and feedback end so
  ids = [start] + tok.encode(script)
  nxt = {}
  for a, b in zip(ids, ids[1:]):
    assert nxt.setdefault(a, b) == b, f"token {a} needs two successors in {script!r}"
  basis = {t: i for i, t in enumerate(dict.fromkeys(ids))}
  d = cfg.hidden_size
  embed = np.array(model.params["embed"])
  head = np.zeros((d, cfg.vocab_size), np.float32)
  for t, i in basis.items():
    embed[t] = np.eye(d, dtype=np.float32)[i]
    if t in nxt:
      head[i, nxt[t]] = 10.0
  layers = dict(model.params["layers"])
  layers["o"] = np.zeros_like(layers["o"])
  layers["down"] = np.zeros_like(layers["down"])
  params = dict(model.params, embed=embed, lm_head=head, layers=layers)
  return model.replace(params=jax.tree.map(jax.numpy.asarray, params))


def _baseline_runs(model, helper):
  examples = [make_example(question=q, answers=["Asmara"], task="world_facts", id=str(i),
                           qtype="capital", entity="ERI") for i, q in enumerate(QUESTIONS)]
  cfg = sj.rollout_config(max_turns=2, max_new_tokens=16, max_message_tokens=16,
                          temperature=0.0, max_steps_per_call=16, max_feedback_tokens=32)
  ctx = baselines.EvalContext(base_model=model, policy_model=model, examples=examples,
                              helper=helper, rollout_cfg=cfg, rng=jax.random.PRNGKey(0))
  return ctx, baselines.run_methods(ctx, ("slm_cot", "llm_only", "static_interaction",
                                          "cascade", "dynamic"))


def test_baselines_have_known_message_counts_with_a_slm_that_always_asks():
  helper = ScriptedHelper()
  ctx, runs = _baseline_runs(chain_model("<message>Eritrea</message>"), helper)
  dyn = runs["dynamic"]   # asks every turn: max_turns messages go out, the rest are refused
  assert dyn.messages == [["Eritrea", "Eritrea"]] * 4 and min(dyn.extra["refused"]) >= 1
  cot = runs["slm_cot"]   # it tries to ask, and is refused every time
  assert list(cot.num_messages) == [0] * 4 and min(cot.extra["refused"]) >= 1
  assert cot.answers == [None] * 4
  static = runs["static_interaction"]   # the forced question, then refusals
  assert static.messages == [[q] for q in QUESTIONS] and min(static.extra["refused"]) >= 1
  assert runs["llm_only"].messages == [[q] for q in QUESTIONS]
  casc = runs["cascade"]   # no answer alone -> every row escalates to the static pipeline
  assert casc.extra["escalated"] == [True] * 4 and list(casc.num_messages) == [1] * 4
  sent = [m for m, _ in helper.calls]
  assert sent.count(QUESTIONS[0]) == 2   # llm_only + the forced turn (cascade reuses static)
  assert sent.count("Eritrea") == 8      # dynamic's two messages per episode
  ctx.batch_size = 3   # two rollouts (3 + 1 questions): the same episodes
  chunked = baselines.static_interaction(ctx)
  assert chunked.messages == static.messages and chunked.answers == static.answers
  assert chunked.extra["refused"] == static.extra["refused"]


def test_baselines_answering_and_self_verifying_slms():
  ctx, runs = _baseline_runs(chain_model("<answer>Asmara</answer>"), ScriptedHelper())
  examples = ctx.examples
  cot = runs["slm_cot"]
  assert cot.answers == ["Asmara"] * 4 and list(cot.num_messages) == [0] * 4
  assert [r["em"] for r in metrics.score_run(cot, examples, RuleLeakJudge())] == [1.0] * 4
  assert list(runs["static_interaction"].num_messages) == [1] * 4
  casc = runs["cascade"]   # its "verification" answers "Asmara", not "yes": all escalate
  assert casc.extra["verdicts"] == ["Asmara"] * 4 and list(casc.num_messages) == [1] * 4
  _, runs = _baseline_runs(chain_model("<answer>yes</answer>"), ScriptedHelper())
  casc = runs["cascade"]   # verification says yes: nobody escalates, nothing is sent
  assert casc.extra["verdicts"] == ["yes"] * 4 and list(casc.num_messages) == [0] * 4
  assert casc.answers == runs["slm_cot"].answers == ["yes"] * 4


def test_methods_with_other_budgets_share_the_runs_compiled_programs():
  """slm_cot's rollouts (max_turns 0: a budget of one turn) run in the run's cache
  length: they compile nothing once `dynamic`'s shapes are compiled, and their episodes
  (the budget now a value of the state) equal those of a cache sized for them alone."""
  model = chain_model("<message>Eritrea</message>")   # asks (9 tokens), is refused, ...
  run_cfg = sj.rollout_config(max_turns=2, max_new_tokens=16, max_message_tokens=16,
                              temperature=0.7, max_steps_per_call=16, max_feedback_tokens=32,
                              prompt_width=64, system_prompt="Answer or ask.")
  rcfg = evaluate_lib.eval_rollout_config(run_cfg)
  assert rcfg.temperature == 0.0 and rcfg.group_size == 1
  assert rcfg.cache_length == cache_length([1], run_cfg) == 256   # 64 + 3 x 16 + 2 x 40
  sj.rollout(model, QUESTIONS, ScriptedHelper(), rcfg, 0)   # dynamic's programs
  # slm_cot's settings: its refused message leaves no room for feedback in 16 tokens;
  # a 6-token budget: the decode loop itself stops the rows
  for cot_cfg, ended_at in ((baselines.with_settings(rcfg, max_turns=0), 9),
                            (baselines.with_settings(rcfg, max_turns=0, max_episode_tokens=6), 6)):
    alone_cfg = baselines.with_settings(cot_cfg, cache_length=0)
    assert cache_length([1], alone_cfg) == 128
    alone = sj.rollout(model, QUESTIONS, ScriptedHelper(), alone_cfg, 0)
    before = compiles.snapshot()
    shared = sj.rollout(model, QUESTIONS, ScriptedHelper(), cot_cfg, 0)
    # nothing but the small program that ends rows whose feedback has no room left, a path
    # dynamic's episodes never took here
    assert set(compiles.since(before)[1]) <= {"jit(finish_rows)"}
    assert shared.tokens.shape[1] == 256 and alone.tokens.shape[1] == 128
    assert set(alone.finish) == {"episode_budget"}   # the budget, not the cache, ended them
    assert set(alone.lengths - alone.prompt_lengths) == {ended_at}
    for f in ("lengths", "prompt_lengths"):
      np.testing.assert_array_equal(getattr(shared, f), getattr(alone, f))
    np.testing.assert_array_equal(shared.tokens[:, :128], alone.tokens)
    np.testing.assert_array_equal(shared.loss_mask[:, :128], alone.loss_mask)
    assert shared.finish == alone.finish and shared.refusals == alone.refusals
    assert shared.transcripts == alone.transcripts and not shared.tokens[:, 128:].any()


# ----------------------------------------------------------------------------- CLI


def test_cli_end_to_end_on_tiny_config(tmp_path, capsys, monkeypatch):
  workdir = str(tmp_path / "run")
  cfg = configlib.apply_overrides(configlib.load_config(TINY), ["task.max_eval=6"])
  # A checkpoint whose policy and reference differ from the base and from each other.
  model = sj.load_model("tiny-random")
  spec = setup_lib.trainable_spec(cfg)
  trainable, _ = trainable_lib.init(spec, model.params, jax.random.PRNGKey(1))
  reference = jax.tree.map(lambda x: x * 0.5, trainable)
  trainable = jax.tree.map(lambda x: x * 0.25, trainable)
  optimizer, _ = step_lib.make_optimizer(1e-3, 10, 1, 0.0, 1.0)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(4, dict(trainable=trainable, ref_trainable=reference,
                    opt_state=optimizer.init(trainable), step=jax.numpy.asarray(4)),
            {}, checkpoint.model_fingerprint(model.config, spec), force=True)
  ckpt.close()
  rc = evaluate_lib.main([f"--config={TINY}", f"--workdir={workdir}", "--config.task.max_eval=6",
                          "--bootstrap=200"])
  assert rc == 0
  out = capsys.readouterr().out
  assert out.splitlines()[0].startswith("| method | n | EM |")
  assert "results written to" in out
  res = json.load(open(os.path.join(workdir, "eval", "results.json")))
  assert results_lib.schema_errors(res) == []
  assert list(res["methods"]) == list(baselines.DEFAULT_METHODS)
  assert res["meta"]["checkpoint_step"] == 4 and res["meta"]["split"] == "eval"
  m = {k: v["overall"] for k, v in res["methods"].items()}
  assert all(v["n"] == 6 for v in m.values())
  assert m["slm_cot"]["messages_per_episode"] == 0.0
  assert m["llm_only"]["messages_per_episode"] == 1.0
  assert m["static_interaction"]["messages_per_episode"] == 1.0
  assert 0.0 <= m["cascade"]["messages_per_episode"] <= 1.0
  assert m["llm_only"]["leak_rate"] in (None, 1.0)   # the whole question goes out
  train_ex, eval_ex = setup_lib.build_task(cfg, cfg.seed)
  ids = [e["id"] for e in res["methods"]["dynamic"]["episodes"]]
  assert ids == [e["id"] for e in eval_ex] and not set(ids) & {e["id"] for e in train_ex}
  restored = evaluate_lib.restore_policy(cfg, workdir, model)
  assert restored["step"] == 4
  for got, want in ((restored["trainable"], trainable), (restored["ref_trainable"], reference)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  md = open(os.path.join(workdir, "eval", "results.md")).read()
  assert "| dynamic |" in md and "checkpoint step 4" in md and "reference weights" in md
  lines = open(os.path.join(workdir, "eval", "episodes.jsonl")).read().splitlines()
  assert len(lines) == len(baselines.DEFAULT_METHODS) * 6
  # Paired intervals on the same questions, in the results and the printed/markdown tables.
  assert set(res["comparisons"]) == {"dynamic - cold_start", "dynamic - static_interaction"}
  diff = res["comparisons"]["dynamic - cold_start"]
  assert diff["n"] == 6 and diff["low"] <= diff["mean"] <= diff["high"]
  assert diff["mean"] == pytest.approx(m["dynamic"]["em"] - m["cold_start"]["em"])
  assert "| dynamic - cold_start | 6 |" in out and "## Paired differences" in md
  # cold_start decodes on the checkpoint's reference weights whatever --baselines_on says.
  seen = {}
  def spy(ctx):
    seen.update(reference=ctx.reference_model.params, base=ctx.base_model.params)
    return baselines.cold_start(ctx)
  monkeypatch.setitem(baselines.METHODS, "cold_start", spy)
  assert evaluate_lib.main([f"--config={TINY}", f"--workdir={workdir}", "--config.task.max_eval=6",
                            "--bootstrap=20", "--methods=cold_start", "--baselines_on=base",
                            f"--out_dir={tmp_path / 'cold_start_on_base'}"]) == 0
  def total(tree):
    return sum(float(np.abs(np.asarray(x, np.float64)).sum()) for x in jax.tree.leaves(tree))
  assert total(seen["reference"]) == pytest.approx(total(reference))   # trainable="full"
  assert total(seen["base"]) == pytest.approx(total(model.params))
  assert total(reference) != pytest.approx(total(model.params))
  # --out_dir: another evaluation of the same checkpoint leaves WORKDIR/eval as it was.
  other = str(tmp_path / "other_eval")
  assert evaluate_lib.main([f"--config={TINY}", f"--workdir={workdir}", "--config.task.max_eval=6",
                            "--bootstrap=20", "--methods=slm_cot", f"--out_dir={other}"]) == 0
  assert list(json.load(open(os.path.join(other, "results.json")))["methods"]) == ["slm_cot"]
  assert open(os.path.join(workdir, "eval", "episodes.jsonl")).read().splitlines() == lines
  assert evaluate_lib.main([f"--config={TINY}", f"--workdir={workdir}", "--methods=nope"]) == 2
  assert "unknown" in capsys.readouterr().err


def _private_strings_found(directory: str, examples) -> list[str]:
  """The private facts and spans of `examples` found (as whole words) in any file."""
  import re
  text = "\n".join(open(os.path.join(directory, n)).read() for n in os.listdir(directory))
  found = []
  for ex in examples:
    for s in ex["private_facts"] + ex["private_spans"]:
      if re.search(rf"(?<!\w){re.escape(s)}(?!\w)", text, re.I):
        found.append(s)
  return found


@pytest.mark.parametrize("redact", [True, False])
def test_transcripts_redact_private_facts_by_default(tmp_path, redact):
  """With eval.redact_private (the default), no private fact or span of an eval example
  is written anywhere under DIR/eval (questions, messages, helper replies, answers,
  transcripts); with it off, they are (the questions carry the spans, and each row its
  private_facts), so the check is not vacuous."""
  overrides = ["task.max_eval=4"] + ([] if redact else ["eval.redact_private=false"])
  cfg = configlib.apply_overrides(configlib.load_config(TINY), overrides)
  assert cfg.eval.redact_private is redact
  out = evaluate_lib.evaluate(cfg, str(tmp_path), methods=("llm_only", "static_interaction"),
                              bootstrap=20, batch=0)
  examples = [e for e in setup_lib.build_task(cfg, cfg.seed)[1]
              if e["id"] in {r["id"] for r in out["results"]["methods"]["llm_only"]["episodes"]}]
  private = [e for e in examples if e["private_facts"]]
  assert private and all(e["private_spans"] for e in private)
  outdir = str(tmp_path / "eval")
  rows = [json.loads(l) for l in open(os.path.join(outdir, "episodes.jsonl"))]
  static = [r for r in rows if r["method"] == "static_interaction"]
  found = _private_strings_found(outdir, private)
  if redact:
    assert found == [], found
    assert any("[REDACTED]" in r["question"] and "[REDACTED]" in r["messages"][0] and
               "[REDACTED]" in r["transcript"] for r in static)
    assert all(r["private_facts"] == ["[REDACTED]"] * len(r["private_facts"]) for r in rows)
  else:
    assert set(found) == {s for e in private for s in e["private_facts"] + e["private_spans"]}
    assert not any("[REDACTED]" in l for l in open(os.path.join(outdir, "episodes.jsonl")))
  # the scores do not depend on redaction (it is applied to what is written only)
  assert out["results"]["methods"]["static_interaction"]["overall"]["n"] == len(examples)
