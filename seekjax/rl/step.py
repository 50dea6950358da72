"""The jitted policy-gradient step: teacher-forced log-probs, PPO-clip + KL, optax update.

`make_train_step(spec, optimizer)` returns one jitted function
  (trainable, frozen, opt_state, batch) -> (trainable, opt_state, metrics)
that splits the batch into micro-batches (gradient accumulation with `lax.scan`),
so the largest live logits tensor is [B / micro_batches, T, V], or [B / micro_batches, K, V]
when the batch carries `targets` (the LM head, and the last layer's query side and MLP,
then run only on the K loss positions of each row; `compact_positions`).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding

from seekjax.models import decoder, sharding
from seekjax.models.config import ModelConfig
from seekjax.shapes import bucket
from seekjax.rl import losses, trainable as trainable_lib


@struct.dataclass
class Batch:
  """One PPO mini-batch. B episodes of T tokens."""

  tokens: jax.Array          # int32[B, T]
  loss_mask: jax.Array       # float32[B, T]  1 on SLM-sampled tokens
  old_logprobs: jax.Array    # float32[B, T]  behaviour-policy log-probs (sampler)
  ref_logprobs: jax.Array    # float32[B, T]  frozen reference policy
  advantages: jax.Array      # float32[B]
  hidden: jax.Array | None = None  # dtype[B, T, D] output of the frozen bottom layers
                                   # (top_n mode: kept by the rollout, or computed once
                                   # per batch; shared by the reference and every epoch)
  targets: jax.Array | None = None  # int32[B, K] (`compact_positions`): the positions the
                                    # loss reads. When set, loss_mask / old_logprobs /
                                    # ref_logprobs are [B, K], aligned with it, and the LM
                                    # head runs only there (not on prompt and feedback).


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Static settings of the loss; every choice is explicit (no hidden defaults)."""

  model: ModelConfig
  trainable: trainable_lib.Trainable
  epsilon: float
  epsilon_high: float
  aggregation: str
  kl_method: str
  kl_beta: float            # 0 when the KL goes into the reward instead
  micro_batches: int = 1
  remat: bool = False
  # Tokens are scored under softmax(logits / temperature), the distribution the rollout
  # drew them from (`scoring_temperature` of rollout.temperature), as verl and TRL do: the
  # PPO ratio against the sampler's log-probs then starts at 1, and the KL compares the
  # policy and the reference at the same temperature.
  temperature: float = 1.0


def scoring_temperature(rollout_temperature: float) -> float:
  """The temperature the trainer scores a rollout's tokens at: the rollout's own, or 1 for
  a greedy rollout (whose recorded log-probs are log softmax(logits))."""
  t = float(rollout_temperature)
  return t if t > 0.0 else 1.0


def token_logprobs_and_entropy(params, cfg: ModelConfig, tokens, remat=False, targets=None,
                               temperature: float = 1.0, head_trains: bool = True):
  """Teacher-forced log p(tokens[t] | tokens[<t]) and the entropy of that distribution
  (softmax(logits / temperature)).

  tokens: int32[B, T]. Returns (logprobs float32[B, T], entropy float32[B, T]) with
  position 0 set to 0 (nothing predicts the first token); with `targets` int32[B, K],
  only at those positions ([B, K]). head_trains: whether the LM head is differentiated
  (`_head_logprobs`).
  """
  xs, targets = _states_for(params, cfg, tokens, targets, remat=remat)
  return _head_logprobs(params, cfg, xs, tokens, targets, temperature=temperature,
                        head_trains=head_trains)


def _states_for(params, cfg, tokens, targets, *, remat=False, inputs=None):
  """The final hidden states that predict tokens[targets] (the state one position before
  each target), [B, K, D], and the targets (every position when None). With targets the
  last layer runs only at those states (`decoder.hidden_states_at`)."""
  b, t = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  if targets is None:   # every position
    x, _ = decoder.hidden_states(params, cfg, tokens, positions, remat=remat, inputs=inputs,
                                 causal=True)
    prev = jnp.maximum(positions - 1, 0)
    return jnp.take_along_axis(x, prev[..., None], axis=1), positions
  prev = jnp.maximum(targets - 1, 0)
  return decoder.hidden_states_at(params, cfg, tokens, positions, prev, remat=remat,
                                  inputs=inputs, causal=True), targets


def _head_logprobs(head_params, cfg, xs, tokens, targets, head_positions=None, mask=None,
                   temperature: float = 1.0, head_trains: bool = False):
  """LM head + log-softmax over the states xs [B, K, D] that predict tokens[targets].

  With `head_positions` N (and the loss `mask` [B, K]), the head runs only on the batch's
  first N in-loss entries, packed across rows: the [B, K] layout pads every row to the
  longest row's loss count, and the head (V x D per position) is most of the cost of the
  update and the reference pass. Entries outside the mask get 0; the caller guarantees
  that the mask holds at most N entries (`head_positions`).

  A frozen head (top_n, LoRA) goes through `losses.head_logprobs_and_entropy`, whose
  backward pass needs no [.., V] buffer; a head that trains (`head_trains`: full mode,
  where the tied embedding is the head) needs the logits' gradient for its own, so it
  goes through autodiff of `losses.logprobs_and_entropy`.
  """
  ids = jnp.take_along_axis(tokens, targets, axis=1)

  def logprobs(x, ids):
    if head_trains:
      return losses.logprobs_and_entropy(decoder.lm_head(head_params, cfg, x), ids, temperature)
    return losses.head_logprobs_and_entropy(x, decoder.head_weights(head_params, cfg), ids,
                                            temperature)

  if head_positions is None:
    lp, ent = logprobs(xs, ids)
  else:
    b, k, d = xs.shape
    flat = mask.reshape(b * k) > 0
    index = jnp.nonzero(flat, size=head_positions, fill_value=0)[0]
    valid = jnp.arange(head_positions) < jnp.sum(flat)
    lp, ent = logprobs(xs.reshape(b * k, d)[index][None], ids.reshape(b * k)[index][None])
    unpack = lambda v: jnp.zeros(b * k, v.dtype).at[index].add(  # noqa: E731
        jnp.where(valid, v[0], 0.0)).reshape(b, k)
    lp, ent = unpack(lp), unpack(ent)
  first = targets == 0
  return jnp.where(first, 0.0, lp), jnp.where(first, 0.0, ent)


def head_positions(mask, groups: int, minimum: int) -> int:
  """Host-side: the head's packed length N for micro-batches of `mask`'s rows taken
  strided (micro-batch g holds rows g, g + groups, ..., as `split_micro` takes them):
  `minimum` times the least power of two that holds the fullest micro-batch's loss
  entries, so shapes repeat. mask: [B, K] (nonzero = in the loss)."""
  counts = (np.asarray(mask) > 0).sum(axis=1)
  fullest = max(int(counts[g::groups].sum()) for g in range(groups))
  return bucket(max(fullest, 1), minimum)


def balance_rows(mask, groups: int) -> np.ndarray:
  """Host-side: a row order whose strided micro-batches (`split_micro`, `groups` of them)
  hold about equal loss entries, so that a smaller packed head length (`head_positions`)
  holds the fullest. Longest rows first, each to the emptiest micro-batch with room
  (B / groups rows each). mask: [B, K]; returns int permutation [B]: row p of the
  reordered batch is row order[p]."""
  counts = (np.asarray(mask) > 0).sum(axis=1)
  rows = len(counts)
  if groups <= 1 or rows % groups:
    return np.arange(rows)
  per = rows // groups
  load, members = [0] * groups, [[] for _ in range(groups)]
  for r in np.argsort(-counts, kind="stable"):
    g = min((g for g in range(groups) if len(members[g]) < per), key=lambda g: load[g])
    members[g].append(int(r))
    load[g] += int(counts[r])
  order = np.empty(rows, np.int64)
  for g, rs in enumerate(members):
    order[g::groups] = rs
  return order


def compact_positions(mask, minimum: int = 16):
  """Host-side: the loss positions of each row, packed to the left.

  mask: [B, T] (nonzero = in the loss). Returns (targets int32[B, K], compact mask
  float32[B, K]) with K = minimum times the least power of two that holds the largest row
  count (at most T), so that shapes, and compiled steps, repeat. Padding entries have mask 0.
  """
  mask = np.asarray(mask, np.float32)
  in_loss = mask > 0
  k = min(bucket(max(int(in_loss.sum(axis=1).max(initial=0)), 1), minimum), mask.shape[1])
  order = np.argsort(~in_loss, axis=1, kind="stable")[:, :k].astype(np.int32)
  return order, np.take_along_axis(mask, order, axis=1)


def gather_positions(x, targets):
  """x [B, T] (numpy or jax) at targets [B, K] -> [B, K]."""
  if isinstance(x, np.ndarray):
    return np.take_along_axis(x, np.asarray(targets), axis=1)
  return jnp.take_along_axis(x, jnp.asarray(targets), axis=1)


@functools.partial(jax.jit, static_argnames=("cfg",))
def bottom_hidden(frozen, tokens, *, cfg: ModelConfig):
  """top_n mode: the residual stream after the frozen layers. tokens: int32[B, T] -> [B, T, D]."""
  b, t = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(t), (b, t))
  x, _ = decoder.hidden_states(frozen, cfg, tokens, positions, final_norm=False, causal=True)
  return x


def policy_logprobs(trainable, frozen, tokens, hidden, spec_trainable, cfg, remat=False,
                    targets=None, head_positions=None, mask=None, temperature: float = 1.0):
  """(logprobs, entropy) float32[B, T] (or [B, K] at `targets`) of the policy given by
  (trainable, frozen), at `temperature` (`StepSpec.temperature`).

  With `hidden` (top_n mode) only the trainable top layers run, on the cached
  bottom-layer output; otherwise the merged params run the whole model. With
  `head_positions` (and `targets` and the loss `mask`), the LM head runs only on the
  packed in-loss entries (`_head_logprobs`).
  """
  if hidden is None:
    params = trainable_lib.merge(spec_trainable, trainable, frozen)
    head_trains = spec_trainable.mode == "full"
    if head_positions is None:
      return token_logprobs_and_entropy(params, cfg, tokens, remat, targets, temperature,
                                        head_trains)
    xs, targets = _states_for(params, cfg, tokens, targets, remat=remat)
    return _head_logprobs(params, cfg, xs, tokens, targets, head_positions, mask, temperature,
                          head_trains)
  xs, targets = _states_for(trainable_lib.compute_view(spec_trainable, trainable), cfg, tokens,
                            targets, remat=remat, inputs=hidden)
  return _head_logprobs(frozen, cfg, xs, tokens, targets, head_positions, mask, temperature)


def split_micro(x, m: int, mesh=None):
  """[B, ...] -> [m, B/m, ...], micro-batch i = rows i, i + m, i + 2m, ...: with rows in
  contiguous blocks over the mesh's batch axes, every micro-batch keeps its share on
  every device (no data moves). `merge_micro` is its inverse."""
  x = x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)
  if mesh is None:
    return x
  rule = (None, sharding.BATCH_AXES) + (None,) * (x.ndim - 2)
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, sharding.fit_spec(mesh, x.shape, rule)))


def merge_micro(x, mesh=None):
  """[m, B/m, ...] from `split_micro` -> [B, ...] in the original row order."""
  x = x.swapaxes(0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
  if mesh is None:
    return x
  rule = (sharding.BATCH_AXES,) + (None,) * (x.ndim - 1)
  return jax.lax.with_sharding_constraint(
      x, NamedSharding(mesh, sharding.fit_spec(mesh, x.shape, rule)))


@functools.partial(jax.jit, static_argnames=("spec_trainable", "cfg", "micro_batches", "mesh",
                                             "head_positions", "temperature"))
def reference_logprobs(ref_trainable, frozen, tokens, hidden, *, spec_trainable, cfg,
                       targets=None, micro_batches: int = 1, mesh=None, mask=None,
                       head_positions: int | None = None, temperature: float = 1.0):
  """float32[B, T] (or [B, K] at `targets`) teacher-forced log-probs of the reference
  policy (once per batch), at `temperature` (the train step's `StepSpec.temperature`).

  tokens: int32[B, T]; hidden: float32[B, T, D] or None; targets: int32[B, K] or None.
  Runs `micro_batches` forward passes of B / micro_batches rows each (`lax.map`), so its
  largest activations are those of one micro-batch, like the update's; with `mesh`,
  each micro-batch is split over the batch axes (`split_micro`). B must divide by
  micro_batches. With `head_positions` N and the loss `mask` [B, K], the LM head runs on
  each micro-batch's N packed in-loss entries (`head_positions` picks N), and the
  log-probs outside the mask are 0.
  """
  def one(xs):
    t, h, tg, m = xs
    return policy_logprobs(ref_trainable, frozen, t, h, spec_trainable, cfg, targets=tg,
                           head_positions=head_positions, mask=m, temperature=temperature)[0]
  if micro_batches == 1:
    return one((tokens, hidden, targets, mask))
  split = lambda x: None if x is None else split_micro(x, micro_batches, mesh)  # noqa: E731
  return merge_micro(jax.lax.map(one, (split(tokens), split(hidden), split(targets),
                                       split(mask))), mesh)


def loss_fn(trainable, frozen, batch: Batch, spec: StepSpec, pg_weight=1.0, kl_weight=1.0,
            head_positions=None):
  """Scalar loss and metrics for one micro-batch.

  pg_weight / kl_weight scale this micro-batch's share of the whole batch's policy and
  KL terms, so that summing micro-batch gradients gives exactly the full-batch gradient.
  head_positions: the LM head's packed length (`_head_logprobs`), or None.
  """
  lp, ent = policy_logprobs(trainable, frozen, batch.tokens, batch.hidden, spec.trainable,
                            spec.model, spec.remat, batch.targets,
                            head_positions=head_positions, mask=batch.loss_mask,
                            temperature=spec.temperature)
  mask = batch.loss_mask
  pg, pg_metrics = losses.policy_loss(
      lp, batch.old_logprobs, batch.advantages, mask, epsilon=spec.epsilon,
      epsilon_high=spec.epsilon_high, aggregation=spec.aggregation)
  kl = losses.kl_loss(lp, batch.ref_logprobs, mask, beta=1.0, method=spec.kl_method)
  loss = pg_weight * pg + spec.kl_beta * kl_weight * kl
  metrics = dict(pg_metrics, loss=pg + spec.kl_beta * kl, pg_loss=pg, kl=kl,
                 entropy=losses.masked_mean(ent, mask))
  return loss, metrics


def micro_batch_weights(mask, aggregation: str):
  """Each micro-batch's share of the batch loss. mask: float32[M, b, T] -> ([M], [M]).

  token-mean (and the KL) weigh by masked tokens; the seq-means by episodes with any
  masked token (episodes with an empty mask do not count, as in `losses.aggregate`).
  """
  tokens = jnp.sum(mask, axis=(1, 2))
  seqs = jnp.sum((jnp.sum(mask, axis=2) > 0).astype(jnp.float32), axis=1)
  tok_w = tokens / jnp.maximum(jnp.sum(tokens), 1.0)
  seq_w = seqs / jnp.maximum(jnp.sum(seqs), 1.0)
  return (tok_w if aggregation == "token-mean" else seq_w), tok_w


def make_train_step(spec: StepSpec, optimizer: optax.GradientTransformation):
  """A jitted (trainable, frozen, opt_state, batch, head_positions=None) -> (trainable,
  opt_state, metrics). Micro-batch i holds rows i, i + m, ... (`split_micro`), as the
  reference pass takes them; `head_positions` (static: `head_positions`) packs the LM
  head's positions in each (`_head_logprobs`)."""

  def micro(batch: Batch):
    return jax.tree.map(lambda x: split_micro(x, spec.micro_batches), batch)

  @functools.partial(jax.jit, donate_argnames=("trainable", "opt_state"),
                     static_argnames=("head_positions",))
  def train_step(trainable, frozen, opt_state, batch: Batch, head_positions=None):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    micro_batches = micro(batch)
    pg_w, kl_w = micro_batch_weights(micro_batches.loss_mask, spec.aggregation)

    def accumulate(grads, xs):
      mb, pw, kw = xs
      (_, metrics), g = grad_fn(trainable, frozen, mb, spec, pw, kw, head_positions)
      return jax.tree.map(jnp.add, grads, g), metrics

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    grads, metrics = jax.lax.scan(accumulate, zeros, (micro_batches, pg_w, kl_w))
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, metrics

  train_step.spec = spec   # read by `cycle.RunContext` to check the scoring temperature
  return train_step


def make_optimizer(lr: float, total_steps: int, warmup_steps: int, weight_decay: float,
                   clip_norm: float, b1: float = 0.9, b2: float = 0.999):
  """AdamW with global-norm clipping and a warmup + cosine schedule."""
  warmup_steps = max(0, min(warmup_steps, total_steps - 1))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else lr, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * 0.1)
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)), schedule
