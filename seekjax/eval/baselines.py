"""The evaluated methods: four baselines and the learned policy, all through `sj.rollout`.

Every method answers every eval question once, greedily (temperature 0), in one batched
rollout, and returns a `MethodRun` that `metrics.score_run` scores the same way:

  slm_cot             the SLM alone: think, then <answer>; max_turns=0, so any message is
                      refused before the helper (0 messages per episode).
  llm_only            the helper gets the whole question (private details included) and its
                      reply is the answer (1 message per episode). The KnowledgeHelper
                      returns facts, not answers, so this row is scored by CONTAINMENT: EM =
                      1 when a gold alias appears in the reply as whole words; F1 = the best
                      fraction of an alias's words present in the reply.
  static_interaction  a fixed pipeline: the SLM sends the question once (a forced turn that
                      really calls the helper), reads the reply, answers; max_turns=1, so
                      any further message is refused (exactly 1 message per episode).
  static_scrubbed     the same, but the message is `scrub.scrub_question(question)`.
  cascade             slm_cot, then the SLM checks its own answer (AutoMix-style
                      self-verification, through the engine); only rows it rejects (or that
                      gave no answer) run static_interaction (0 or 1 message per episode).
                      Greedy runs are deterministic, so the cascade reuses slm_cot's and
                      static_interaction's episodes when those already ran (`ctx.cache`).
  cold_start          the RL reference weights (the SLM after the supervised cold start,
                      before RL) with the training rollout settings, greedy, messaging
                      allowed: what `dynamic` started from, through the same engine and
                      scorer, so dynamic - cold_start is what RL added.
  dynamic             the learned policy with the training rollout settings, greedy.

Baselines run the base SLM unless the caller hands them other params (`EvalContext`).
The prompts below are seekjax's own.
"""
from __future__ import annotations

import dataclasses
import resource
import time

import numpy as np

from seekjax.eval.scrub import scrub_question
from seekjax.helpers.base import usage_totals
from seekjax.rollout import rollout, rollout_config
from seekjax.rollout.pool import HelperPool
from seekjax.tasks import normalize_answer

# Kept short: every prompt is prefilled once per question, and a prompt that crosses a
# power of two doubles the prefill.
COT_SYSTEM_PROMPT = """\
Answer the question alone; nobody can help you. Think step by step inside \
<think></think>, then write only the short final answer inside <answer></answer>.
Example: <think>Eritrea is in East Africa. Its capital is Asmara.</think>\
<answer>Asmara</answer>"""

STATIC_SYSTEM_PROMPT = """\
You send the user's question once to a helper inside <message></message>; its reply \
comes inside <feedback></feedback>. Then think inside <think></think> and write only \
the short final answer inside <answer></answer>. There is no second message."""

VERIFY_SYSTEM_PROMPT = """\
Check whether the proposed answer to the question is correct. Think briefly inside \
<think></think>, then write <answer>yes</answer> if it is correct, else \
<answer>no</answer>."""

FORCED_THINK = "<think>I will ask the helper.</think>"


def verify_question(question: str, proposed: str, max_chars: int = 120) -> str:
  """The user turn of the cascade's self-verification episode (long answers are cut)."""
  return (f"Question: {question}\nProposed answer: {proposed[:max_chars]}\nIs the answer correct? "
          "Answer <answer>yes</answer> or <answer>no</answer>.")


@dataclasses.dataclass
class MethodRun:
  """One method's output on N eval questions (row i answers question i)."""

  name: str
  answers: list               # str | None per question: the text that is scored
  messages: list              # list[str] per question: what reached the helper
  helper_tokens: np.ndarray   # int32[N]
  helper_errors: np.ndarray   # int32[N]
  transcripts: list           # readable text per question
  scoring: str = "answer"     # "answer" (task score of <answer>) | "containment"
  wall_time: float = 0.0
  extra: dict = dataclasses.field(default_factory=dict)
  # int32[N] each: the usage a served helper reported (None: zeros, e.g. no server)
  helper_prompt_tokens: np.ndarray | None = None
  helper_completion_tokens: np.ndarray | None = None

  def __post_init__(self):
    for key in ("helper_prompt_tokens", "helper_completion_tokens"):
      value = getattr(self, key)
      setattr(self, key, np.zeros(len(self.answers), np.int32) if value is None
              else np.asarray(value, np.int32))

  @property
  def num_messages(self) -> np.ndarray:
    return np.array([len(m) for m in self.messages], np.int32)


@dataclasses.dataclass
class EvalContext:
  """What every method needs: models, the eval examples, the helper, greedy settings."""

  base_model: object          # the SLM for baselines
  policy_model: object        # the SLM for `dynamic` (checkpoint params, or the base)
  examples: list              # eval-split example dicts
  helper: object
  rollout_cfg: object         # the run's rollout settings, greedy, group_size 1
  rng: object                 # jax PRNGKey or int seed (unused by greedy decoding)
  batch_size: int = 0         # most questions per rollout (memory bound); 0 = all at once
  cache: dict = dataclasses.field(default_factory=dict)   # name -> MethodRun already run
  log: object = None          # progress lines (one per batch of a batched method)
  reference_model: object = None   # the SLM for `cold_start` (None: base_model)

  @property
  def questions(self) -> list[str]:
    return [e["question"] for e in self.examples]


def with_settings(cfg, **overrides):
  """A copy of a rollout ConfigDict with some fields replaced."""
  d = cfg.to_dict()
  d.update(overrides)
  return rollout_config(**d)


def from_episodes(name: str, eps, wall_time: float) -> MethodRun:
  if len(set(np.asarray(eps.question_index).tolist())) != len(eps):
    raise ValueError(f"{name}: evaluation expects one episode per question (group_size 1)")
  return MethodRun(name=name, answers=list(eps.answers), messages=[list(m) for m in eps.messages],
                   helper_tokens=np.asarray(eps.helper_tokens, np.int32),
                   helper_errors=np.asarray(eps.helper_errors, np.int32),
                   transcripts=list(eps.transcripts), wall_time=wall_time,
                   extra={"finish": list(eps.finish),
                          "refused": [len(r) for r in eps.refusals]},
                   **_usage_per_row(eps.replies))


def _usage_per_row(replies) -> dict:
  """MethodRun's usage fields from each row's list of HelperReplies."""
  rows = [usage_totals(rs) for rs in replies]
  return {k: np.array([r[k] for r in rows], np.int32)
          for k in ("helper_prompt_tokens", "helper_completion_tokens")}


def concat_runs(runs: list) -> MethodRun:
  """One MethodRun from runs over consecutive slices of the questions."""
  first = runs[0]
  extra = {k: sum((r.extra[k] for r in runs), []) for k in first.extra}
  return MethodRun(
      name=first.name, answers=sum((r.answers for r in runs), []),
      messages=sum((r.messages for r in runs), []),
      helper_tokens=np.concatenate([r.helper_tokens for r in runs]),
      helper_errors=np.concatenate([r.helper_errors for r in runs]),
      transcripts=sum((r.transcripts for r in runs), []), scoring=first.scoring,
      wall_time=sum(r.wall_time for r in runs), extra=extra,
      helper_prompt_tokens=np.concatenate([r.helper_prompt_tokens for r in runs]),
      helper_completion_tokens=np.concatenate([r.helper_completion_tokens for r in runs]))


def _timed_rollout(name, ctx, model, questions, cfg, forced=None) -> MethodRun:
  """Rollouts of at most ctx.batch_size questions each (all at once when 0)."""
  size = ctx.batch_size or len(questions)
  runs, start = [], time.perf_counter()
  for at in range(0, len(questions), size):
    t0 = time.perf_counter()
    eps = rollout(model, questions[at:at + size], ctx.helper, cfg, ctx.rng,
                  forced=None if forced is None else forced[at:at + size])
    runs.append(from_episodes(name, eps, time.perf_counter() - t0))
    done = min(at + size, len(questions))
    if ctx.log is not None and done < len(questions):
      ctx.log(f"{name}: {done}/{len(questions)} questions ({time.perf_counter() - start:.0f}s)")
  return concat_runs(runs)


def slm_cot(ctx: EvalContext) -> MethodRun:
  cfg = with_settings(ctx.rollout_cfg, max_turns=0, system_prompt=COT_SYSTEM_PROMPT)
  return _timed_rollout("slm_cot", ctx, ctx.base_model, ctx.questions, cfg)


def llm_only(ctx: EvalContext) -> MethodRun:
  """The helper answers the whole question; the reply text is scored by containment."""
  t0 = time.perf_counter()
  pool = HelperPool.from_config(ctx.helper, ctx.rollout_cfg)   # as the rollout's own pool
  try:
    for i, q in enumerate(ctx.questions):
      pool.submit(i, q, [])
    replies = [pool.wait(i) for i in range(len(ctx.questions))]
  finally:
    pool.close()
  return MethodRun(
      name="llm_only", answers=[None if r.error else r.text for r in replies],
      messages=[[q] for q in ctx.questions],
      helper_tokens=np.array([r.tokens for r in replies], np.int32),
      helper_errors=np.array([r.error is not None for r in replies], np.int32),
      transcripts=[f"<{r.kind}>{r.text}</{r.kind}>" for r in replies], scoring="containment",
      wall_time=time.perf_counter() - t0, extra={"reply_kind": [r.kind for r in replies]},
      **_usage_per_row([[r] for r in replies]))


def _static(name: str, ctx: EvalContext, rows: list[int], rewrite) -> MethodRun:
  """The fixed one-message pipeline on the given rows of the eval set."""
  questions = [ctx.questions[i] for i in rows]
  messages = [rewrite(q) for q in questions]
  forced = [[(f"{FORCED_THINK}<message>{m}</message>", m)] for m in messages]
  cfg = with_settings(ctx.rollout_cfg, max_turns=1, system_prompt=STATIC_SYSTEM_PROMPT)
  return _timed_rollout(name, ctx, ctx.base_model, questions, cfg, forced)


def static_interaction(ctx: EvalContext) -> MethodRun:
  return _static("static_interaction", ctx, list(range(len(ctx.examples))), lambda q: q)


def static_scrubbed(ctx: EvalContext) -> MethodRun:
  return _static("static_scrubbed", ctx, list(range(len(ctx.examples))), scrub_question)


def _accepted(verdict: str | None) -> bool:
  return verdict is not None and normalize_answer(verdict).split()[:1] == ["yes"]


def cascade(ctx: EvalContext) -> MethodRun:
  """SLM alone, self-verification, then the static pipeline for rejected rows only."""
  t0 = time.perf_counter()
  cot = ctx.cache.get("slm_cot") or slm_cot(ctx)
  n = len(ctx.examples)
  answered = [i for i in range(n) if cot.answers[i]]
  verdicts = [None] * n
  if answered:
    cfg = with_settings(ctx.rollout_cfg, max_turns=0, system_prompt=VERIFY_SYSTEM_PROMPT)
    checks = _timed_rollout("verify", ctx, ctx.base_model,
                            [verify_question(ctx.questions[i], cot.answers[i]) for i in answered],
                            cfg)
    for i, verdict in zip(answered, checks.answers):
      verdicts[i] = verdict
  escalated = [i for i in range(n) if not _accepted(verdicts[i])]
  static = ctx.cache.get("static_interaction")
  if static is None and escalated:
    static = _static("static_interaction", ctx, escalated, lambda q: q)
    pick = {i: k for k, i in enumerate(escalated)}
  else:
    pick = {i: i for i in escalated}
  answers, messages, transcripts = list(cot.answers), [[] for _ in range(n)], list(cot.transcripts)
  tokens, errors = np.zeros(n, np.int32), np.zeros(n, np.int32)
  prompt_tokens, completion_tokens = np.zeros(n, np.int32), np.zeros(n, np.int32)
  for i, k in pick.items():
    answers[i], messages[i], transcripts[i] = static.answers[k], static.messages[k], \
        f"{cot.transcripts[i]}\n[verify: {verdicts[i]!r}]\n{static.transcripts[k]}"
    tokens[i], errors[i] = static.helper_tokens[k], static.helper_errors[k]
    prompt_tokens[i] = static.helper_prompt_tokens[k]
    completion_tokens[i] = static.helper_completion_tokens[k]
  reused = [k for k in ("slm_cot", "static_interaction") if k in ctx.cache]
  return MethodRun(name="cascade", answers=answers, messages=messages, helper_tokens=tokens,
                   helper_errors=errors, transcripts=transcripts,
                   helper_prompt_tokens=prompt_tokens, helper_completion_tokens=completion_tokens,
                   wall_time=time.perf_counter() - t0,   # without the reused runs' time
                   extra={"verdicts": verdicts, "escalated": [i in pick for i in range(n)],
                          "reused": reused})


def cold_start(ctx: EvalContext) -> MethodRun:
  """The RL reference weights, decoding as `dynamic` does (messages allowed)."""
  model = ctx.base_model if ctx.reference_model is None else ctx.reference_model
  return _timed_rollout("cold_start", ctx, model, ctx.questions, ctx.rollout_cfg)


def dynamic(ctx: EvalContext) -> MethodRun:
  return _timed_rollout("dynamic", ctx, ctx.policy_model, ctx.questions, ctx.rollout_cfg)


METHODS = {"slm_cot": slm_cot, "llm_only": llm_only, "static_interaction": static_interaction,
           "static_scrubbed": static_scrubbed, "cascade": cascade, "cold_start": cold_start,
           "dynamic": dynamic}
DEFAULT_METHODS = ("slm_cot", "llm_only", "static_interaction", "cascade", "cold_start",
                   "dynamic")


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # Linux: KiB


def run_methods(ctx: EvalContext, names=DEFAULT_METHODS, log=None) -> dict:
  """{name: MethodRun} for each named method, in order; reuses earlier runs via ctx.cache."""
  unknown = [n for n in names if n not in METHODS]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
  out = {}
  for name in names:
    cpu = time.process_time()  # all threads: the cost on an idle machine, roughly
    run = METHODS[name](ctx)
    ctx.cache[name] = out[name] = run
    if log is not None:
      log(f"{name}: {len(run.answers)} questions in {run.wall_time:.1f}s "
          f"({time.process_time() - cpu:.0f} CPU-s, peak RSS {_peak_rss_gb():.1f} GB), "
          f"{run.num_messages.mean():.2f} messages/episode")
  return out
