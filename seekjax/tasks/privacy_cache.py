"""Synthesized privacy rows cached as JSONL while they are made, so a rerun asks nothing twice.

``RowCache(path)`` keeps two files, read and written through ``etils.epath`` (a local
path or a bucket URI such as gs://):

  <path>                    the kept private rows, one example dict per line (the schema
                            of ``tasks/schema.py``), readable as the ``private_qa`` format;
  <stem>.dropped.jsonl      {"source_id", "source_question", "reason"} per dropped row.

Each outcome is written as soon as it is known: appended to a local file (one line,
flushed), or, on an object store (no append), by rewriting the whole object. An entry
answers an example only when its source id and source question both match, so an edited
source file is synthesized afresh. A crash can leave a torn last line: loading drops it
(and any unreadable line) and rewrites the file without it.
"""
from __future__ import annotations

import json
import os

from etils import epath

from seekjax.tasks.schema import validation_errors

URI_SCHEMES = ("gs://", "s3://", "az://", "hf://")


def dropped_path(path) -> epath.Path:
  """The drop log beside the rows file: x.jsonl -> x.dropped.jsonl."""
  path = epath.Path(path)
  stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
  return path.parent / f"{stem}.dropped.jsonl"


def _is_remote(path) -> bool:
  return os.fspath(path).startswith(URI_SCHEMES)


def _read_lines(path: epath.Path) -> tuple[list[dict], bool]:
  """(the JSON objects of the file's complete lines, whether any line was discarded)."""
  if not path.exists():
    return [], False
  text = path.read_text()
  lines = text.split("\n")
  torn = lines.pop()   # "" when the file ends with a newline
  out, discarded = [], bool(torn.strip())
  for line in lines:
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError:
      discarded = True
      continue
    if isinstance(value, dict):
      out.append(value)
    else:
      discarded = True
  return out, discarded


def _dump(value: dict) -> str:
  return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _JsonlFile:
  """One JSONL file that grows a line at a time (append locally, rewrite remotely)."""

  def __init__(self, path: epath.Path, lines: list[dict], rewrite: bool):
    self.path = path
    self.lines = [_dump(v) for v in lines]
    if rewrite:
      self._write_all()

  def _write_all(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.path.write_text("".join(line + "\n" for line in self.lines))

  def append(self, value: dict) -> None:
    line = _dump(value)
    self.lines.append(line)
    if _is_remote(self.path):
      self._write_all()
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with self.path.open("a") as f:
      f.write(line + "\n")
      f.flush()


class RowCache:
  """Outcomes of privacy synthesis by source example: a kept row, or a drop reason."""

  def __init__(self, path):
    self.path = epath.Path(path)
    rows, torn_rows = _read_lines(self.path)
    drops, torn_drops = _read_lines(dropped_path(self.path))
    self._entries: dict[str, tuple[str, dict | None, str]] = {}
    for row in rows:
      meta = row.get("meta")
      if validation_errors(row) or not isinstance(meta, dict) or "source_id" not in meta:
        continue
      self._entries[str(meta["source_id"])] = (meta.get("source_question"), row, "kept")
    for drop in drops:
      if "source_id" in drop and isinstance(drop.get("reason"), str):
        self._entries[str(drop["source_id"])] = (drop.get("source_question"), None,
                                                 drop["reason"])
    self._rows = _JsonlFile(self.path, rows, torn_rows)
    self._drops = _JsonlFile(dropped_path(self.path), drops, torn_drops)

  def __len__(self) -> int:
    return len(self._entries)

  def has(self, example: dict) -> bool:
    """Whether the cache holds this example's outcome (same id and question)."""
    entry = self._entries.get(str(example["id"]))
    return entry is not None and entry[0] == example["question"]

  def get(self, example: dict) -> tuple[dict | None, str]:
    """(the cached private row or None, its outcome: "kept" or the drop reason)."""
    _, row, outcome = self._entries[str(example["id"])]
    return (None if row is None else dict(row)), outcome

  def put(self, example: dict, row: dict | None, outcome: str) -> None:
    """Record an example's outcome, on disk before this returns."""
    if row is not None:
      self._rows.append(row)
    else:
      self._drops.append({"source_id": example["id"], "source_question": example["question"],
                          "reason": outcome})
    self._entries[str(example["id"])] = (example["question"], row, outcome)
