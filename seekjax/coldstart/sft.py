"""Supervised cold start: protocol demonstrations, laid out exactly as rollouts are, and SFT.

A demonstration is a list of SLM turns with the helper's feedback between them. It is
tokenized the way `sj.rollout` builds episodes (same chat prompt, same feedback ids),
so the SFT loss mask is the rollout loss mask: 1 on SLM text, 0 on prompt and feedback.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seekjax import protocol
from seekjax.rollout.host import feedback_ids
from seekjax.shapes import bucket
from seekjax.rl import trainable as trainable_lib
from seekjax.rl.step import compact_positions, policy_logprobs


@dataclasses.dataclass
class Demo:
  """question -> turns[0] -> feedbacks[0] -> turns[1] -> ... -> turns[-1] (the answer)."""

  question: str
  turns: list                 # SLM texts, e.g. "<think>..</think><message>..</message>"
  feedbacks: list             # formatted feedback texts, len(turns) - 1
  feedback_kinds: list = None  # "info" | "need" per feedback (for truncation markers)


def demo_ids(tokenizer, demo: Demo, system: str | None = None,
             max_feedback_tokens: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32[T], loss_mask int32[T]) for one demonstration; ends with eos (masked 1)."""
  if len(demo.feedbacks) != len(demo.turns) - 1:
    raise ValueError("a demo needs exactly one feedback between consecutive turns")
  msgs = protocol.slm_messages(demo.question, system) if system else \
      protocol.slm_messages(demo.question)
  ids = list(tokenizer.encode_chat(msgs))
  mask = [0] * len(ids)
  kinds = demo.feedback_kinds or ["info"] * len(demo.feedbacks)
  for k, turn in enumerate(demo.turns):
    t = tokenizer.encode_text(turn)   # a turn may quote the question: text, never control
    if k == len(demo.turns) - 1:
      t = t + [tokenizer.eos_id]
    ids += t
    mask += [1] * len(t)
    if k < len(demo.feedbacks):
      fb = feedback_ids(tokenizer, demo.feedbacks[k], kinds[k], max_feedback_tokens)
      ids += fb
      mask += [0] * len(fb)
  return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def pack(examples: list[tuple[np.ndarray, np.ndarray]], width: int | None = None):
  """Right-pad (ids, mask) pairs into int32[N, W] arrays."""
  width = width or max(len(i) for i, _ in examples)
  ids = np.zeros((len(examples), width), np.int32)
  mask = np.zeros((len(examples), width), np.float32)
  for r, (i, m) in enumerate(examples):
    n = min(len(i), width)
    ids[r, :n], mask[r, :n] = i[:n], m[:n]
  return ids, mask


def loss_positions(mask) -> int:
  """The bucketed count of loss positions of the fullest row of mask [N, T] (<= T)."""
  mask = np.asarray(mask)
  return min(bucket(max(int((mask > 0).sum(axis=1).max(initial=0)), 1)), mask.shape[1])


def sft_loss(trainable, frozen, tokens, mask, hidden, *, spec, cfg, targets=None):
  """Mean negative log-likelihood of the masked (SLM) tokens.

  hidden: the frozen bottom layers' output (top_n mode) or None. With `targets`
  (`step.compact_positions`), mask is [B, K] at those positions and the LM head runs
  only there.
  """
  lp, _ = policy_logprobs(trainable, frozen, tokens, hidden, spec, cfg, targets=targets)
  return -jnp.sum(lp * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_sft_step(spec: trainable_lib.Trainable, cfg, optimizer):
  """(trainable, frozen, opt_state, tokens[B,T], mask[B,T], hidden|None, positions)
  -> (trainable, opt_state, loss). The mask is packed on the host (`compact_positions`)
  to K >= `positions` loss positions per row, and the jitted step sees only their
  logits. With `positions` the most any row of the data set has (`loss_positions`),
  every batch has one K, and the step compiles once."""

  @functools.partial(jax.jit, donate_argnames=("trainable", "opt_state"))
  def jitted(trainable, frozen, opt_state, tokens, mask, hidden, targets):
    loss, grads = jax.value_and_grad(sft_loss)(trainable, frozen, tokens, mask, hidden,
                                               spec=spec, cfg=cfg, targets=targets)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  def step(trainable, frozen, opt_state, tokens, mask, hidden=None, positions: int = 16):
    targets, packed = compact_positions(np.asarray(mask), minimum=positions)
    return jitted(trainable, frozen, opt_state, tokens, packed, hidden, targets)

  return step
