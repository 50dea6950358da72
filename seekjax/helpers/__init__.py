"""LLM helpers the SLM can message, and privacy-leak judges."""
from seekjax.helpers.base import Helper, HelperReply, History

__all__ = ["Helper", "HelperReply", "History"]
