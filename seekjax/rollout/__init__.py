"""The multi-turn collaboration engine: jitted decoding with helper calls mid-episode."""
from seekjax.rollout.config import rollout_config
from seekjax.rollout.driver import Episodes, rollout

__all__ = ["Episodes", "rollout", "rollout_config"]
