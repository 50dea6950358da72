"""LLM helpers the SLM can message, and privacy-leak judges."""
from seekjax.helpers.base import Helper, HelperReply, HelperUnusable, History, LeakVerdict
from seekjax.helpers.judges import LLMLeakJudge, RuleLeakJudge, parse_judge_output
from seekjax.helpers.knowledge import FactIndex, KnowledgeHelper
from seekjax.helpers.local_lm import LocalLMHelper
from seekjax.helpers.openai_helper import OpenAIHelper

__all__ = ["FactIndex", "Helper", "HelperReply", "HelperUnusable", "History", "KnowledgeHelper",
           "LLMLeakJudge", "LeakVerdict", "LocalLMHelper", "OpenAIHelper", "RuleLeakJudge",
           "parse_judge_output"]
