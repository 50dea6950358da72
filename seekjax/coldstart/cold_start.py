"""The supervised cold start: (optionally) teach the SLM facts, then protocol demonstrations.

Phases, all with one optimizer (cfg.sft):
  knowledge   `sft.knowledge > 0`: `sft.knowledge_steps` steps on the taught facts alone
              (seekjax/coldstart/knowledge.py), so the SLM knows them before it sees a demo;
  demos       `sft.steps` steps on the protocol demonstrations; with taught facts, each
              demo step is followed by one fact step, so the demos do not wash the facts
              out.
The demonstrations come from `sft.demos_path` (a JSONL file, demo_store.py) when set;
otherwise they are built with the helper (demos.py, helper_demos.py) and cached in the
workdir's demos.jsonl, so a rerun of a stopped cold start does not ask for them again.
At the end, with taught facts, the share of them the SLM recalls is logged.
"""
from __future__ import annotations

import collections
import dataclasses

import jax
import numpy as np

from seekjax import distributed
from seekjax.shapes import bucket
from seekjax.run import setup, metrics as metrics_lib
from seekjax.coldstart import demo_store, demos, helper_demos, knowledge, sft
from seekjax.rl import step as step_lib
from seekjax.run.metrics import log
from seekjax.tasks.world_facts import world_fact_base


def frozen_hidden(frozen, ids: np.ndarray, model_cfg, desc: str, should_stop, chunk: int = 16):
  """top_n mode: the frozen bottom layers' output for every row (they never change)."""
  starts = range(0, len(ids), chunk)
  progress = metrics_lib.Progress(len(starts), desc=desc)
  out = []
  for n, i in enumerate(starts):
    should_stop()
    out.append(np.asarray(step_lib.bottom_hidden(frozen, ids[i:i + chunk], cfg=model_cfg)))
    progress.update(n + 1)
  return np.concatenate(out)


class _Rows:
  """Packed (ids, mask) rows, their frozen-layer output (top_n), and seeded batches."""

  def __init__(self, packed, width, spec, frozen, model_cfg, desc, should_stop, seed):
    self.ids, self.mask = sft.pack(packed, width)
    self.positions = sft.loss_positions(self.mask)   # every batch packs to this K
    self.hidden = None
    if spec.mode == "top_n":
      self.hidden = frozen_hidden(frozen, self.ids, model_cfg, f"{desc}: frozen layers",
                                  should_stop)
    self.rng = np.random.default_rng(seed)

  def batch(self, size: int):
    idx = np.sort(self.rng.choice(len(self.ids), size=min(size, len(self.ids)), replace=False))
    return self.ids[idx], self.mask[idx], None if self.hidden is None else self.hidden[idx]


def taught(cfg) -> list[str]:
  """The facts `cfg.sft.knowledge` teaches ([] at 0); only world-facts tasks have a fact base."""
  if cfg.sft.knowledge == 0:
    return []
  if not cfg.task.name.startswith("world"):
    raise setup.RunSetupError(f"config.sft.knowledge={cfg.sft.knowledge} needs a world-facts "
                              f"task (its fact base); task.name is {cfg.task.name!r}")
  try:
    return knowledge.taught_facts(world_fact_base()[0], cfg.sft.knowledge, cfg.seed)
  except ValueError as e:
    raise setup.RunSetupError(f"config.{e}") from None


def recall_rate(trainable, frozen, rows: _Rows, spec, model_cfg, chunk: int = 64) -> float:
  """The share of fact rows whose value greedy decoding reproduces (teacher-forced)."""
  hits = []
  for i in range(0, len(rows.ids), chunk):
    targets, mask = step_lib.compact_positions(rows.mask[i:i + chunk])
    hidden = None if rows.hidden is None else rows.hidden[i:i + chunk]
    lp = step_lib.reference_logprobs(trainable, frozen, rows.ids[i:i + chunk], hidden,
                                     spec_trainable=spec, cfg=model_cfg, targets=targets)
    hits.append(knowledge.recalled(np.asarray(lp), mask))
  return float(np.concatenate(hits).mean())


def ask_settings(cfg, tokenizer) -> helper_demos.AskSettings:
  """How demos without a descriptor are asked: with `sft.answer_request` appended for an
  LLM helper (the knowledge helper's reply is itself the answer's source), within the
  rollout's message limits."""
  request = "" if cfg.helper.kind == "knowledge" else cfg.sft.answer_request
  return helper_demos.AskSettings(
      answer_request=request, max_turns=cfg.rollout.max_turns,
      max_message_tokens=cfg.rollout.max_message_tokens,
      count_tokens=lambda text: len(tokenizer.encode_text(text)))


# The keys the built demos depend on; a cache made under other values is not reused.
DEMO_KEYS = {
    "seed": None, "model": ("path",), "task": None,
    "helper": ("kind", "coverage", "noise", "top_k", "style", "model", "max_tokens",
               "temperature", "top_p", "extra_body_json", "system_prompt",
               "system_prompt_file"),
    "sft": ("need_fraction", "knowledge", "decompose", "answer_request"),
    "rollout": ("max_turns", "max_message_tokens"),
}


def demo_settings(cfg) -> dict:
  """The config values the built demos depend on (`DEMO_KEYS`), for the cache."""
  d = cfg.to_dict()
  return {k: d[k] if keys is None else {key: d[k].get(key) for key in keys}
          for k, keys in DEMO_KEYS.items()}


def from_process_0(demo_list: list[sft.Demo], dropped: collections.Counter):
  """Process 0's built demos and drop counts, on every process (identity on one).

  Process 0 alone asks the helper, so each example is asked once, not once per host,
  and every process trains on the same demos: the SFT batch is one SPMD input, which
  replies that differ across hosts (sampling, a failed call) would make disagree.
  """
  if not distributed.multiprocess():
    return demo_list, dropped
  mine = {"demos": [dataclasses.asdict(d) for d in demo_list], "dropped": dict(dropped)}
  first = distributed.gather_json(mine if jax.process_index() == 0 else None)[0]
  return [sft.Demo(**d) for d in first["demos"]], collections.Counter(first["dropped"])


def demonstrations(cfg, examples, helper, tokenizer, known=frozenset(), workdir=None,
                   should_stop=None) -> list[sft.Demo]:
  """The cold start's demonstrations (module docstring): at most `sft.num_demos`, from
  `sft.demos_path` or built from `examples` with the helper; one log line counts those
  dropped. Raises RunSetupError when the file cannot be read or no demo remains."""
  s = cfg.sft
  if s.demos_path:
    try:
      demo_list, dropped = demo_store.load_demos(s.demos_path)
    except demo_store.DemoFileError as e:
      raise setup.RunSetupError(f"config.sft.demos_path: {e}") from None
    where = f"sft.demos_path ({s.demos_path})"
  else:
    cache = None if workdir is None else demo_store.DemoCache(
        workdir, demo_settings(cfg), writer=jax.process_index() == 0, log=log)
    cached = 0 if cache is None else sum(ex["id"] in cache.outcomes for ex in examples)
    log(f"cold start: building demonstrations from {len(examples)} examples with the "
        f"{cfg.helper.kind} helper" + (f" ({len(known)} answered from taught facts)"
                                       if known else "")
        + (f"; {cached} already in {cache.path}" if cached else ""))
    demo_list, dropped = [], collections.Counter()
    if jax.process_index() == 0:
      demo_list, dropped = demos.build_demos(
          examples, helper, seed=cfg.seed, need_fraction=s.need_fraction, known=known,
          decompose=s.decompose, ask=ask_settings(cfg, tokenizer), cache=cache,
          should_stop=should_stop)
    demo_list, dropped = from_process_0(demo_list, dropped)
    where = f"{len(demo_list) + sum(dropped.values())} candidates"
  if dropped:
    log(f"cold start: dropped {sum(dropped.values())} of {where}: "
        + demo_store.count_line(dropped))
  if not demo_list:
    raise setup.RunSetupError(
        f"cold start: no demonstration could be built from {where}"
        + (f" ({demo_store.count_line(dropped)})" if dropped else "")
        + ("; its rows are described in seekjax/coldstart/demo_store.py" if s.demos_path else
           "; check the helper's replies, or give sft.demos_path, or set sft.steps=0"))
  demo_list = demo_list[: s.num_demos]
  if s.restate_reply:
    demo_list = [demos.restate_reply(d) for d in demo_list]
  return demo_list


def cold_start(cfg, model, spec, trainable, frozen, train_examples, helper,
               should_stop=lambda: None, workdir=None):
  """Supervised cold start (module docstring). Returns the new trainable params.

  should_stop: called before each step; it raises to abandon the cold start (SIGTERM).
  workdir: where the built demonstrations are cached (None: not cached).
  """
  s = cfg.sft
  facts = taught(cfg)
  if s.steps <= 0 and not facts:
    return trainable
  tok = model.tokenizer
  demo_list = []
  if s.steps > 0:
    examples = train_examples[: s.num_demos * 2]
    known = knowledge.known_examples(examples, facts)
    demo_list = demonstrations(cfg, examples, helper, tok, known, workdir, should_stop)
  should_stop()
  plan = ["fact"] * (s.knowledge_steps if facts else 0)
  plan += [kind for _ in range(max(s.steps, 0)) for kind in (("demo", "fact") if facts else ("demo",))]
  optimizer, _ = step_lib.make_optimizer(s.lr, len(plan), min(5, len(plan) // 4), 0.0,
                                         cfg.optim.clip_norm)
  opt_state = optimizer.init(trainable)
  sft_step = sft.make_sft_step(spec, model.config, optimizer)
  fact_rows = demo_rows = None
  if facts:
    packed = [knowledge.fact_ids(tok, f) for f in facts]
    fact_rows = _Rows(packed, bucket(max(len(p[0]) for p in packed), 16), spec, frozen,
                      model.config, "knowledge", should_stop, cfg.seed + 1)
    log(f"knowledge: teaching {len(facts)} facts (sft.knowledge={s.knowledge}), "
        f"{s.knowledge_steps} steps, then one per demo step")
  if s.steps > 0:
    packed = [sft.demo_ids(tok, d, system=cfg.rollout.get("system_prompt"),
                           max_feedback_tokens=cfg.rollout.max_feedback_tokens) for d in demo_list]
    demo_rows = _Rows(packed, bucket(max(len(p[0]) for p in packed), 64), spec, frozen,
                      model.config, "cold start", should_stop, cfg.seed)
    log(f"cold start: {len(demo_list)} demonstrations, {s.steps} steps")
  progress = metrics_lib.Progress(len(plan), desc="cold start")
  losses = {"fact": float("nan"), "demo": float("nan")}
  for i, kind in enumerate(plan):
    should_stop()
    rows, size = (fact_rows, s.knowledge_batch) if kind == "fact" else (demo_rows, s.batch_size)
    trainable, opt_state, loss = sft_step(trainable, frozen, opt_state, *rows.batch(size),
                                          positions=rows.positions)
    losses[kind] = float(loss)
    if i % 10 == 0 or i == len(plan) - 1:
      progress.update(i + 1, **{f"{k}_loss": v for k, v in losses.items() if v == v})
  if facts:
    rate = recall_rate(trainable, frozen, fact_rows, spec, model.config)
    log(f"knowledge: the SLM recalls {rate:.1%} of the {len(facts)} taught facts "
        "(teacher-forced: every value token has p > 0.5)")
  return trainable
