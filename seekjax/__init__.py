"""seekjax: teach a small language model to seek help from a large one, with RL in JAX.

Public API (README.md, "Python API"): load_model, logits, generate, rollout_config, rollout, helpers.
"""
from seekjax import helpers
from seekjax.models.api import Model, load_model, logits, random_model
from seekjax.models.config import ModelConfig
from seekjax.models.generate import generate, generate_ids
from seekjax.rollout import Episodes, rollout, rollout_config

__all__ = ["Episodes", "Model", "ModelConfig", "generate", "generate_ids", "helpers",
           "load_model", "logits", "random_model", "rollout", "rollout_config"]
