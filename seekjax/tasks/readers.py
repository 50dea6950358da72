"""Read local QA files (JSONL, JSON array, Parquet) into example dicts, row by row.

``read_qa(path, format)`` never returns a silently wrong row. A malformed row (missing
field, bad JSON, empty question, invalid UTF-8, wrong type, duplicate id) is either
skipped with a ``MalformedRowWarning`` naming ``file:line`` and the problem (default;
the first ``MAX_ROW_WARNINGS`` rows per file, and a summary warning counts them all),
or, with ``strict=True``, raises ``MalformedRowError``, a ``ValueError`` whose one-line
message is ``file:line: problem``. Problems that make the rest of a file unreadable
(a syntax error inside a JSON array, an unknown format, a missing file) raise
``QAFileError`` in both modes.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import warnings
from typing import Iterator

from seekjax.tasks.qa_formats import PARSERS, RowProblem

FORMATS = tuple(PARSERS)
MAX_ROW_WARNINGS = 20  # per file; the summary warning counts every skipped row


class QAFileError(ValueError):
  """A QA file that cannot be read; str() is one line: ``path[:line]: problem``."""

  def __init__(self, path: str, problem: str, line: int | None = None):
    self.path, self.line, self.problem = path, line, problem
    where = path if line is None else f"{path}:{line}"
    super().__init__(f"{where}: {problem}")


class MalformedRowError(QAFileError):
  """One malformed row under ``strict=True``; ``.line`` is 1-based."""


class MalformedRowWarning(UserWarning):
  """Emitted once per skipped row (and once per file as a summary)."""


@dataclasses.dataclass
class ReadStats:
  """What ``read_qa_with_stats`` saw: rows read, kept, and skipped by reason."""

  path: str
  rows: int = 0
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  excluded: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _has_surrogate(value) -> bool:
  """True if any string inside ``value`` holds a lone surrogate (from invalid UTF-8)."""
  if isinstance(value, str):
    return any("\ud800" <= ch <= "\udfff" for ch in value)
  if isinstance(value, dict):
    return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
  if isinstance(value, list):
    return any(_has_surrogate(v) for v in value)
  return False


def _iter_jsonl(text: str) -> Iterator[tuple[int, object]]:
  """Yields (line, parsed row or RowProblem) for each non-blank line."""
  for lineno, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      yield lineno, json.loads(line)
    except json.JSONDecodeError as e:
      yield lineno, RowProblem(f"bad JSON ({e.msg} at column {e.colno})")


def _skip_ws(text: str, pos: int) -> int:
  """Returns the first position at or after ``pos`` that is not JSON whitespace."""
  while pos < len(text) and text[pos] in " \t\r\n":
    pos += 1
  return pos


def _expect_end(text: str, pos: int, path: str, line_at) -> None:
  """Returns None if only whitespace follows ``pos``; raises QAFileError otherwise.

  Catches a JSONL file whose first row happens to be an array, which would otherwise
  be read as a one-array file with every later line silently ignored.
  """
  end = _skip_ws(text, pos)
  if end < len(text):
    raise QAFileError(path, "unexpected content after the top-level JSON array "
                      "(a JSONL file whose first row is an array?)", line_at(end))


def _iter_json_array(text: str, path: str) -> Iterator[tuple[int, object]]:
  """Yields (line where the element starts, element) from a top-level JSON array."""
  decoder = json.JSONDecoder()
  pos = _skip_ws(text, 0)
  if pos >= len(text) or text[pos] != "[":
    raise QAFileError(path, "expected a JSON array ('[') or one JSON object per line", 1)
  line, counted = 1, 0

  def line_at(p):
    """Returns the 1-based line of position ``p`` (positions must not decrease)."""
    nonlocal line, counted
    line += text.count("\n", counted, p)
    counted = p
    return line

  pos = _skip_ws(text, pos + 1)
  if pos < len(text) and text[pos] == "]":
    _expect_end(text, pos + 1, path, line_at)
    return
  while True:
    start_line = line_at(pos)
    try:
      element, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise QAFileError(path, f"bad JSON in array ({e.msg}); the rest of the file is unreadable",
                        e.lineno) from None
    yield start_line, element
    pos = _skip_ws(text, pos)
    if pos < len(text) and text[pos] == ",":
      pos = _skip_ws(text, pos + 1)
    elif pos < len(text) and text[pos] == "]":
      _expect_end(text, pos + 1, path, line_at)
      return
    else:
      raise QAFileError(path, "expected ',' or ']' between array elements", line_at(pos))


def _iter_parquet(path: str) -> Iterator[tuple[int, object]]:
  """Yields (row number, row dict) from a Parquet file (needs pyarrow)."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise QAFileError(path, "reading Parquet needs pyarrow (pip install pyarrow)") from None
  for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
    yield i, row


def _iter_rows(path: str) -> Iterator[tuple[int, object]]:
  """Yields (line, row) pairs; a row may be a RowProblem for a line that failed to parse."""
  if path.endswith(".parquet"):
    yield from _iter_parquet(path)
    return
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", errors="surrogateescape")
  if text.startswith("\ufeff"):
    text = text[1:]
  if text.lstrip().startswith("["):
    yield from _iter_json_array(text, path)
  else:
    yield from _iter_jsonl(text)


def _convert(row, parser) -> dict | None:
  """Returns the parsed example (None = deliberately excluded); raises RowProblem."""
  if isinstance(row, RowProblem):
    raise row
  if not isinstance(row, dict):
    raise RowProblem(f"row is a JSON {type(row).__name__}, not an object")
  if _has_surrogate(row):
    raise RowProblem("invalid UTF-8 bytes")
  return parser(row)


# pylint: disable-next=redefined-builtin
def read_qa_with_stats(path: str, format: str,
                       strict: bool = False) -> tuple[list[dict], ReadStats]:
  """Returns (examples, stats) read from ``path`` in the given layout; see ``read_qa``."""
  if format not in PARSERS:
    raise QAFileError(path, f"unknown QA format {format!r}; expected one of {', '.join(FORMATS)}")
  if not os.path.isfile(path):
    raise QAFileError(path, "no such file")
  parser, stats = PARSERS[format], ReadStats(path)
  examples, seen_ids = [], set()
  for line, row in _iter_rows(path):
    stats.rows += 1
    try:
      example = _convert(row, parser)
      if example is not None and example["id"] in seen_ids:
        raise RowProblem(f"duplicate id {example['id']!r}")
    except RowProblem as problem:
      if strict:
        raise MalformedRowError(path, str(problem), line) from None
      stats.skipped[str(problem).split(" (")[0]] += 1
      if sum(stats.skipped.values()) <= MAX_ROW_WARNINGS:
        warnings.warn(f"{path}:{line}: skipped malformed {format} row: {problem}",
                      MalformedRowWarning, stacklevel=3)
      continue
    if example is None:
      stats.excluded["unanswerable"] += 1
      continue
    seen_ids.add(example["id"])
    examples.append(example)
  stats.kept = len(examples)
  skipped = sum(stats.skipped.values())
  if skipped or stats.excluded:
    shown = f", first {MAX_ROW_WARNINGS} listed above" if skipped > MAX_ROW_WARNINGS else ""
    warnings.warn(f"{path}: kept {stats.kept} of {stats.rows} {format} rows (skipped {skipped} "
                  f"malformed{shown}: {dict(stats.skipped)}; excluded: {dict(stats.excluded)})",
                  MalformedRowWarning, stacklevel=3)
  return examples, stats


# pylint: disable-next=redefined-builtin
def read_qa(path: str, format: str, strict: bool = False) -> list[dict]:
  """Returns the examples of a local QA file in one of ``FORMATS``.

  Args:
    path: a .jsonl file (one JSON object per line), a .json file holding one JSON
      array (how HotpotQA and 2WikiMultihopQA ship), or a .parquet file (needs pyarrow).
      The container is detected from the content, not the extension (except Parquet).
    format: "hotpotqa" | "2wiki" | "musique" | "popqa" | "gsm8k" | "private_qa" (the
      private rows that ``task.privacy`` synthesizes, private facts included).
    strict: raise ``MalformedRowError`` on the first malformed row instead of skipping.

  Returns:
    A list of example dicts (schema in ``seekjax.tasks.schema``), in file order.
    MuSiQue rows with ``answerable: false`` are excluded (counted in one warning).
  """
  return read_qa_with_stats(path, format, strict)[0]
