"""Tests for seekjax.tasks.read_qa on small fixtures written in each dataset's exact layout."""
import json
import math
import re
import warnings

import pytest

from seekjax.tasks import (MalformedRowError, MalformedRowWarning, QAFileError, read_qa,
                           read_qa_with_stats, validation_errors)

HOTPOT_ROW = {
    "_id": "5a8b57f25542995d1e6f1371",
    "answer": "yes",
    "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
    "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
    "context": [["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker.",
                             " He directed cult films."]],
                ["Scott Derrickson", ["Scott Derrickson is an American director."]]],
    "type": "comparison",
    "level": "hard",
}

WIKI2_ROW = {
    "_id": "8813f87c0bdd11eba7f7acde48001122",
    "type": "compositional",
    "question": "Who is the director of the film Polish-Russian War?",
    "context": [["Polish-Russian War (film)", ["Polish-Russian War is a 2009 Polish film ",
                                               "directed by Xawery Żuławski."]]],
    "supporting_facts": [["Polish-Russian War (film)", 1]],
    "evidences": [["Polish-Russian War", "director", "Xawery Żuławski"]],
    "answer": "Xawery Żuławski",
}

MUSIQUE_ROW = {
    "id": "2hop__13548_13529",
    "paragraphs": [
        {"idx": 1, "title": "Lionel Messi", "paragraph_text": "Messi plays for Inter Miami.",
         "is_supporting": True},
        {"idx": 0, "title": "Inter Miami", "paragraph_text": "Inter Miami is based in Florida.",
         "is_supporting": True},
        {"idx": 2, "title": "Miami", "paragraph_text": "Miami is a city.",
         "is_supporting": False},
    ],
    "question": "In which state is the team of Lionel Messi based?",
    "question_decomposition": [],
    "answer": "Florida",
    "answer_aliases": ["FL", "State of Florida"],
    "answerable": True,
}

POPQA_ROW = {
    "id": 4222362, "subj": "George Rankin", "prop": "occupation", "obj": "politician",
    "question": "What is George Rankin's occupation?",
    "possible_answers": json.dumps(["politician", "political leader", "political figure"]),
    "s_pop": 142, "o_pop": 25692,
}

GSM_ROW = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                "many clips in May. How many clips did Natalia sell altogether?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
              "<<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


def write_jsonl(path, rows):
  path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                  encoding="utf-8")
  return str(path)


def read_quietly(path, fmt, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", MalformedRowWarning)
    return read_qa(path, fmt, **kw)


def test_hotpotqa_json_array(tmp_path):
  path = tmp_path / "hotpot_dev_distractor_v1.json"
  path.write_text(json.dumps([HOTPOT_ROW, dict(HOTPOT_ROW, _id="b", answer="no")], indent=1))
  examples = read_qa(str(path), "hotpotqa")
  assert [e["id"] for e in examples] == ["5a8b57f25542995d1e6f1371", "b"]
  first = examples[0]
  assert first["answers"] == ["yes"] and first["task"] == "hotpotqa"
  assert first["qtype"] == "hotpotqa_comparison"
  assert first["entity"] == "Scott Derrickson"
  assert first["context"].splitlines() == [
      "Ed Wood: Edward Davis Wood Jr. was an American filmmaker. He directed cult films.",
      "Scott Derrickson: Scott Derrickson is an American director."]
  assert all(not validation_errors(e) for e in examples)


def test_hotpotqa_jsonl_too(tmp_path):
  examples = read_qa(write_jsonl(tmp_path / "h.jsonl", [HOTPOT_ROW]), "hotpotqa")
  assert len(examples) == 1 and examples[0]["question"] == HOTPOT_ROW["question"]


def test_2wiki(tmp_path):
  path = tmp_path / "dev.json"
  path.write_text(json.dumps([WIKI2_ROW]), encoding="utf-8")
  (example,) = read_qa(str(path), "2wiki")
  assert example["answers"] == ["Xawery Żuławski"]
  assert example["qtype"] == "2wiki_compositional"
  assert example["entity"] == "Polish-Russian War"
  assert "directed by Xawery Żuławski." in example["context"]


def test_musique_orders_paragraphs_and_keeps_aliases(tmp_path):
  unanswerable = dict(MUSIQUE_ROW, id="3hop1__1_2_3", answerable=False)
  path = write_jsonl(tmp_path / "musique.jsonl", [MUSIQUE_ROW, unanswerable])
  with pytest.warns(MalformedRowWarning, match="excluded"):
    examples, stats = read_qa_with_stats(path, "musique")
  assert len(examples) == 1 and stats.excluded["unanswerable"] == 1
  (example,) = examples
  assert example["answers"] == ["Florida", "FL", "State of Florida"]
  assert example["qtype"] == "musique_2hop"
  assert example["context"].splitlines()[0].startswith("Inter Miami:")  # idx order
  assert example["entity"] == "Inter Miami"


def test_popqa_decodes_answers_and_popularity(tmp_path):
  (example,) = read_qa(write_jsonl(tmp_path / "popqa.jsonl", [POPQA_ROW]), "popqa")
  assert example["answers"] == ["politician", "political leader", "political figure"]
  assert example["id"] == "4222362" and example["entity"] == "George Rankin"
  assert example["qtype"] == "popqa_occupation"
  assert example["popularity"] == pytest.approx(math.log10(143))


def test_gsm8k_final_number(tmp_path):
  rows = [GSM_ROW, {"question": "How much is 1000 + 234?", "answer": "It is 1,234.\n#### 1,234"}]
  examples = read_qa(write_jsonl(tmp_path / "gsm8k.jsonl", rows), "gsm8k")
  assert [e["answers"] for e in examples] == [["72"], ["1234"]]
  assert examples[0]["meta"]["rationale"].endswith("altogether in April and May.")
  assert examples[0]["id"].startswith("gsm8k-") and examples[0]["id"] != examples[1]["id"]


BAD_POPQA_LINES = [
    json.dumps(POPQA_ROW),                                          # 1 ok
    json.dumps({k: v for k, v in POPQA_ROW.items() if k != "subj"} | {"id": 2}),  # 2 missing
    '{"id": 3, "subj": "x", ',                                       # 3 bad JSON
    json.dumps(dict(POPQA_ROW, id=4, question="   ")),              # 4 empty question
    json.dumps(dict(POPQA_ROW, id=5, s_pop="many")),                # 5 wrong type
    json.dumps(dict(POPQA_ROW, id=6, possible_answers="[not json")),  # 6 bad inner JSON
    json.dumps(POPQA_ROW),                                          # 7 duplicate id
    "[1, 2]",                                                       # 8 not an object
    "",                                                             # blank: not a row
    json.dumps(dict(POPQA_ROW, id=10)),                             # 10 ok
]


def test_malformed_rows_are_skipped_with_counted_warnings(tmp_path):
  path = write_jsonl(tmp_path / "bad.jsonl", BAD_POPQA_LINES)
  with pytest.warns(MalformedRowWarning) as record:
    examples, stats = read_qa_with_stats(path, "popqa")
  assert [e["id"] for e in examples] == ["4222362", "10"]
  messages = [str(w.message) for w in record]
  for line, problem in [(2, "missing field 'subj'"), (3, "bad JSON"), (4, "'question' is empty"),
                        (5, "'s_pop' must be int/float"), (6, "not valid JSON"),
                        (7, "duplicate id"), (8, "not an object")]:
    assert any(m.startswith(f"{path}:{line}:") and problem in m for m in messages), (line, messages)
  assert sum(stats.skipped.values()) == 7 and stats.rows == 9 and stats.kept == 2
  assert any("kept 2 of 9" in m and "skipped 7 malformed" in m for m in messages)  # summary


def test_many_bad_rows_warn_a_bounded_number_of_times(tmp_path):
  rows = [{"question": f"q{i}?", "answer": "no marker"} for i in range(30)] + [GSM_ROW]
  with pytest.warns(MalformedRowWarning) as record:
    examples, stats = read_qa_with_stats(write_jsonl(tmp_path / "g.jsonl", rows), "gsm8k")
  assert len(examples) == 1 and sum(stats.skipped.values()) == 30
  assert len(record) == 21  # 20 row warnings + 1 summary
  assert "skipped 30 malformed, first 20 listed above" in str(record[-1].message)


@pytest.mark.parametrize("line_index,problem", [(1, "missing field 'subj'"), (2, "bad JSON")])
def test_strict_raises_one_line_value_error(tmp_path, line_index, problem):
  path = write_jsonl(tmp_path / "bad.jsonl", [BAD_POPQA_LINES[0], BAD_POPQA_LINES[line_index]])
  with pytest.raises(MalformedRowError) as info:
    read_qa(path, "popqa", strict=True)
  assert isinstance(info.value, ValueError)
  message = str(info.value)
  assert message.startswith(f"{path}:2: ") and problem in message and "\n" not in message
  assert info.value.line == 2


def test_invalid_utf8_row_is_skipped_in_jsonl_and_json_array(tmp_path):
  good = json.dumps(GSM_ROW).encode()
  bad = good.replace(b"Natalia", b"Nat\xffia")
  jsonl = tmp_path / "g.jsonl"
  jsonl.write_bytes(bad + b"\n" + good + b"\n")
  with pytest.warns(MalformedRowWarning) as record:
    assert len(read_qa(str(jsonl), "gsm8k")) == 1
  assert any(re.search(r"g\.jsonl:1: .*invalid UTF-8", str(w.message)) for w in record)
  array = tmp_path / "h.json"
  row = json.dumps(HOTPOT_ROW).encode()
  array.write_bytes(b"[\n" + row + b",\n" + row.replace(b"Ed Wood", b"Ed W\xc3od").replace(
      b"5a8b", b"zz") + b"\n]")
  with pytest.warns(MalformedRowWarning) as record:
    assert len(read_qa(str(array), "hotpotqa")) == 1
  assert any(re.search(r"h\.json:3: .*invalid UTF-8", str(w.message)) for w in record)
  with pytest.raises(MalformedRowError, match="invalid UTF-8"):
    read_qa(str(array), "hotpotqa", strict=True)


def test_json_array_reports_element_lines(tmp_path):
  path = tmp_path / "dev.json"
  broken = dict(WIKI2_ROW, _id="x2")
  del broken["evidences"]
  path.write_text(json.dumps([WIKI2_ROW, broken], indent=2), encoding="utf-8")
  starts = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if line == "  {"]
  assert len(starts) == 2
  second_line = starts[1]
  with pytest.raises(MalformedRowError) as info:
    read_qa(str(path), "2wiki", strict=True)
  assert info.value.line == second_line and "missing field 'evidences'" in str(info.value)


def test_jsonl_starting_with_an_array_row_is_not_misread(tmp_path):
  path = write_jsonl(tmp_path / "g.jsonl", ["[1, 2]", GSM_ROW])
  with pytest.raises(QAFileError, match=r"g\.jsonl:2: unexpected content after"):
    read_quietly(path, "gsm8k")


def test_json_array_syntax_error_raises_even_when_lenient(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text('[\n{"_id": "a"},\n{"_id": \n', encoding="utf-8")
  with pytest.raises(QAFileError, match=r"broken\.json:\d+: bad JSON in array"):
    read_quietly(str(path), "hotpotqa")


@pytest.mark.parametrize("row,problem", [
    (dict(HOTPOT_ROW, context=[["t", "not a list"]]), "'context' must be"),
    (dict(HOTPOT_ROW, supporting_facts=[["t", "0"]]), "'supporting_facts' must be"),
    (dict(HOTPOT_ROW, answer=7), "'answer' must be str"),
    (dict(HOTPOT_ROW, answer=""), "'answer' is empty"),
])
def test_hotpotqa_wrong_types(tmp_path, row, problem):
  path = write_jsonl(tmp_path / "h.jsonl", [row])
  with pytest.raises(MalformedRowError, match=problem):
    read_qa(path, "hotpotqa", strict=True)


@pytest.mark.parametrize("fmt,row,problem", [
    ("2wiki", {k: v for k, v in WIKI2_ROW.items() if k != "type"}, "missing field 'type'"),
    ("musique", dict(MUSIQUE_ROW, answer_aliases="FL"), "'answer_aliases' must be list"),
    ("musique", dict(MUSIQUE_ROW, paragraphs=[{"idx": 0, "title": "t"}]), "'paragraph_text'"),
    ("popqa", dict(POPQA_ROW, possible_answers="[]"), "no non-empty answer"),
    ("popqa", dict(POPQA_ROW, s_pop=True), "'s_pop' must be"),
    ("gsm8k", {"question": "q?", "answer": "no final marker"}, "no final '#### <number>'"),
    ("gsm8k", {"question": "q?", "answer": "#### seven"}, "is not a number"),
])
def test_other_formats_reject_bad_rows(tmp_path, fmt, row, problem):
  path = write_jsonl(tmp_path / "f.jsonl", [row])
  with pytest.raises(MalformedRowError, match=problem):
    read_qa(path, fmt, strict=True)
  assert read_quietly(path, fmt) == []


def test_file_level_errors(tmp_path):
  with pytest.raises(QAFileError, match="no such file"):
    read_qa(str(tmp_path / "missing.jsonl"), "gsm8k")
  path = write_jsonl(tmp_path / "g.jsonl", [GSM_ROW])
  with pytest.raises(QAFileError, match="unknown QA format 'squad'"):
    read_qa(path, "squad")


def test_parquet_if_pyarrow_present(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  path = str(tmp_path / "popqa.parquet")
  pq.write_table(pa.Table.from_pylist([POPQA_ROW, dict(POPQA_ROW, id=7, question="")]), path)
  with pytest.warns(MalformedRowWarning) as record:
    examples = read_qa(path, "popqa")
  assert any(re.search(r"popqa\.parquet:2: .*'question' is empty", str(w.message)) for w in record)
  assert [e["id"] for e in examples] == ["4222362"]
