"""The memory plan: what one device holds for a config, from the model's shape alone.

`python -m seekjax.plan --config=configs/X.py --devices=N --hbm_gib=G [--prompt_tokens=256]
[--config.k=v ...]` prints a per-device table and ends with `fits: yes` (exit 0) or `fits: no` (exit 1);
`seekjax.train` runs `check_fits` at start and refuses a config that cannot fit, in one
line naming the largest term and the config key to turn.

The model's shape comes from `config.json` (an HF dir; no weights are read), a .gguf's
metadata, the embedded/tiny names, or a small table of known shapes (KNOWN) matched by
the path's last component, so `/path/to/Qwen3-1.7B` plans without the files.

Terms, in bytes per device. p = bytes of model.dtype; m = bytes of model.master_dtype (the
trainable part, its gradients and optimizer state); P = params; Pt = trainable params;
leaves are split by `sharding.PARAM_RULES` over (fsdp, tensor), a dim the axis does not
divide stays whole (LoRA adapters are replicated). R = rl.questions_per_step *
rl.group_size episodes; rows split over data*fsdp; t = tensor; L = layers, Lg = layers
under the gradient (top_n: top_n, else L); d, f, H, Kv, hd, V as in config.json.
  held all run:
    params            (P - Pt) * p + Pt * m / shards (LoRA: P * p; its adapters are Pt)
    reference params  Pt * p / shards  (the frozen reference copy of the trainable part,
                      kept in model.dtype: `trainable.reference_copy`)
    optimizer state   2 * Pt * m / shards  (Adam mu and nu take the params' dtype: optax)
  rollout (the decode loop):
    rollout params    P * p when decoding per shard (tensor 1, several rows shards: every
                      device gathers the whole model); else a merged copy for top_n/LoRA,
                      and for full when m != p (the params cast to model.dtype)
    kv cache          2 * L * Kv/t * hd * p * r * T, r = ceil(R / (data*fsdp)) rows per
                      device, or rollout.max_rows_per_device when smaller (waves)
    frozen output     top_n with rl.reuse_rollout_hidden: r * T * d * p, the frozen layers'
                      output of every token, kept for the update
  update (one micro-batch of b = ceil(R / mini_batches / micro_batches / (data*fsdp)) rows):
    gradients         2 * Pt * m / shards  (the accumulator and one micro-batch's), and
                      Pt * p when m != p (the trainable part cast to model.dtype)
    activations       per layer and token, a layer keeps for its backward about
                        n = 8d + 4(H + 2Kv)hd/t + H hd/t + 4f/t elements in p (norm inputs
                        and outputs, q/k/v before and after norm and RoPE, attention
                        output, gate, its sigmoid, up and the product), and H/t * T
                        attention scores: fp32 masked scores and softmax, and the
                        probabilities in p.
                      layer = b * T * (n * p + H/t * T * (8 + p))
                      remat:    Lg * b*T*d*p (the residual saved per layer) + layer
                      no remat: Lg * layer
                      both add b * H/t * T^2 * 16 (fp32 scores, softmax and their two
                      gradients in one layer's backward), 2 * one layer's weights / t
                      (gathered over fsdp, and their gradient), and for top_n the frozen
                      layers' output ceil(R / (data*fsdp)) * T * d * p, held for the step.
                      Checked against XLA's memory analysis of the compiled step on CPU
                      (tests/test_plan.py): within [1x, 2x] of it; remat is the loose side.
    logits            b * K * V/t * 4  (fp32 logits at the K loss positions,
                      `step.compact_positions`; neither `losses.logprobs_and_entropy`, for
                      a head that trains, nor `losses.head_logprobs_and_entropy`, for a
                      frozen one, materialises a log-softmax: checked against XLA's
                      memory analysis, tests/test_plan.py)
  T = bucket(bucket(prompt_tokens) + episode_budget, 64) as the rollout sizes its cache
  (`rollout.config.cache_length`)
  (prompt_tokens: an assumption, 256 by default: the protocol's system prompt and a short
  question); K = min(`rollout.config.loss_positions`, T): (max_turns + 1) *
  max_new_tokens rounded up to a multiple of 16.
peak = held + max(rollout, update): the cache is freed before the update runs. Assumed:
the rollout's rows spread over every device (on every host), and the reference pass
(forward only) is micro-batched like the update, so it needs less than the update.
Not counted: allocator fragmentation, LoRA's merged target weights in the update, the
episode buffers on the host.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import types

from seekjax import configlib
from seekjax.models import sharding
from seekjax.models.config import ModelConfig
from seekjax.shapes import bucket

GIB = 2 ** 30
PHASES = ("held", "rollout", "update")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}

_QWEN3 = dict(arch="qwen3", qk_norm=True, vocab_size=151936, head_dim=128, num_kv_heads=8,
              rope_theta=1e6, max_position_embeddings=40960, rms_norm_eps=1e-6)
# Shapes of named models, used when model.path is not on disk (from their config.json).
KNOWN = {
    "qwen3-0.6b": dict(_QWEN3, hidden_size=1024, num_layers=28, num_heads=16,
                       intermediate_size=3072, tie_embeddings=True),
    "qwen3-1.7b": dict(_QWEN3, hidden_size=2048, num_layers=28, num_heads=16,
                       intermediate_size=6144, tie_embeddings=True),
    "qwen3-4b": dict(_QWEN3, hidden_size=2560, num_layers=36, num_heads=32,
                     intermediate_size=9728, tie_embeddings=True),
    "qwen3-8b": dict(_QWEN3, hidden_size=4096, num_layers=36, num_heads=32,
                     intermediate_size=12288, tie_embeddings=False),
    "smollm2-135m": dict(arch="llama", vocab_size=49152, hidden_size=576, num_layers=30,
                         num_heads=9, num_kv_heads=3, head_dim=64, intermediate_size=1536,
                         rope_theta=1e5, rms_norm_eps=1e-5, tie_embeddings=True,
                         max_position_embeddings=8192),
}


class PlanError(configlib.ConfigError):
  """A config the plan refuses (it does not fit) or cannot read; one line."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One term of the plan: bytes per device, the phase it lives in, the key that shrinks it."""

  name: str
  bytes: int
  phase: str   # held | rollout | update
  knob: str


def model_shape(path: str, dtype: str) -> tuple[ModelConfig, str]:
  """(ModelConfig, where its shape came from) without reading any weights."""
  from seekjax.models import api, loaders  # pylint: disable=import-outside-toplevel
  from seekjax.models.errors import ModelLoadError  # pylint: disable=import-outside-toplevel
  try:
    if os.path.isfile(os.path.join(path, "config.json")):
      return loaders.config_from_hf(path, dtype), f"{os.path.join(path, 'config.json')}"
    if path.endswith(".gguf") and os.path.isfile(path):
      return loaders.config_from_gguf(loaders.open_gguf(path), path, dtype), f"{path} metadata"
  except ModelLoadError as e:
    raise PlanError(f"plan: {e}") from None
  if path == "tiny-random":
    return api.TINY_CONFIG.replace(dtype=dtype), "tiny-random (built in)"
  name = os.path.basename(os.path.normpath(path)).lower()
  if name in KNOWN:
    where = "embedded" if path == name else f"no config.json at {path}"
    return ModelConfig(dtype=dtype, **KNOWN[name]), f"known shape {name} ({where})"
  raise PlanError(f"plan: config.model.path {path!r} has no config.json and is not a known "
                  f"shape ({', '.join(sorted(KNOWN))})")


def mesh_axes(shape, devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) for `devices`, filling one -1 as `sharding.make_mesh` does."""
  shape = [int(s) for s in shape]
  if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise PlanError(f"plan: config.model.mesh_shape {tuple(shape)} must be (data, fsdp, tensor) "
                    "with at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape and devices % known == 0:
    shape[shape.index(-1)] = devices // known
  if math.prod(shape) != devices:
    raise PlanError(f"plan: config.model.mesh_shape {tuple(shape)} does not fit {devices} devices")
  return tuple(shape)


def _sharded_bytes(model: ModelConfig, axes, p: int, keep=lambda name: True, scale=None) -> int:
  """Bytes per device of the param leaves `keep` selects, split by PARAM_RULES."""
  from seekjax.models.decoder import param_shapes  # pylint: disable=import-outside-toplevel
  mesh = types.SimpleNamespace(shape=dict(zip(sharding.AXES, axes)))
  total = 0
  for name, shape in param_shapes(model).items():
    if not keep(name):
      continue
    spec = sharding.fit_spec(mesh, shape, sharding.PARAM_RULES.get(name, (None,) * len(shape)))
    names = [a for e in spec if e for a in (e if isinstance(e, tuple) else (e,))]
    split = math.prod(mesh.shape[a] for a in names)
    n = math.prod(shape) * (scale(name) if scale else 1)
    total += int(math.ceil(n / split)) * p
  return total


def trainable_bytes(model: ModelConfig, m, axes, p: int) -> int:
  """Bytes per device of the trainable params (config.model.trainable)."""
  if m.trainable == "full":
    return _sharded_bytes(model, axes, p)
  if m.trainable == "top_n":
    top = lambda name: name.startswith("layers/")  # noqa: E731
    return _sharded_bytes(model, axes, p, lambda n: top(n) or n == "final_norm",
                          lambda n: m.top_n / model.num_layers if top(n) else 1)
  if m.trainable == "lora":
    d, q, kv, f = (model.hidden_size, model.num_heads * model.head_dim,
                   model.num_kv_heads * model.head_dim, model.intermediate_size)
    dims = dict(q=(d, q), k=(d, kv), v=(d, kv), o=(q, d), gate=(d, f), up=(d, f), down=(f, d))
    return sum(model.num_layers * m.lora_rank * sum(dims[t]) for t in m.lora_targets) * p
  raise PlanError(f"plan: config.model.trainable {m.trainable!r}; valid: full, top_n, lora")


def lengths(cfg, prompt_tokens: int) -> tuple[int, int]:
  """(T, K): the episode length the rollout allocates and the update's loss positions."""
  # pylint: disable-next=import-outside-toplevel
  from seekjax.rollout.config import cache_length, loss_positions
  r = types.SimpleNamespace(**dict(cfg.rollout.to_dict(), max_episode_tokens=cfg.rollout.get(
      "max_episode_tokens")))
  t = cache_length([prompt_tokens], r)   # as the rollout sizes its cache
  r.prompt_width = bucket(prompt_tokens)  # as a run sets it
  return t, min(loss_positions(r), t)


def plan(cfg, devices: int, prompt_tokens: int = 256) -> tuple[list[Row], dict]:
  """The rows of `cfg` on `devices` devices, and the figures they were computed from."""
  m, rl = cfg.model, cfg.rl
  p = DTYPE_BYTES.get(m.dtype)
  if p is None:
    raise PlanError(f"plan: config.model.dtype {m.dtype!r}; valid: {', '.join(DTYPE_BYTES)}")
  pm = DTYPE_BYTES.get(m.get("master_dtype", m.dtype))
  if pm is None:
    raise PlanError(f"plan: config.model.master_dtype {m.master_dtype!r}; valid: "
                    f"{', '.join(DTYPE_BYTES)}")
  model, source = model_shape(m.path, m.dtype)
  data, fsdp, tp = axes = mesh_axes(m.mesh_shape, devices)
  div = lambda n: n // tp if n % tp == 0 else n  # noqa: E731  a dim the tensor axis splits
  d, f, h, kv, hd, v = (model.hidden_size, div(model.intermediate_size), div(model.num_heads),
                        div(model.num_kv_heads), model.head_dim, div(model.vocab_size))
  shards, rows = data * fsdp, rl.questions_per_step * rl.group_size
  rows_dev = math.ceil(rows / shards)
  wave = cfg.rollout.get("max_rows_per_device", 0)   # rows beyond it roll out in waves
  rollout_rows = min(rows_dev, wave) if wave else rows_dev
  b = math.ceil(rows / max(rl.mini_batches, 1) / max(rl.micro_batches, 1) / shards)
  t, k = lengths(cfg, prompt_tokens)
  lg = m.top_n if m.trainable == "top_n" else model.num_layers
  train = trainable_bytes(model, m, axes, pm)
  cast = trainable_bytes(model, m, axes, p) if pm != p else 0   # the part cast for compute
  params = _sharded_bytes(model, axes, p)
  if m.trainable != "lora":
    params += train - trainable_bytes(model, m, axes, p)
  if tp == 1 and shards > 1 and cfg.rollout.get("per_shard_decode", True):
    rollout_params = model.num_params * p
  else:
    rollout_params = 0 if m.trainable == "full" and pm == p else _sharded_bytes(model, axes, p)
  n = 8 * d + 4 * (h + 2 * kv) * hd + h * hd + 4 * f
  layer = b * t * (n * p + h * t * (8 + p))
  saved = lg * b * t * d * p + layer if m.remat else lg * layer
  layer_weights = (model.num_params - model.vocab_size * d * (1 if model.tie_embeddings else 2)
                   ) // model.num_layers
  hidden = rows_dev * t * d * p if m.trainable == "top_n" else 0
  reuse = m.trainable == "top_n" and rl.get("reuse_rollout_hidden", True)
  act = saved + b * h * t * t * 16 + 2 * layer_weights * p // tp + hidden
  shrink_t = "lower rollout.max_new_tokens, rollout.max_turns or rollout.max_feedback_tokens"
  micro = "raise rl.micro_batches" if b > 1 else shrink_t
  fsdp_key = "raise the model.mesh_shape fsdp axis or use model.trainable=top_n/lora"
  rows_out = [
      Row("params", params, "held", "raise the model.mesh_shape fsdp axis"),
      Row("reference params", trainable_bytes(model, m, axes, p), "held", fsdp_key),
      Row("optimizer state", 2 * train, "held", fsdp_key),
      Row("rollout params", rollout_params, "rollout", "raise the model.mesh_shape tensor axis"),
      Row("kv cache", 2 * model.num_layers * kv * hd * p * rollout_rows * t, "rollout",
          "set rollout.max_rows_per_device (waves), lower rl.group_size or "
          "rl.questions_per_step, or use more devices"),
      Row("frozen output", rollout_rows * t * d * p if reuse else 0, "rollout",
          "set rl.reuse_rollout_hidden=False or rollout.max_rows_per_device (waves)"),
      Row("gradients", 2 * train + cast, "update", fsdp_key),
      Row("activations", act, "update", micro + ("" if m.remat else " or set model.remat=True")),
      Row("logits", b * k * v * 4, "update", micro),
  ]
  info = dict(model=model, source=source, axes=axes, rows=rows, rows_dev=rollout_rows, b=b, t=t,
              k=k, trainable=train, params_bytes=params)
  return rows_out, info


def phase_bytes(rows: list[Row]) -> dict:
  return {ph: sum(r.bytes for r in rows if r.phase == ph) for ph in PHASES}


def peak_bytes(rows: list[Row]) -> int:
  """held + the larger of the rollout and the update (they never live at once)."""
  ph = phase_bytes(rows)
  return ph["held"] + max(ph["rollout"], ph["update"])


def fits(rows: list[Row], hbm_gib: float) -> bool:
  return peak_bytes(rows) <= hbm_gib * GIB


def refusal(rows: list[Row], hbm_gib: float) -> str:
  """One line: the largest term and the key to turn."""
  top = max(rows, key=lambda r: r.bytes)
  return (f"plan: does not fit: {top.name} {top.bytes / GIB:.1f} GiB/device of {hbm_gib:g} GiB "
          f"(peak {peak_bytes(rows) / GIB:.1f} GiB); {top.knob}")


def table(rows: list[Row], info: dict, hbm_gib: float, devices: int, prompt_tokens: int) -> str:
  """The printed plan, ending with `fits: yes|no`."""
  mc, (data, fsdp, tp) = info["model"], info["axes"]
  ph = phase_bytes(rows)
  lines = [
      f"model: {info['source']}: {mc.num_params / 1e9:.3g}B params, {mc.dtype}, "
      f"{mc.num_layers} layers, {mc.num_kv_heads} kv heads x {mc.head_dim}",
      f"mesh: {devices} devices of {hbm_gib:g} GiB = data {data} x fsdp {fsdp} x tensor {tp}",
      f"batch: {info['rows']} episodes, {info['rows_dev']}/device in the rollout, "
      f"{info['b']}/device per micro-batch; T {info['t']} tokens (prompt {prompt_tokens} "
      f"assumed), K {info['k']} loss positions",
      f"{'term':<18} {'phase':<8} {'GiB/device':>11}"]
  lines += [f"{r.name:<18} {r.phase:<8} {r.bytes / GIB:>11.2f}" for r in rows]
  total = peak_bytes(rows)
  lines += [f"{'peak':<18} {'':<8} {total / GIB:>11.2f}  = held {ph['held'] / GIB:.2f} + "
            f"max(rollout {ph['rollout'] / GIB:.2f}, update {ph['update'] / GIB:.2f}) "
            f"of {hbm_gib:g} GiB",
            f"fits: {'yes' if total <= hbm_gib * GIB else 'no'}"]
  return "\n".join(lines)


def check_fits(cfg, devices: int, hbm_gib: float | None, prompt_tokens: int = 256):
  """Raise PlanError (one line) when `cfg` cannot fit; skip when hbm is unknown (None)."""
  if hbm_gib is None:
    return None
  rows, _ = plan(cfg, devices, prompt_tokens)
  if not fits(rows, hbm_gib):
    raise PlanError(refusal(rows, hbm_gib))
  return rows


def check_devices(cfg, prompt_tokens: int = 256):
  """`check_fits` on this run's devices (all processes') with the first device's memory
  limit; what `seekjax.train` calls at set-up. A no-op where that limit is unknown (CPU)."""
  import jax  # pylint: disable=import-outside-toplevel
  return check_fits(cfg, jax.device_count(), device_hbm_gib(), prompt_tokens)


def device_hbm_gib() -> float | None:
  """This host's first device's memory limit in GiB, or None where JAX does not say (CPU)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without memory stats
    return None
  limit = stats.get("bytes_limit")
  return limit / GIB if limit else None


def main(argv=None) -> int:
  """The CLI: 0 when the config fits, 1 when it does not, 2 for bad input."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    cfg, _, flags = configlib.parse_argv(argv, bool_flags=(), need_workdir=False,
                                         int_flags=("devices", "prompt_tokens"),
                                         str_flags=("hbm_gib",))
    if not flags["devices"] or flags["devices"] < 1 or flags["hbm_gib"] is None:
      raise PlanError("plan: --devices=N (>= 1) and --hbm_gib=G are required")
    try:
      hbm = float(flags["hbm_gib"])
    except ValueError:
      raise PlanError(f"--hbm_gib: expected a number, got {flags['hbm_gib']!r}") from None
    prompt = flags["prompt_tokens"] or 256
    rows, info = plan(cfg, flags["devices"], prompt)
  except configlib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not fits(rows, hbm):
    print(refusal(rows, hbm), file=sys.stderr)
  print(table(rows, info, hbm, flags["devices"], prompt))
  return 0 if fits(rows, hbm) else 1


if __name__ == "__main__":
  sys.exit(main())
