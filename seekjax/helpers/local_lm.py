"""LocalLMHelper: a helper that runs a seekjax model in-process, optionally with retrieved facts.

All JAX work runs on one worker thread owned by the helper (a single-thread executor),
never on the event loop and never inside a JAX callback: ``respond`` only queues a
request and awaits a future, so the SLM's rollout loop, whose io_callback hands work to
the host pool, cannot deadlock on it. Requests that arrive while the worker is busy are
batched into one ``generate_ids`` call.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time

from seekjax import protocol
from seekjax.helpers.base import Helper, HelperReply, History
from seekjax.helpers.knowledge import FactIndex


def facts_prompt(system: str, facts: list[str]) -> str:
  """The helper's system prompt with reference facts appended (unchanged when none)."""
  if not facts:
    return system
  listed = "\n".join(f"- {f}" for f in facts)
  return f"{system}\n\nFacts you know that may help:\n{listed}"


class LocalLMHelper(Helper):
  """An in-process JAX LM as the helper.

  model: a seekjax Model with a tokenizer (``seekjax.load_model(...)``).
  facts: optional fact base; the top_k facts BM25 retrieves for a message go into the
    system prompt (a weak local model made knowledgeable, for scaling studies).
  """

  name = "local_lm"

  def __init__(self, model, *, facts: list[str] | None = None, top_k: int = 2,
               max_new_tokens: int = 128, temperature: float = 0.0, max_batch: int = 16,
               system_prompt: str = protocol.HELPER_SYSTEM_PROMPT, seed: int = 0):
    if model.tokenizer is None:
      raise ValueError("LocalLMHelper needs a model with a tokenizer")
    self.model = model
    self.top_k, self.max_new_tokens, self.temperature = top_k, max_new_tokens, temperature
    self.max_batch, self.system_prompt, self.seed = max_batch, system_prompt, seed
    self.index = FactIndex(facts) if facts else None
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="seekjax-local-lm")
    self._pending: collections.deque = collections.deque()
    self._lock = threading.Lock()
    self._batches = 0
    self.batch_sizes: list[int] = []   # one entry per generate call, for tests and stats

  def __repr__(self) -> str:
    return (f"LocalLMHelper(model={self.model.name!r}, facts={bool(self.index)}, "
            f"top_k={self.top_k}, max_new_tokens={self.max_new_tokens})")

  def retrieve(self, message: str) -> list[str]:
    if self.index is None:
      return []
    return [self.index.facts[i] for i in self.index.top(message, self.top_k)]

  def _drain(self) -> None:
    """Worker thread: generate for every pending request (up to max_batch) at once."""
    with self._lock:
      batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
    batch = [(chat, fut) for chat, fut in batch if fut.set_running_or_notify_cancel()]
    if not batch:
      return
    from seekjax.models.generate import generate_ids  # pylint: disable=import-outside-toplevel
    tok = self.model.tokenizer
    try:
      prompts = [tok.encode_chat(chat) for chat, _ in batch]
      # the weights per layer (and packed) are built on the first call and kept on the model
      outs = generate_ids(self.model, prompts, max_new_tokens=self.max_new_tokens,
                          temperature=self.temperature, seed=self.seed + self._batches)
      self._batches += 1
      self.batch_sizes.append(len(batch))
    except BaseException as e:  # pylint: disable=broad-except  (reported per request)
      for _, fut in batch:
        fut.set_exception(e)
      return
    for (_, fut), ids in zip(batch, outs):
      ids = [i for i in ids if i not in tok.eos_ids]
      fut.set_result((tok.decode(ids, skip_special_tokens=True), len(ids)))

  def _submit(self, chat: list[dict]) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    with self._lock:
      self._pending.append((chat, fut))
    self._executor.submit(self._drain)
    return fut

  async def acomplete(self, messages: list[dict]) -> tuple[str, int | None, str | None]:
    """Raw completion of chat messages: (text, generated tokens, error or None)."""
    try:
      text, tokens = await asyncio.wrap_future(self._submit(messages))
      return text, tokens, None
    except asyncio.CancelledError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      return "", None, f"exception:{type(e).__name__}"

  async def respond(self, message: str, history: History) -> HelperReply:
    start = time.perf_counter()
    system = facts_prompt(self.system_prompt, self.retrieve(message))
    text, tokens, error = await self.acomplete(protocol.helper_messages(message, history, system))
    latency = time.perf_counter() - start
    if error is not None:
      return HelperReply("info", protocol.HELPER_UNAVAILABLE_TEXT, 0, latency, error)
    reply = protocol.parse_helper_reply(text)
    reply.tokens, reply.latency = tokens, latency
    return reply

  def close(self) -> None:
    """Stop the worker for good; requests still queued fail with "exception:RuntimeError".

    For the helper's owner, at the end of the run; a helper pool never calls it.
    """
    self._executor.shutdown(wait=True, cancel_futures=True)
    with self._lock:
      rest = list(self._pending)
      self._pending.clear()
    for _, fut in rest:
      if fut.set_running_or_notify_cancel():
        fut.set_exception(RuntimeError("LocalLMHelper is closed"))

  async def aclose(self) -> None:
    await asyncio.get_running_loop().run_in_executor(None, self.close)
