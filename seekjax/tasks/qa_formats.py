"""Row converters: one published QA layout (one parsed JSON row) -> one seekjax example.

Each ``parse_<format>(row)`` returns an example dict (see ``schema.py``), returns None
for a well-formed row that the task deliberately leaves out (an unanswerable MuSiQue
question), or raises ``RowProblem`` with a one-line description of what is wrong.
File handling, line numbers and warnings live in ``readers.py``.

Layouts (field names exactly as the datasets ship them):
  hotpotqa  _id, question, answer, supporting_facts [[title, sent_idx]],
            context [[title, [sentences]]], optional type, level
  2wiki     as hotpotqa, plus type and evidences [[subject, relation, object]]
  musique   id, question, answer, answer_aliases, paragraphs
            [{idx, title, paragraph_text, is_supporting}], optional answerable
  popqa     id, subj, prop, obj, question, possible_answers (JSON-encoded list), s_pop
  gsm8k     question, answer (rationale ending in "#### <number>")
  private_qa  seekjax example dicts (``schema.py``) with private facts, as the privacy
            synthesis writes them (``privacy_cache.py``): question, answers, id,
            private_facts (non-empty), optional context, private_spans, task, qtype,
            entity, popularity, meta
"""
from __future__ import annotations

import hashlib
import json
import math
import re

from seekjax.tasks.schema import make_example, validation_errors

_GSM_FINAL = re.compile(r"^-?\d+(?:\.\d+)?$")


class RowProblem(Exception):
  """A row that does not fit its layout; the message says what is wrong."""


def _field(row: dict, name: str, kind, *, nonempty: bool = False):
  """Returns ``row[name]`` after checking presence and type; raises RowProblem."""
  if name not in row:
    raise RowProblem(f"missing field {name!r}")
  value = row[name]
  kinds = kind if isinstance(kind, tuple) else (kind,)
  if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
    names = "/".join(k.__name__ for k in kinds)
    raise RowProblem(f"field {name!r} must be {names}, got {type(value).__name__}")
  if nonempty and isinstance(value, str) and not value.strip():
    raise RowProblem(f"field {name!r} is empty")
  return value


def _str_list(value, name: str) -> list[str]:
  """Returns ``value`` if it is a list of str; raises RowProblem otherwise."""
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise RowProblem(f"field {name!r} must be a list of strings")
  return value


def _titled_paragraphs(context) -> list[tuple[str, list[str]]]:
  """Returns [(title, sentences)] from a HotpotQA-style context; raises RowProblem."""
  if not isinstance(context, list):
    raise RowProblem("field 'context' must be a list of [title, [sentences]]")
  out = []
  for item in context:
    if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
        or not isinstance(item[1], list) or not all(isinstance(s, str) for s in item[1])):
      raise RowProblem("field 'context' must be a list of [title, [sentences]]")
    out.append((item[0], item[1]))
  return out


def _supporting_facts(value) -> list[tuple[str, int]]:
  """Returns [(title, sentence index)]; raises RowProblem on a bad layout."""
  if not isinstance(value, list) or not all(
      isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], int)
      for f in value):
    raise RowProblem("field 'supporting_facts' must be a list of [title, sentence_index]")
  return [(f[0], f[1]) for f in value]


def _render_context(paragraphs: list[tuple[str, list[str]]]) -> str:
  """Returns "Title: sentence sentence" paragraphs joined by newlines."""
  return "\n".join(f"{title}: {' '.join(s.strip() for s in sents)}".strip()
                   for title, sents in paragraphs)


def _multihop(row: dict, task: str, *, need_type: bool) -> tuple[dict, list, list]:
  """Returns (common fields, paragraphs, supporting facts) of a HotpotQA-like row."""
  qid = _field(row, "_id", str, nonempty=True)
  question = _field(row, "question", str, nonempty=True)
  answer = _field(row, "answer", str, nonempty=True)
  paragraphs = _titled_paragraphs(_field(row, "context", list))
  facts = _supporting_facts(_field(row, "supporting_facts", list))
  qtype = row.get("type")
  if need_type or qtype is not None:
    qtype = _field(row, "type", str, nonempty=True)
  fields = dict(question=question, answers=[answer], task=task, id=qid,
                qtype=f"{task}_{qtype}" if qtype else task, context=_render_context(paragraphs))
  return fields, paragraphs, facts


def parse_hotpotqa(row: dict) -> dict:
  """Returns the example for one HotpotQA row; entity = first supporting title."""
  fields, paragraphs, facts = _multihop(row, "hotpotqa", need_type=False)
  entity = facts[0][0] if facts else (paragraphs[0][0] if paragraphs else fields["id"])
  meta = {"supporting_facts": [list(f) for f in facts], "level": row.get("level")}
  return make_example(**fields, entity=entity, meta=meta)


def parse_2wiki(row: dict) -> dict:
  """Returns the example for one 2WikiMultihopQA row; entity = first evidence subject."""
  fields, paragraphs, facts = _multihop(row, "2wiki", need_type=True)
  evidences = _field(row, "evidences", list)
  if not all(isinstance(e, list) and len(e) == 3 and all(isinstance(x, str) for x in e)
             for e in evidences):
    raise RowProblem("field 'evidences' must be a list of [subject, relation, object]")
  if evidences:
    entity = evidences[0][0]
  else:
    entity = facts[0][0] if facts else (paragraphs[0][0] if paragraphs else fields["id"])
  meta = {"supporting_facts": [list(f) for f in facts], "evidences": evidences}
  return make_example(**fields, entity=entity, meta=meta)


def parse_musique(row: dict) -> dict | None:
  """Returns the example for one MuSiQue row, or None when ``answerable`` is false."""
  qid = _field(row, "id", str, nonempty=True)
  question = _field(row, "question", str, nonempty=True)
  answer = _field(row, "answer", str, nonempty=True)
  aliases = _str_list(_field(row, "answer_aliases", list), "answer_aliases")
  paragraphs = _field(row, "paragraphs", list)
  parsed = []
  for p in paragraphs:
    if not isinstance(p, dict):
      raise RowProblem("field 'paragraphs' must be a list of objects")
    parsed.append((_field(p, "idx", int), _field(p, "title", str),
                   _field(p, "paragraph_text", str), _field(p, "is_supporting", bool)))
  answerable = row.get("answerable", True)
  if not isinstance(answerable, bool):
    raise RowProblem("field 'answerable' must be bool")
  if not answerable:
    return None
  parsed.sort(key=lambda p: p[0])
  supporting = [p[1] for p in parsed if p[3]]
  entity = supporting[0] if supporting else (parsed[0][1] if parsed else qid)
  hops = qid.split("__", 1)[0] if "__" in qid else ""
  context = "\n".join(f"{title}: {text.strip()}" for _, title, text, _ in parsed)
  answers = list(dict.fromkeys([answer] + [a for a in aliases if a.strip()]))
  return make_example(question=question, answers=answers, task="musique", id=qid,
                      qtype=f"musique_{hops}" if hops else "musique", entity=entity,
                      context=context, meta={"supporting_titles": supporting})


def _possible_answers(value) -> list[str]:
  """Returns PopQA's answer list from its JSON-encoded string (a real list is accepted)."""
  if isinstance(value, str):
    try:
      value = json.loads(value)
    except json.JSONDecodeError as e:
      raise RowProblem(f"field 'possible_answers' is not valid JSON ({e.msg})") from None
  answers = [a for a in _str_list(value, "possible_answers") if a.strip()]
  if not answers:
    raise RowProblem("field 'possible_answers' has no non-empty answer")
  return list(dict.fromkeys(answers))


def parse_popqa(row: dict) -> dict:
  """Returns the example for one PopQA row; popularity = log10(1 + s_pop)."""
  qid = _field(row, "id", (int, str))
  subj = _field(row, "subj", str, nonempty=True)
  prop = _field(row, "prop", str, nonempty=True)
  obj = _field(row, "obj", str)
  question = _field(row, "question", str, nonempty=True)
  answers = _possible_answers(_field(row, "possible_answers", (str, list)))
  s_pop = _field(row, "s_pop", (int, float))
  if not math.isfinite(s_pop) or s_pop < 0:
    raise RowProblem(f"field 's_pop' must be a finite number >= 0, got {s_pop!r}")
  return make_example(question=question, answers=answers, task="popqa", id=str(qid),
                      qtype="popqa_" + prop.strip().replace(" ", "_"), entity=subj,
                      popularity=math.log10(1.0 + s_pop),
                      meta={"prop": prop, "obj": obj, "s_pop": s_pop})


def parse_gsm8k(row: dict) -> dict:
  """Returns the example for one GSM8K row; the gold answer is the number after '#### '."""
  question = _field(row, "question", str, nonempty=True)
  solution = _field(row, "answer", str, nonempty=True)
  if "####" not in solution:
    raise RowProblem("field 'answer' has no final '#### <number>'")
  rationale, final = solution.rsplit("####", 1)
  final = final.strip().replace(",", "")
  if final.startswith("$"):
    final = final[1:]
  if not _GSM_FINAL.match(final):
    raise RowProblem(f"final answer {final!r} after '####' is not a number")
  qid = "gsm8k-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]
  return make_example(question=question, answers=[final], task="gsm8k", id=qid, qtype="gsm8k",
                      entity=qid, meta={"rationale": rationale.strip()})


def parse_private_qa(row: dict) -> dict:
  """Returns the example a privacy row holds; its private facts must be listed."""
  question = _field(row, "question", str, nonempty=True)
  answers = _str_list(_field(row, "answers", list), "answers")
  qid = _field(row, "id", (int, str))
  facts = [f for f in _str_list(_field(row, "private_facts", list), "private_facts")
           if f.strip()]
  if not facts:
    raise RowProblem("field 'private_facts' lists no fact")
  popularity = row.get("popularity")
  if popularity is not None and (isinstance(popularity, bool)
                                 or not isinstance(popularity, (int, float))):
    raise RowProblem("field 'popularity' must be a number or null")
  meta = row.get("meta") or {}
  if not isinstance(meta, dict):
    raise RowProblem("field 'meta' must be an object")
  task = row.get("task") or "private_qa"
  example = make_example(
      question=question, answers=answers, task=task, id=str(qid),
      qtype=row.get("qtype") or task, entity=row.get("entity") or str(qid),
      context=row.get("context", ""), popularity=popularity, private_facts=facts,
      private_spans=_str_list(row.get("private_spans", []), "private_spans"),
      meta=meta)
  errors = validation_errors(example)
  if errors:
    raise RowProblem(errors[0])
  return example


PARSERS = {
    "hotpotqa": parse_hotpotqa,
    "2wiki": parse_2wiki,
    "musique": parse_musique,
    "popqa": parse_popqa,
    "gsm8k": parse_gsm8k,
    "private_qa": parse_private_qa,
}
