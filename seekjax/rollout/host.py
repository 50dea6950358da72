"""The host side of a rollout: helper hand-off from the decode loop, feedback ids.

The decode loop's io_callback lands in `Host.submit`, which parses each closed message,
checks its limits and starts the helper call on the pool without waiting; the driver
later takes ready replies (`Host.take_feedback`) and turns them into the token ids the
SLM reads (`feedback_ids`, which SFT demonstrations use too).
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from seekjax import protocol
from seekjax.protocol import HelperReply
from seekjax.rollout.pool import HelperPool

TIMED_PHASES = ("prefill", "warm_up", "decode", "compact", "append", "host")   # seconds
PHASES = TIMED_PHASES + ("decode_calls", "decode_row_steps")                  # + counts


class Host:
  """Host side of one rollout: turns closed messages into helper calls and feedback ids."""

  def __init__(self, tokenizer, pool: HelperPool, cfg, num_rows: int):
    self.tok = tokenizer
    self.pool = pool
    self.cfg = cfg
    self.messages = [[] for _ in range(num_rows)]
    self.replies = [[] for _ in range(num_rows)]
    self.refusals = [[] for _ in range(num_rows)]
    self.immediate: dict[int, HelperReply] = {}
    self.lock = threading.Lock()
    self.submit_lock = threading.Lock()
    self.callback_error: BaseException | None = None
    self.wait_time = 0.0
    self.times = collections.Counter(dict.fromkeys(PHASES, 0.0))   # Episodes.phase_times

  def submit(self, closed, window, window_len, rows):
    """Called from the decode loop's io_callback. Never raises, never waits (unless blocking).

    rows: int[B], each batch row's host id (batch rows and host rows differ once the batch
    is compacted). When the loop runs per shard, each shard calls with only its own rows,
    from its own thread, possibly at the same time as others.
    """
    try:
      window, rows = np.asarray(window), np.asarray(rows)
      with self.submit_lock:
        for row in np.flatnonzero(np.asarray(closed)):
          text = self.tok.decode(window[row, :int(window_len[row])])
          self._request(int(rows[row]), text)
    except BaseException as e:  # noqa: BLE001 - surfaced by the driver after the loop
      self.callback_error = e
    return np.asarray(closed, np.int32)

  def _request(self, row: int, turn_text: str):
    action = protocol.parse_slm_turn(turn_text)
    sent = len(self.messages[row])
    n_tokens = len(self.tok.encode(action.text)) if action.kind == "message" else 0
    action = protocol.check_limits(action, n_tokens, self.cfg.max_message_tokens, sent,
                                   self.cfg.max_turns)
    if action.kind != "message" or action.error is not None:
      with self.lock:  # refused before the helper: defined feedback, nothing sent
        self.refusals[row].append(action.text)
        self.immediate[row] = protocol.limit_feedback(action.error or protocol.NO_ANSWER)
      return
    with self.lock:
      history = list(zip(self.messages[row], self.replies[row]))
      self.messages[row].append(action.text)
    self.pool.submit(row, action.text, history)
    if self.cfg.blocking:  # benchmark mode: what a blocking callback would cost
      self.pool.wait_any()
      while row not in self.pool.ready():
        self.pool.wait_any(0.01)

  def ready_rows(self, parked) -> list[int]:
    """The host rows among `parked` (host row ids) whose feedback is ready."""
    with self.lock:
      rows = set(self.immediate) | set(self.pool.ready())
    return sorted(rows & set(parked))

  def take_feedback(self, row: int) -> tuple[str, str]:
    """(feedback text, reply kind) for a row whose reply is ready."""
    with self.lock:
      if row in self.immediate:
        return self.immediate.pop(row), "info"
    reply = self.pool.take(row)
    self.replies[row].append(reply)
    return protocol.format_feedback(reply, special_tokens=self.tok.special_tokens), reply.kind

def feedback_ids(tok, text: str, kind: str, max_tokens: int) -> list[int]:
  """Token ids of a feedback chunk (plus a newline), as the SLM will read them.

  No special id can survive (the text was sanitized already; this is the last guard),
  and chunks over `max_tokens` are cut with a closing marker. SFT demonstrations use
  this same function, so cold start and rollout see identical feedback ids.
  """
  special = set(tok.eos_ids) | {tok.token_to_id(t) for t in tok.special_tokens}
  ids = [i for i in tok.encode(text + "\n") if i not in special]
  if len(ids) > max_tokens:
    tail = tok.encode(f"{protocol.TRUNCATION_MARKER}</{kind}></feedback>\n")
    ids = ids[:max(max_tokens - len(tail), 0)] + tail
  return ids


def forced_prefixes(tok, pool, forced, max_feedback_tokens):
  """Run the forced turns' helper calls; returns per-question (ids, messages, replies)."""
  out = []
  for q, turns in enumerate(forced):
    ids, messages, replies = [], [], []
    for turn_text, message in turns:
      pool.submit(-1 - q, message, list(zip(messages, replies)))
      reply = pool.wait(-1 - q)
      messages.append(message)
      replies.append(reply)
      fb = protocol.format_feedback(reply, special_tokens=tok.special_tokens)
      ids += tok.encode_text(turn_text) + feedback_ids(tok, fb, reply.kind, max_feedback_tokens)
    out.append((ids, messages, replies))
  return out
