"""Grain input pipelines over example lists: entity splits, sharding, shuffling, batches.

Order of operations in ``make_pipeline`` (each step is a lazy grain transform):

  source(examples) -> shard by process -> shuffle(seed) -> repeat(epochs)
  -> map(copy, *transforms) -> to_iter_dataset -> batch(list of example dicts)

* Sharding happens first, on a list truncated to a multiple of ``process_count``, so
  every process sees a disjoint, equally long shard (up to ``process_count - 1``
  examples are dropped) and the same number of batches per epoch.
* Shuffling is grain's index shuffle seeded by ``seed``; after ``repeat`` each epoch
  gets a fresh permutation, identical on every run with the same seed.
* The iterator is a ``grain.DatasetIterator``: ``get_state()`` returns a small dict
  that ``set_state()`` restores, so a trainer resumes on exactly the next batch.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import grain
import numpy as np

from seekjax.tasks.scoring import normalize_answer

DEFAULT_SPLIT_SALT = "seekjax-split-v1"


def entity_unit(entity: str, salt: str = DEFAULT_SPLIT_SALT) -> float:
  """Returns a stable pseudo-random number in [0, 1) for an entity name.

  The name is SQuAD-normalised first ("The Gambia" and "gambia" agree), then hashed with
  SHA-256, so the value never depends on PYTHONHASHSEED, the process, or list order.
  """
  digest = hashlib.sha256(f"{salt}\x00{normalize_answer(entity)}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def example_entities(example: dict) -> list[str]:
  """Returns every entity a question is about: ``meta["entities"]`` or ``[entity]``."""
  entities = (example.get("meta") or {}).get("entities")
  return list(entities) if entities else [example["entity"]]


def split_by_entity(examples: Sequence[dict], eval_fraction: float = 0.1,
                    salt: str = DEFAULT_SPLIT_SALT) -> tuple[list[dict], list[dict]]:
  """Returns (train, eval) lists whose question entities never overlap.

  An entity is an eval entity when ``entity_unit(entity, salt) < eval_fraction``. An
  example goes to eval when all its entities are eval entities, to train when none
  is, and is left out when it mixes both (e.g. a comparison of a train country with
  an eval country), so no entity is seen in both splits. Ids are unique per split
  by construction when they are unique in ``examples``.
  """
  if not 0.0 <= eval_fraction <= 1.0:
    raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
  train, evaluation = [], []
  for example in examples:
    is_eval = [entity_unit(e, salt) < eval_fraction for e in example_entities(example)]
    if all(is_eval):
      evaluation.append(example)
    elif not any(is_eval):
      train.append(example)
  return train, evaluation


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Returns (process_index, process_count), defaulting to JAX's; raises ValueError."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return process_index, process_count


def make_pipeline(examples: Sequence[dict], *, batch_size: int, seed: int = 0,
                  shuffle: bool = True, num_epochs: int | None = None,
                  drop_remainder: bool = True, process_index: int | None = None,
                  process_count: int | None = None,
                  transforms: Sequence[Callable[[dict], dict]] = (),
                  read_threads: int = 0, prefetch: int = 0) -> grain.IterDataset:
  """Returns a grain IterDataset yielding batches (lists of example dicts) for this process.

  Args:
    examples: the full example list (identical on every process).
    batch_size: examples per batch, per process.
    seed: shuffle seed; the same seed gives the same batches on every run.
    shuffle: False keeps list order (e.g. for evaluation).
    num_epochs: passes over the shard; None repeats forever.
    drop_remainder: drop the last short batch of a finite pipeline.
    process_index, process_count: this process's place; default
      ``jax.process_index()`` / ``jax.process_count()`` (injectable for tests).
    transforms: functions example -> example applied after shuffling (e.g.
      ``tokenize_transform``); each receives a shallow copy it may modify.
    read_threads, prefetch: grain ReadOptions. The default 0/0 reads synchronously in
      the calling thread: on a 2-core CPU grain's default 16 reader threads make the
      pipeline ~8x slower (about 2,600 vs 20,000 examples/s without tokenization).
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  index, count = _process_layout(process_index, process_count)
  usable = len(examples) - len(examples) % count
  if usable == 0:
    raise ValueError(f"{len(examples)} examples cannot be shared by {count} processes")
  ds = grain.MapDataset.source(list(examples[:usable]))[index::count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.map(dict)
  for fn in transforms:
    ds = ds.map(fn)
  options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
  return ds.to_iter_dataset(options).batch(batch_size, drop_remainder=drop_remainder,
                                           batch_fn=list)


def tokenize_transform(tokenizer, *, field: str = "question", key: str = "question_ids",
                       max_length: int | None = None) -> Callable[[dict], dict]:
  """Returns a transform that adds ``key``: int32[n] token ids of ``example[field]``.

  ``tokenizer`` is anything with ``encode(str) -> list[int]`` (e.g.
  ``seekjax.models.tokenizer.Tokenizer``). Ids beyond ``max_length`` are cut off and
  ``example["truncated"]`` records whether that happened.
  """
  def transform(example: dict) -> dict:
    """Returns the example with token ids under ``key`` and a ``truncated`` flag."""
    ids = tokenizer.encode(example[field])
    example["truncated"] = max_length is not None and len(ids) > max_length
    example[key] = np.asarray(ids[:max_length] if max_length else ids, np.int32)
    return example
  return transform


def pad_batch(batch: Sequence[dict], *, key: str = "question_ids",
              pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Returns (ids int32[B, T_max] right-padded with pad_id, lengths int32[B])."""
  lengths = np.asarray([len(e[key]) for e in batch], np.int32)
  ids = np.full((len(batch), max(int(lengths.max(initial=0)), 1)), pad_id, np.int32)
  for row, example in enumerate(batch):
    ids[row, :lengths[row]] = example[key]
  return ids, lengths
