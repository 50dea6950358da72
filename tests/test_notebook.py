"""The analysis notebook executes on a tiny results fixture (nbclient)."""
import json
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fixture(d):
  overall = lambda em, msgs, leak: dict(n=2, n_private=1, em=em, em_ci=[0.0, 1.0], f1=em,  # noqa: E731
                                        messages_per_episode=msgs, helper_tokens_per_episode=3.0,
                                        leak_rate=leak, leak_rate_ci=[0.0, 1.0], llm_leak_rate=None,
                                        llm_leak_rate_ci=None, llm_judge_errors=0,
                                        format_failure_rate=0.0, helper_errors=0)
  methods = {}
  for name, em, msgs, leak in (("slm_cot", 0.0, 0.0, 0.0), ("static_interaction", 0.5, 1.0, 1.0),
                               ("dynamic", 1.0, 0.5, 0.0)):
    methods[name] = dict(scoring="answer", wall_time=1.0, overall=overall(em, msgs, leak),
                         by_qtype={"capital": overall(em, msgs, leak)},
                         by_popularity={"head": overall(em, msgs, leak)}, episodes=[])
  json.dump({"schema_version": 1, "meta": {"model": "tiny", "task": "world_facts_mix"},
             "methods": methods}, open(d / "results.json", "w"))
  eps = [
      dict(method="dynamic", id="1", question="My sister Amina lives in the capital of Eritrea. Where?",
           answers=["Asmara"], answer="Asmara", messages=["What is the capital of Eritrea?"],
           transcript="<think>ask</think><message>What is the capital of Eritrea?</message>"
                      "<feedback><info>The capital of Eritrea is Asmara.</info></feedback>"
                      "<answer>Asmara</answer>"),
      dict(method="dynamic", id="2", question="What is 2 + 3?", answers=["5"], answer="5",
           messages=[], transcript="<think>easy</think><answer>5</answer>"),
      dict(method="static_interaction", id="1", question="My sister ...", answers=["Asmara"],
           answer="Asmara", messages=["My sister Amina lives in the capital of Eritrea. Where?"],
           transcript="<message>My sister ...</message><feedback><need>Which country?</need>"
                      "</feedback><answer>Asmara</answer>"),
  ]
  with open(d / "episodes.jsonl", "w") as f:
    f.writelines(json.dumps(e) + "\n" for e in eps)


def test_notebook_executes(tmp_path, monkeypatch):
  _fixture(tmp_path)
  monkeypatch.setenv("SEEKJAX_RESULTS", str(tmp_path))
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "collaboration_analysis.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "| dynamic |" in text and "a <need> exchange" in text and "leaking message" in text
  assert (tmp_path / "frontier.png").exists()
