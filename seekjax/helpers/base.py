"""The helper interface: an LLM (or stand-in) that the SLM may message mid-episode.

A helper is anything with one async method, ``respond(message, history)``. It never
sees the user's question, only what the SLM chose to send. It answers with a
``HelperReply``: either a request for missing context (``kind="need"``) or useful
information (``kind="info"``). Failures are reported in ``error``, never raised into
the rollout engine (the pool in ``seekjax.rollout`` also guards against raising).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

# The reply and history types are the protocol's (shared with the rollout); re-exported.
from seekjax.protocol import REPLY_KINDS, HelperReply, History  # noqa: F401


class Usage(NamedTuple):
  """The token usage one chat completion reported (None: the server did not say)."""

  prompt_tokens: int | None = None
  completion_tokens: int | None = None


def usage_totals(replies) -> dict:
  """{helper_prompt_tokens, helper_completion_tokens}: the served usage summed over
  HelperReplies, given flat or as one list per episode. A reply shared by several
  episodes (a forced turn, asked once per question) is one call, counted once."""
  flat = [r for x in replies for r in (x if isinstance(x, (list, tuple)) else [x])]
  flat = list({id(r): r for r in flat}.values())
  return {"helper_prompt_tokens": sum(r.prompt_tokens for r in flat),
          "helper_completion_tokens": sum(r.completion_tokens for r in flat)}


class HelperUnusable(RuntimeError):
  """The helper cannot serve a run at all (refused key, no server); one line, no retry."""


class Helper(abc.ABC):
  """An LLM helper. Subclasses implement ``respond``."""

  name: str = "helper"

  @abc.abstractmethod
  async def respond(self, message: str, history: History) -> HelperReply:
    """Answer one SLM message. Must not block the event loop for long."""

  async def probe(self) -> None:
    """Check, before a run loads its model, that the helper can answer at all; raises
    HelperUnusable with a one-line reason. Helpers without a network endpoint (the
    knowledge base, a local LM) have nothing to check."""

  async def aclose(self) -> None:
    """Release resources (HTTP clients, threads). Optional.

    Only the helper's owner (whoever built it) calls this, once, at the end of the run;
    a helper pool never does (see `release_loop`).
    """

  async def release_loop(self) -> None:
    """Release resources bound to the running event loop (HTTP clients). Optional.

    A helper pool calls this on its own loop before that loop stops. The helper must stay
    usable: its next call, on any loop, makes such resources anew.
    """


@dataclasses.dataclass
class LeakVerdict:
  """A privacy judge's decision on an episode's messages.

  leak: whether the messages leak the user's private information.
  reason: a short explanation.
  matched: the private spans found in the messages (rule judge; empty for the LLM judge).
  error: None, or why no real decision was made ("unparseable", "backend:<error>").
    A verdict with an error has leak=False but must not be read as "no leak".
  """

  leak: bool
  reason: str = ""
  matched: list = dataclasses.field(default_factory=list)
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.error is None
