"""Demonstrations as JSONL rows: the row format, its validation, a user's file, the workdir cache.

A row is one JSON object per line, in one of two forms:

  {"question": "...", "turns": ["<think>..</think><message>..</message>", ...,
                                "<think>..</think><answer>..</answer>"],
   "feedbacks": ["<feedback><info>..</info></feedback>", ...]}
  {"question": "...", "transcript": "<think>..</think><message>..</message><feedback>
                                     <info>..</info></feedback><think>..</think><answer>..</answer>"}

The second is the `transcript` of an evaluation's results.jsonl (everything after the
prompt); text after its last </answer> (an end-of-text token) is dropped. A feedback may
also be written "<info>..</info>" or "<need>..</need>"; its body is sanitised as a
helper's reply is. A row is valid when the question is a non-empty string, every turn but
the last is one <message> (nothing after its closing tag), the last is a non-empty
<answer>, and exactly one feedback sits between consecutive turns. Bad rows are dropped
and counted, never fatal.

The cache (`<workdir>/demos.jsonl`, `DemoCache`) holds the same rows with the example's
"id", plus {"id": ..., "dropped": reason} for candidates that cannot give a demo, after a
first row {"demos_for": settings} naming what the demos were made under. It is rewritten
whole (through epath, so a gs:// workdir works) as candidates finish, so a stopped or
crashed cold start keeps what it paid for and a rerun asks only for the rest.
"""
from __future__ import annotations

import collections
import json
import re
import time

from etils import epath

from seekjax import protocol
from seekjax.coldstart.sft import Demo
from seekjax.run import workdir as workdir_lib

CACHE_NAME = "demos.jsonl"
_FEEDBACK_RE = re.compile(r"^\s*(?:<feedback>)?\s*<(info|need)>(.*)</\1>\s*(?:</feedback>)?\s*$",
                          re.S)
_SPLIT_RE = re.compile(r"(<feedback>.*?</feedback>)", re.S)


class DemoFileError(ValueError):
  """A demonstrations file that cannot be read at all (one line)."""


def _feedback(text) -> tuple[str, str]:
  """(formatted feedback, kind) of a row's feedback; raises ValueError."""
  m = _FEEDBACK_RE.match(text) if isinstance(text, str) else None
  if m is None:
    raise ValueError("a feedback must be <feedback><info|need>...</info|need></feedback>")
  return protocol.format_feedback(protocol.HelperReply(m.group(1), m.group(2))), m.group(1)


def turn_error(turn, last: bool) -> str | None:
  """Why a turn is not a clean protocol turn (None when it is)."""
  if not isinstance(turn, str):
    return "a turn is not a string"
  action = protocol.parse_slm_turn(turn)
  want, close = ("answer", protocol.ANSWER_CLOSE) if last else ("message",
                                                                protocol.MESSAGE_CLOSE)
  if action.kind != want or not action.ok:
    return ("the last turn must be a non-empty <answer>" if last else
            "every turn before the last must be one non-empty <message>")
  if not turn.rstrip().endswith(close):
    return f"text after {close}"
  return None


def demo_errors(demo: Demo) -> str | None:
  """Why a demonstration is not valid (None when it is)."""
  if not isinstance(demo.question, str) or not demo.question.strip():
    return "question missing or empty"
  if not isinstance(demo.turns, list) or not demo.turns:
    return "turns missing or empty"
  if not isinstance(demo.feedbacks, list) or len(demo.feedbacks) != len(demo.turns) - 1:
    return "needs exactly one feedback between consecutive turns"
  for k, turn in enumerate(demo.turns):
    error = turn_error(turn, last=k == len(demo.turns) - 1)
    if error:
      return error
  return None


def _split_transcript(transcript: str) -> tuple[list, list]:
  parts = _SPLIT_RE.split(transcript)
  turns = [p.strip() for p in parts[0::2]]
  feedbacks = parts[1::2]
  end = turns[-1].rfind(protocol.ANSWER_CLOSE)
  if end >= 0:   # an end-of-text token after the final answer is not SLM text
    turns[-1] = turns[-1][:end + len(protocol.ANSWER_CLOSE)]
  return turns, feedbacks


def row_to_demo(row) -> Demo:
  """The demonstration of one row (module docstring); raises ValueError with the reason."""
  if not isinstance(row, dict):
    raise ValueError("not a JSON object")
  if "transcript" in row:
    if not isinstance(row["transcript"], str):
      raise ValueError("transcript is not a string")
    turns, feedbacks = _split_transcript(row["transcript"])
  else:
    turns, feedbacks = row.get("turns"), row.get("feedbacks", [])
    if not isinstance(feedbacks, list):
      raise ValueError("feedbacks is not a list")
  parsed = [_feedback(f) for f in feedbacks]
  demo = Demo(row.get("question"), turns, [p[0] for p in parsed], [p[1] for p in parsed])
  error = demo_errors(demo)
  if error:
    raise ValueError(error)
  return demo


def demo_to_row(demo: Demo, **extra) -> dict:
  return dict(extra, question=demo.question, turns=list(demo.turns),
              feedbacks=list(demo.feedbacks))


def count_line(counts: collections.Counter) -> str:
  """"reason a: 3, reason b: 1", most frequent first."""
  return ", ".join(f"{k}: {v}" for k, v in counts.most_common())


def _read_lines(path) -> list[str]:
  """The file's lines; DemoFileError (one line) when it is missing or unreadable."""
  p = epath.Path(path)
  try:
    if not p.exists():
      raise DemoFileError(f"{path} does not exist")
    return p.read_text(encoding="utf-8").splitlines()
  except DemoFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # any backend's failure is one line
    raise DemoFileError(f"{path}: unreadable ({type(e).__name__})") from None


def load_demos(path) -> tuple[list[Demo], collections.Counter]:
  """(demos, {reason: count} of dropped rows) of a user's JSONL file (module docstring).

  Raises DemoFileError when the file is missing or unreadable; blank lines are skipped.
  """
  demos, dropped = [], collections.Counter()
  for line in _read_lines(path):
    if not line.strip():
      continue
    try:
      demos.append(row_to_demo(json.loads(line)))
    except json.JSONDecodeError:
      dropped["not JSON"] += 1
    except (ValueError, TypeError) as e:
      dropped[str(e)] += 1
  return demos, dropped


class DemoCache:
  """The workdir's demonstrations cache (module docstring).

  `outcomes`: {example id: (Demo, None) | (None, why it was dropped)} read back for these `settings`; a file
  made under other settings, or an unreadable one, is ignored (one log line) and
  replaced. `add` records an outcome; the file is rewritten at most every `min_interval`
  seconds, and by `flush`. `writer`: False on processes that must not write (all but
  process 0 of a multi-host run).
  """

  def __init__(self, workdir, settings: dict, *, writer: bool = True, log=print,
               min_interval: float | None = None):
    self.path = workdir_lib.as_path(workdir) / CACHE_NAME
    self.settings = json.loads(json.dumps(settings))
    self.writer = writer
    self.min_interval = (5.0 if workdir_lib.is_remote(workdir) else 0.0) \
        if min_interval is None else min_interval
    self._rows: dict[str, dict] = {}
    self._last_write = 0.0
    self._dirty = False
    self.outcomes: dict[str, tuple] = {}
    self._read(log)

  def _read(self, log) -> None:
    try:
      if not self.path.exists():
        return
      lines = [l for l in self.path.read_text(encoding="utf-8").splitlines() if l.strip()]
      head = json.loads(lines[0]) if lines else {}
    except Exception as e:  # pylint: disable=broad-except
      log(f"cold start: {self.path} unreadable ({type(e).__name__}); building anew")
      return
    if not isinstance(head, dict) or head.get("demos_for") != self.settings:
      log(f"cold start: {self.path} was made under other settings; building anew")
      return
    for line in lines[1:]:
      try:
        row = json.loads(line)
        key = row["id"]
        outcome = ((None, str(row["dropped"])) if "dropped" in row
                   else (row_to_demo(row), None))
      except (ValueError, TypeError, KeyError):
        continue   # a damaged row: its example is asked again
      self._rows[key] = row
      self.outcomes[key] = outcome

  def add(self, key: str, demo: Demo | None, reason: str | None = None) -> None:
    self._rows[key] = (demo_to_row(demo, id=key) if demo is not None
                       else {"id": key, "dropped": reason})
    self.outcomes[key] = (demo, reason)
    self._dirty = True
    if time.monotonic() - self._last_write >= self.min_interval:
      self.flush()

  def flush(self) -> None:
    if not (self.writer and self._dirty):
      return
    lines = [json.dumps({"demos_for": self.settings}, sort_keys=True)]
    lines += [json.dumps(r, ensure_ascii=False) for r in self._rows.values()]
    self.path.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_text(self.path, "\n".join(lines) + "\n")
    self._dirty = False
    self._last_write = time.monotonic()
