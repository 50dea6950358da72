"""SLM knowledge (sft.knowledge): which facts are taught, how, and that teaching works."""
import os

import jax
import numpy as np
import pytest

from seekjax import configlib
from seekjax.run import setup as setup_lib
from seekjax.coldstart import demos, knowledge
from seekjax.coldstart import cold_start as cold_start_lib
from seekjax.tasks.world_facts import is_count_fact, world_fact_base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_test.py")


def _cfg(*overrides):
  return configlib.apply_overrides(configlib.load_config(TINY), list(overrides))


@pytest.fixture(scope="module")
def facts():
  return world_fact_base()[0]


def test_taught_facts_are_named_nested_and_seeded(facts):
  named = [f for f in facts if not is_count_fact(f)]
  assert 900 < len(named) < len(facts)
  half = knowledge.taught_facts(facts, 0.5, 0)
  quarter = knowledge.taught_facts(facts, 0.25, 0)
  assert len(half) == round(0.5 * len(named)) and len(quarter) == round(0.25 * len(named))
  assert set(quarter) <= set(half) and not any(is_count_fact(f) for f in half)
  assert knowledge.taught_facts(facts, 0.5, 1) != half
  assert knowledge.taught_facts(facts, 0.0, 0) == []
  assert knowledge.taught_facts(facts, 1.0, 0) == named
  with pytest.raises(ValueError, match="sft.knowledge"):
    knowledge.taught_facts(facts, 1.5, 0)


@pytest.mark.parametrize("fact, value", [
    ("The capital of Eritrea is Asmara.", "Asmara."),
    ("The currency of Japan is the Japanese yen (JPY).", "the Japanese yen (JPY)."),
    ("The official languages of Belgium are Dutch, French and German.", "Dutch, French and German."),
    ("Chile is in the world region Americas (Latin America and the Caribbean, South America).",
     "Americas (Latin America and the Caribbean, South America)."),
    ("France shares land borders with Spain and Italy.", "Spain and Italy."),
])
def test_value_start(fact, value):
  assert fact[knowledge.value_start(fact):] == value


def test_fact_ids_mask_the_value_only(facts):
  from seekjax.models.api import load_tokenizer
  tok = load_tokenizer()
  for fact in knowledge.taught_facts(facts, 1.0, 0):   # every named fact has a value
    ids, mask = knowledge.fact_ids(tok, fact)
    value = fact[knowledge.value_start(fact):]
    masked = tok.decode([int(i) for i, m in zip(ids, mask) if m])
    assert 0 < mask.sum() <= knowledge.MAX_VALUE_TOKENS
    assert masked.strip() and value.startswith(masked.strip())
    assert tok.decode(list(ids)) == fact[:knowledge.value_start(fact)] + masked.strip()
    assert mask[0] == 0 and list(mask[-mask.sum():]) == [1] * mask.sum()   # the value ends the row
    if mask.sum() < knowledge.MAX_VALUE_TOKENS:
      assert tok.decode(list(ids)) == fact


def test_known_examples_and_recall_demos(facts):
  cfg = _cfg("task.max_train=400")
  train_ex = setup_lib.build_task(cfg, 0)[0]
  taught = knowledge.taught_facts(facts, 0.5, 0)
  known = knowledge.known_examples(train_ex, taught)
  assert 0 < len(known) < len(train_ex)
  for ex in train_ex:
    meta = ex["meta"]
    expect = (not meta["self_contained"] and not any(is_count_fact(f) for f in meta["facts"])
              and set(meta["facts"]) <= set(taught))
    assert (ex["id"] in known) == expect, ex["id"]
  ex = next(e for e in train_ex if e["id"] in known)
  (demo,) = demos.make_demos([ex], helper=None, known=known)
  assert demo.feedbacks == [] and len(demo.turns) == 1
  assert demo.turns[0] == (f"<think>I know this: {' '.join(ex['meta']['facts'])}</think>"
                           f"<answer>{ex['answers'][0]}</answer>")


def test_recalled_needs_every_value_token_above_one_half():
  lp = np.log(np.array([[0.9, 0.6, 0.1], [0.9, 0.4, 0.9], [0.51, 0.01, 0.01]]))
  mask = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0]])
  np.testing.assert_array_equal(knowledge.recalled(lp, mask), [True, False, True])


@pytest.mark.trajectory
def test_cold_start_teaches_the_facts(facts):
  """On the tiny random model, the knowledge phase takes recall of the taught facts from
  ~0 to most of them; the demos (one per step, rehearsal interleaved) follow."""
  from seekjax.rl import trainable as trainable_lib
  cfg = _cfg("sft.knowledge=0.03", "sft.knowledge_steps=60", "sft.knowledge_batch=32",
             "sft.lr=1e-2", "sft.steps=4")
  model = setup_lib.build_model(cfg, setup_lib.build_mesh(cfg))
  spec = setup_lib.trainable_spec(cfg)
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(1))
  taught = cold_start_lib.taught(cfg)
  assert len(taught) == round(0.03 * len([f for f in facts if not is_count_fact(f)]))
  rows = cold_start_lib._Rows([knowledge.fact_ids(model.tokenizer, f) for f in taught], 64,
                              spec, frozen, model.config, "test", lambda: None, 0)
  before = cold_start_lib.recall_rate(trainable, frozen, rows, spec, model.config)
  train_ex = setup_lib.build_task(cfg, 0)[0]
  after_params = cold_start_lib.cold_start(cfg, model, spec, trainable, frozen, train_ex,
                                           setup_lib.build_helper(cfg.helper))
  after = cold_start_lib.recall_rate(after_params, frozen, rows, spec, model.config)
  assert before < 0.1 and after > 0.6, (before, after)


def test_knowledge_needs_a_world_task_and_a_share():
  cfg = _cfg("sft.knowledge=0.5")
  cfg.task.name = "hotpotqa"
  with pytest.raises(setup_lib.RunSetupError, match="world-facts task"):
    cold_start_lib.taught(cfg)
  cfg.task.name = "world_facts_mix"
  cfg.sft.knowledge = -0.1
  with pytest.raises(setup_lib.RunSetupError, match=r"config.sft.knowledge: -0.1 .* \[0, 1\]"):
    cold_start_lib.taught(cfg)
