"""The decoder family's configuration: one dataclass covers Llama, SmolLM2, Qwen2/2.5 and Qwen3."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of a decoder-only transformer.

  The family differs only in a few switches:
    Llama / SmolLM2: qkv_bias=False, qk_norm=False (tied embeddings for small sizes).
    Qwen2 / Qwen2.5: qkv_bias=True.
    Qwen3:           qk_norm=True (RMSNorm per head on q and k, before RoPE).
  """

  arch: str  # "llama" | "qwen2" | "qwen3"
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  qkv_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 4096
  dtype: str = "float32"  # activation / param dtype: "float32" | "bfloat16"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def num_params(self) -> int:
    d, f, h, kv, hd = (self.hidden_size, self.intermediate_size, self.num_heads,
                       self.num_kv_heads, self.head_dim)
    attn = d * h * hd * 2 + d * kv * hd * 2
    per_layer = attn + 3 * d * f + 2 * d
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * per_layer + emb + d

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)


ARCHS = ("llama", "qwen2", "qwen3")

# HF `model_type` / GGUF `general.architecture` -> our family switches.
ARCH_FLAGS = {
    "llama": dict(arch="llama", qkv_bias=False, qk_norm=False),
    "mistral": dict(arch="llama", qkv_bias=False, qk_norm=False),
    "qwen2": dict(arch="qwen2", qkv_bias=True, qk_norm=False),
    "qwen3": dict(arch="qwen3", qkv_bias=False, qk_norm=True),
}
