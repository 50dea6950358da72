"""The update's inputs from a step's episodes: width, loss positions, row order and the LM
head's packed length; the reference pass and the PPO epochs over them; and their warm-up.

`rl_iteration` (`rl.cycle`) calls `update_inputs`, `warm_update`, `reference_pass`,
`update_batch` and `ppo_epochs` in that order. Every shape here comes from the config's
ladders (widths, K, head lengths), so each program compiles once a run.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seekjax import distributed
from seekjax.models import sharding
from seekjax.rl import step as step_lib
from seekjax.rl.settings import RLSettings
from seekjax.rl.step import Batch, bottom_hidden, reference_logprobs
from seekjax.rollout import config as rollout_config


def _fit(x, width):
  """x [B, L, ...] -> [B, width, ...]: cut, or zero-padded on the right."""
  pad = [(0, 0), (0, max(width - x.shape[1], 0))] + [(0, 0)] * (x.ndim - 2)
  return np.pad(x[:, :width], pad)



def reference_micro_batches(rows: int, rl: RLSettings) -> int:
  """Forward passes of the reference over a step's `rows` episodes: as many as the update
  makes per epoch (mini_batches x micro_batches), so its micro-batches have the update's
  size (fewer when that count does not divide the rows)."""
  return math.gcd(rows, rl.mini_batches * rl.micro_batches)



class UpdateInputs(NamedTuple):
  """A step's update inputs (`update_inputs`). Rows are in `order` (`step.balance_rows`):
  row p here is episode order[p] of the rollout."""

  tokens: Any             # int32[B, W] on the global mesh
  targets: Any            # int32[B, K] on the global mesh: each row's loss positions
  mask: np.ndarray        # float32[B, K] this process's rows
  mask_g: Any             # the same on the global mesh
  sampler_lp: np.ndarray  # float32[B, K] this process's rows
  hidden: Any             # [B, W, D] frozen bottom's output on the global mesh, or None
  order: np.ndarray       # int[B]: the episode each row holds
  head_ref: int | None    # the LM head's packed length in the reference pass, or None
  head_update: int | None  # the same in each update micro-batch


def packs_head(ctx) -> bool:
  """Whether the reference pass and the update pack the LM head's positions
  (`step.head_positions`): on one process with the rows on one device. With rows split
  over several, packing would gather each micro-batch's rows from all of them."""
  if jax.process_count() > 1:
    return False
  mesh = ctx.mesh
  return mesh is None or math.prod(
      mesh.shape[a] for a in sharding.BATCH_AXES if a in mesh.shape) == 1


def head_minimum(rows_per_micro: int, k_cfg: int, k: int) -> int:
  """The shortest packed head length of a micro-batch of `rows_per_micro` rows: half of
  its rows' loss positions at the config's K (`k_cfg`), rounded up to 16, and at most the
  unpacked rows x K (`k`, this batch's). The head's length is this times a power of two
  (`step.head_positions`), so one or two lengths serve a run."""
  return min(-(-(rows_per_micro * k_cfg // 2) // 16) * 16, rows_per_micro * k)


def head_lengths(ctx, mask: np.ndarray) -> tuple[int | None, int | None]:
  """(reference pass, update) packed LM head lengths for these rows ([B, K] loss mask in
  the reordered row order), or (None, None) when the head is not packed (`packs_head`).
  The reference takes `reference_micro_batches` strided micro-batches of all rows; each
  update mini-batch (consecutive rows) `rl.micro_batches` strided ones. Never longer than
  the unpacked rows x K."""
  if not packs_head(ctx):
    return None, None
  rl, (rows, k) = ctx.settings, mask.shape
  k_cfg = rollout_config.loss_positions(ctx.rollout_cfg)

  def length(m, groups):
    r = m.shape[0] // groups
    return min(step_lib.head_positions(m, groups, head_minimum(r, k_cfg, k)), r * k)
  g = reference_micro_batches(rows, rl)
  per_mini = rows // rl.mini_batches
  return length(mask, g), max(length(mask[i:i + per_mini], rl.micro_batches)
                              for i in range(0, rows, per_mini))


def update_inputs(ctx, episodes, width: int, k: int) -> UpdateInputs:
  """The update's inputs at `width` tokens a row and K = min(k, width) loss positions.
  The rows are reordered so the micro-batches hold about equal loss entries
  (`step.balance_rows`) when the LM head is packed; the frozen bottom's output is the
  rollout's, or computed here in top_n mode (None otherwise)."""
  targets, mask = step_lib.compact_positions(_fit(episodes.loss_mask, width),
                                             minimum=min(k, width))
  rows = mask.shape[0]
  order = (step_lib.balance_rows(mask, reference_micro_batches(rows, ctx.settings))
           if packs_head(ctx) else np.arange(rows))
  targets, mask = targets[order], mask[order]
  sampler_lp = step_lib.gather_positions(_fit(episodes.logprobs, width)[order], targets)
  # From here on the rows live on the global mesh, split over its batch axes as the
  # update splits them.
  tokens, targets_g, mask_g = distributed.global_batch(
      ctx.mesh, (_fit(episodes.tokens, width)[order].astype(np.int32), targets, mask))
  hidden = None
  if episodes.hidden is not None:  # the frozen bottom's output, as the rollout computed it
    (hidden,) = distributed.global_batch(ctx.mesh, (_fit(episodes.hidden, width)[order],))
    hidden = jnp.asarray(hidden)
  elif ctx.spec.mode == "top_n":  # frozen bottom layers: run them once for ref and all epochs
    hidden = bottom_hidden(ctx.frozen, tokens, cfg=ctx.model.config)
  head_ref, head_update = head_lengths(ctx, mask)
  return UpdateInputs(tokens, targets_g, mask, mask_g, sampler_lp, hidden, order, head_ref,
                      head_update)


def reference_pass(ctx, ref_trainable, inputs: UpdateInputs, lower=False):
  """The reference log-probs [B, K] on the global mesh (zero outside the loss mask when the
  head is packed); with `lower`, the lowered program instead (`warm_update`)."""
  fn = reference_logprobs.lower if lower else reference_logprobs
  return fn(ref_trainable, ctx.frozen, inputs.tokens, inputs.hidden, spec_trainable=ctx.spec,
            cfg=ctx.model.config, targets=inputs.targets,
            micro_batches=reference_micro_batches(inputs.tokens.shape[0], ctx.settings),
            mesh=ctx.mesh, mask=None if inputs.head_ref is None else inputs.mask_g,
            head_positions=inputs.head_ref,
            temperature=step_lib.scoring_temperature(ctx.rollout_cfg.temperature))


def update_batch(ctx, inputs: UpdateInputs, ref_lp, adv) -> Batch:
  """The PPO `Batch` on the global mesh from `update_inputs`, the reference log-probs and
  this process's advantages [B] (in the rollout's row order)."""
  sampler_g, adv_g = distributed.global_batch(
      ctx.mesh, (np.asarray(inputs.sampler_lp, np.float32),
                 np.asarray(adv, np.float32)[inputs.order]))
  return Batch(tokens=jnp.asarray(inputs.tokens), loss_mask=jnp.asarray(inputs.mask_g),
               old_logprobs=jnp.asarray(sampler_g), ref_logprobs=ref_lp,
               advantages=jnp.asarray(adv_g), hidden=inputs.hidden,
               targets=jnp.asarray(inputs.targets))


def ppo_epochs(ctx, trainable, opt_state, batch: Batch, head=None):
  """rl.num_epochs passes of rl.mini_batches optimizer steps over `batch`, with the LM
  head packed to `head` positions a micro-batch (`head_lengths`; None: not packed).
  Returns (trainable, opt_state, [metrics of each step])."""
  out = []
  for _ in range(ctx.settings.num_epochs):
    for mb in mini_batches(batch, ctx.settings.mini_batches):
      trainable, opt_state, m = ctx.train_step(trainable, ctx.frozen, opt_state, mb,
                                                head_positions=head)
      out.append(m)
  return trainable, opt_state, out


def mini_batches(batch: Batch, m: int) -> list[Batch]:
  """`batch` cut into m consecutive slices of rows (one optimizer step each)."""
  n = batch.tokens.shape[0]
  return [jax.tree.map(lambda x, i=i: x[i * n // m:(i + 1) * n // m], batch) for i in range(m)]


# train_step -> the (rows, width, k, reference head, update head) it has compiled in this
# process, and ("width", rows, width, k) once both head lengths at a width are. Keyed
# weakly on the step function itself: not its id, which a later step function reuses once
# this one is freed, and not a strong reference, which would keep every run's step and
# its executables alive for the life of the process.
_WARM_UPDATES = weakref.WeakKeyDictionary()


def _warm_key(inputs: UpdateInputs, k: int) -> tuple:
  return (inputs.tokens.shape[0], inputs.tokens.shape[1], k, inputs.head_ref,
          inputs.head_update)


def warm_update(ctx, trainable, opt_state, ref_trainable, episodes, widths,
                own: UpdateInputs, k):
  """Compile the reference pass and the update at every width of the ladder (`widths`),
  for k loss positions and both packed LM head lengths (`head_lengths`: half the
  micro-batch's loss positions, and all of them), on this step's episodes cut or padded
  to each width, so that no later step compiles when its episodes land on another width
  or fill more of their micro-batches. This step's own program (`own`) compiles when it
  runs. Ahead of time (`lower(...).compile()` on the arguments the step will pass): jax
  keeps the executables for the later calls, and nothing runs, so a run whose programs
  come from the persistent cache pays next to nothing here. The caller warms only the
  config's own k: a step with more loss positions (retried messages) is rare, and
  compiles its one program when met."""
  if not int(getattr(ctx.rollout_cfg, "prompt_width", 0) or 0):
    return   # outside a run the widths are every power of two: each compiles when met
  warm = _WARM_UPDATES.setdefault(ctx.train_step, set())
  warm.add(_warm_key(own, k))
  opt_state = distributed.on_mesh(ctx.mesh, opt_state)   # as `rl_iteration` passes it
  rows = len(own.mask)
  for w in widths:
    if ("width", rows, w, k) in warm:
      continue   # both head lengths done at an earlier step: not even the inputs again
    at_width = update_inputs(ctx, episodes, w, k)
    for fill in (np.zeros_like, np.ones_like):   # the shortest head, the longest
      inputs = at_width._replace(**dict(zip(("head_ref", "head_update"),
                                            head_lengths(ctx, fill(at_width.mask)))))
      if _warm_key(inputs, k) not in warm:
        _warm(ctx, trainable, opt_state, ref_trainable, inputs)
        warm.add(_warm_key(inputs, k))
    warm.add(("width", rows, w, k))


def _warm(ctx, trainable, opt_state, ref_trainable, inputs: UpdateInputs):
  """`warm_update`'s compiles for one width and head length."""
  ref = reference_pass(ctx, ref_trainable, inputs, lower=True).compile()
  # zeros where the reference log-probs will be, placed as the compiled pass returns them
  # (a jitted output is committed to its placement when any argument is)
  ref_lp = jnp.zeros(ref.out_info.shape, ref.out_info.dtype)
  if any(getattr(x, "committed", False) for x in jax.tree.leaves(
      (ref_trainable, ctx.frozen, inputs.tokens, inputs.hidden, inputs.targets))):
    ref_lp = jax.device_put(ref_lp, ref.output_shardings)
  batch = update_batch(ctx, inputs, ref_lp, np.zeros(len(inputs.mask), np.float32))
  shapes = set()
  for mb in mini_batches(batch, ctx.settings.mini_batches):
    if mb.tokens.shape not in shapes:   # later epochs and equal slices reuse the program
      shapes.add(mb.tokens.shape)
      step = ctx.train_step.lower(trainable, ctx.frozen, opt_state, mb,
                                  head_positions=inputs.head_update).compile()
      if ctx.mesh is not None:
        # later steps pass the state as the step returns it, placed on the mesh by the
        # step's own rules (not always as given here): compile for that too
        new_state, new_opt, _ = step.out_info
        ctx.train_step.lower(new_state, ctx.frozen, new_opt, mb,
                             head_positions=inputs.head_update).compile()
