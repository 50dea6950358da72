"""Tests for grain pipelines: determinism, sharding, exact resume, entity splits, tokenization."""
import json
import random

import numpy as np
import pytest

from seekjax.tasks import (em_by_popularity, em_by_qtype, entity_unit, make_example, make_pipeline,
                           pad_batch, split_by_entity, task_examples, tokenize_transform,
                           world_facts_examples)


def toy_examples(n=50):
  return [make_example(question=f"question {i}?", answers=[str(i)], task="toy", id=f"toy{i}",
                       qtype=f"type{i % 3}", entity=f"entity{i // 2}") for i in range(n)]


def ids(batches):
  return [[e["id"] for e in batch] for batch in batches]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_are_lists_of_examples_and_deterministic():
  examples = toy_examples()
  kw = dict(batch_size=4, process_index=0, process_count=1)
  a = take(iter(make_pipeline(examples, seed=7, **kw)), 5)
  b = take(iter(make_pipeline(examples, seed=7, **kw)), 5)
  c = take(iter(make_pipeline(examples, seed=8, **kw)), 5)
  assert all(len(batch) == 4 and all(isinstance(e, dict) for e in batch) for batch in a)
  assert ids(a) == ids(b) and ids(a) != ids(c)
  assert [i for b in ids(a) for i in b] != [f"toy{i}" for i in range(20)]  # shuffled


def test_one_epoch_visits_every_example_once_and_epochs_reshuffle():
  examples = toy_examples(48)
  epoch = list(make_pipeline(examples, batch_size=8, num_epochs=1, process_index=0,
                             process_count=1))
  seen = [i for batch in ids(epoch) for i in batch]
  assert sorted(seen) == sorted(e["id"] for e in examples)
  two = take(iter(make_pipeline(examples, batch_size=8, process_index=0, process_count=1)), 12)
  first, second = [i for b in ids(two[:6]) for i in b], [i for b in ids(two[6:]) for i in b]
  assert sorted(first) == sorted(second) and first != second
  ordered = list(make_pipeline(examples, batch_size=8, num_epochs=1, shuffle=False,
                               process_index=0, process_count=1))
  assert [i for b in ids(ordered) for i in b] == [e["id"] for e in examples]


def test_shards_are_disjoint_equal_and_cover_the_data():
  examples = toy_examples(50)  # 50 = 3 * 16 + 2: two examples dropped so shards match
  shards = []
  for index in range(3):
    ds = make_pipeline(examples, batch_size=4, num_epochs=1, drop_remainder=False, seed=1,
                       process_index=index, process_count=3)
    shards.append([i for batch in ids(ds) for i in batch])
  assert [len(s) for s in shards] == [16, 16, 16]
  union = set().union(*map(set, shards))
  assert len(union) == 48 and union <= {e["id"] for e in examples}
  with pytest.raises(ValueError, match="process_index"):
    make_pipeline(examples, batch_size=4, process_index=3, process_count=3)


# 11 batches of 4 cross the 20-example shard's epoch boundary twice; threads=2 prefetches.
@pytest.mark.parametrize("consumed,threads", [(0, 0), (3, 0), (11, 0), (5, 2)])
def test_resume_from_saved_state_gives_the_same_next_batches(consumed, threads):
  examples = toy_examples(40)

  def pipeline():
    return make_pipeline(examples, batch_size=4, seed=11, process_index=1, process_count=2,
                         transforms=[lambda e: dict(e, seen=True)], read_threads=threads,
                         prefetch=4 * threads)

  iterator = iter(pipeline())
  take(iterator, consumed)
  state = json.loads(json.dumps(iterator.get_state()))  # survives a JSON checkpoint
  expected = ids(take(iterator, 6))
  resumed = iter(pipeline())
  resumed.set_state(state)
  got = take(resumed, 6)
  assert ids(got) == expected
  assert all(e["seen"] for batch in got for e in batch)


def test_transforms_get_copies_not_the_source_examples():
  examples = toy_examples(8)

  def mutate(example):
    example["question"] = "changed"
    return example

  batch = next(iter(make_pipeline(examples, batch_size=8, transforms=[mutate], process_index=0,
                                  process_count=1)))
  assert all(e["question"] == "changed" for e in batch)
  assert all(e["question"].startswith("question") for e in examples)


def test_entity_split_never_overlaps_and_is_order_independent():
  examples = world_facts_examples(seed=0)
  train, evaluation = split_by_entity(examples, eval_fraction=0.2)

  def entities(split):
    return {x for e in split for x in (e["meta"].get("entities") or [e["entity"]])}

  assert not entities(train) & entities(evaluation)
  assert not {e["id"] for e in train} & {e["id"] for e in evaluation}
  assert 0.1 < len(evaluation) / (len(train) + len(evaluation)) < 0.3
  shuffled = list(examples)
  random.Random(0).shuffle(shuffled)
  train2, eval2 = split_by_entity(shuffled, eval_fraction=0.2)
  assert {e["id"] for e in eval2} == {e["id"] for e in evaluation}
  assert len(train2) == len(train)
  assert entity_unit("The Gambia") == entity_unit("gambia")  # normalised before hashing
  assert entity_unit("Eritrea") != entity_unit("Eritrea", salt="other")
  # all types appear in both splits, so eval measures the same skills
  assert {e["qtype"] for e in train} == {e["qtype"] for e in evaluation}


class CharTokenizer:
  def encode(self, text):
    return [ord(c) % 256 for c in text]


def test_tokenize_transform_and_pad_batch():
  examples = [make_example(question=q, answers=["x"], task="toy", id=str(i), qtype="t",
                           entity=q) for i, q in enumerate(["ab", "abcdef", "a"])]
  ds = make_pipeline(examples, batch_size=3, shuffle=False, num_epochs=1, process_index=0,
                     process_count=1, transforms=[tokenize_transform(CharTokenizer(),
                                                                     max_length=4)])
  (batch,) = list(ds)
  assert [e["truncated"] for e in batch] == [False, True, False]
  tokens, lengths = pad_batch(batch, pad_id=-1)
  assert tokens.dtype == np.int32 and tokens.shape == (3, 4)
  assert lengths.tolist() == [2, 4, 1]
  assert tokens.tolist() == [[97, 98, -1, -1], [97, 98, 99, 100], [97, -1, -1, -1]]


def test_em_hooks_with_oracle_and_constant_answerers():
  examples = [e for e in world_facts_examples(seed=0, qtypes=["capital", "currency"])]
  gold = {e["question"]: e["answers"][-1] for e in examples}
  scores = em_by_qtype(examples, lambda qs: [gold[q] for q in qs])
  assert scores == {"capital": 1.0, "currency": 1.0, "all": 1.0}
  euro = em_by_qtype(examples, lambda qs: ["euro"] * len(qs))
  n_euro = sum("euro" in e["answers"] for e in examples if e["qtype"] == "currency")
  n_currency = sum(e["qtype"] == "currency" for e in examples)
  assert euro["capital"] == 0.0 and euro["currency"] == pytest.approx(n_euro / n_currency)
  buckets = em_by_popularity(examples, lambda qs: [gold[q] for q in qs])
  assert buckets == {"head": 1.0, "tail": 1.0}
  with pytest.raises(ValueError, match="answers for"):
    em_by_qtype(examples, lambda qs: [])


def test_default_process_layout_comes_from_jax():
  import jax  # pylint: disable=import-outside-toplevel
  assert (jax.process_index(), jax.process_count()) == (0, 1)
  examples = toy_examples(10)
  (batch,) = list(make_pipeline(examples, batch_size=10, num_epochs=1))
  assert sorted(e["id"] for e in batch) == sorted(e["id"] for e in examples)


def test_task_catalog(tmp_path):
  private = task_examples("world_facts_private", seed=0, qtypes=["capital", "self_reading"])
  assert {e["qtype"] for e in private} == {"capital"}  # self-contained types are not made private
  assert all(e["private_facts"] and e["id"].endswith("#private") for e in private)
  path = tmp_path / "gsm.jsonl"
  path.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
  assert task_examples("gsm8k", path=str(path))[0]["answers"] == ["2"]
  with pytest.raises(ValueError, match="unknown task"):
    task_examples("world_fact")
