"""Which params train: all of them, only the top N layers, or LoRA adapters.

Every mode is a pair of pure functions over the params pytree:
  split(params) -> (trainable, frozen)     merge(trainable, frozen) -> params
so the optimizer state only covers `trainable`, and the forward pass always sees full
params. The reference policy is merge(initial trainable, frozen).

Mixed precision: the spec's `master_dtype` is what the trainable part (and so its
gradients and optimizer state) is kept in, `dtype` what the merged params compute in
(config.model.master_dtype and model.dtype). `merge` casts the trainable part to `dtype`,
so the gradient reaches the master copy through the cast: with a bfloat16 model and
float32 master weights an update smaller than bfloat16's spacing (lr 1e-6 on weights of
size 0.02, whose spacing is about 1e-4) still accumulates instead of rounding away.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MODES = ("full", "top_n", "lora")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class Trainable:
  """Static description of the trainable subset (hashable; safe as a jit static arg)."""

  mode: str = "full"
  top_n: int = 2           # top_n: the last N layers (+ final norm) train
  lora_rank: int = 8
  lora_alpha: float = 16.0
  lora_targets: tuple = ("q", "v")
  dtype: str | None = None          # what the merged params compute in; None: as given
  master_dtype: str | None = None   # what the trainable part is kept in; None: as loaded

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"trainable mode must be one of {MODES}, got {self.mode!r}")
    bad = set(self.lora_targets) - set(LORA_TARGETS)
    if bad:
      raise ValueError(f"unknown lora_targets {sorted(bad)}; valid: {LORA_TARGETS}")


def _cast(tree, dtype):
  """Floating leaves of `tree` in `dtype` (None, or already so: `tree` itself)."""
  floating = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  if dtype is None or all(x.dtype == jnp.dtype(dtype) for x in floating):
    return tree
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def compute_view(spec: Trainable, trainable):
  """The trainable part in the dtype the model computes in (differentiable)."""
  return _cast(trainable, spec.dtype)


def reference_copy(spec: Trainable, trainable):
  """A frozen copy of the trainable part for the reference policy, in the dtype the model
  computes in: it never updates, and `merge` would cast it to that dtype at every use."""
  return jax.tree.map(lambda x: x.copy(), compute_view(spec, trainable))


def reference_template(spec: Trainable, trainable):
  """The shape, dtype and sharding of `reference_copy(spec, trainable)` without reading a
  value (a restore template: the arrays may have been donated)."""
  def one(x):
    dtype = spec.dtype if spec.dtype and jnp.issubdtype(x.dtype, jnp.floating) else x.dtype
    return jax.ShapeDtypeStruct(x.shape, dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(one, trainable)


def init(spec: Trainable, params, rng):
  """Split params into (trainable, frozen); LoRA creates fresh adapters (B = 0). The
  trainable part comes back in `spec.master_dtype`."""
  trainable, frozen = _split(spec, params, rng)
  return _cast(trainable, spec.master_dtype), frozen


def _split(spec: Trainable, params, rng):
  if spec.mode == "full":
    return params, {}
  if spec.mode == "top_n":
    n_layers = params["layers"]["q"].shape[0]
    if not 0 < spec.top_n <= n_layers:
      raise ValueError(f"top_n={spec.top_n} must be in [1, {n_layers}]")
    cut = n_layers - spec.top_n
    trainable = {"layers": jax.tree.map(lambda x: x[cut:], params["layers"]),
                 "final_norm": params["final_norm"]}
    frozen = {k: v for k, v in params.items() if k not in ("final_norm",)}
    frozen = dict(frozen, layers=jax.tree.map(lambda x: x[:cut], params["layers"]))
    return trainable, frozen
  adapters = {}
  keys = jax.random.split(rng, len(spec.lora_targets))
  for name, key in zip(spec.lora_targets, keys):
    w = params["layers"][name]  # [L, in, out]
    n, d_in, d_out = w.shape
    adapters[name] = {
        "a": (jax.random.normal(key, (n, d_in, spec.lora_rank)) / jnp.sqrt(d_in)).astype(w.dtype),
        "b": jnp.zeros((n, spec.lora_rank, d_out), w.dtype),
    }
  return {"lora": adapters}, params


def merge(spec: Trainable, trainable, frozen):
  """Full params for the forward pass, in `spec.dtype`. Gradients flow only into
  `trainable`."""
  if spec.mode == "full":
    return compute_view(spec, trainable)
  if spec.mode == "top_n":
    trainable = compute_view(spec, trainable)
    layers = jax.tree.map(lambda lo, hi: jnp.concatenate([lo, hi], axis=0),
                          frozen["layers"], trainable["layers"])
    return dict(frozen, layers=layers, final_norm=trainable["final_norm"])
  scale = spec.lora_alpha / spec.lora_rank
  layers = dict(frozen["layers"])
  for name, ab in trainable["lora"].items():
    delta = jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) * scale
    layers[name] = frozen["layers"][name] + delta.astype(layers[name].dtype)
  return dict(frozen, layers=layers)


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))
