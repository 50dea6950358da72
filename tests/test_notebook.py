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


def _study_fixture(d):
  """A scaling study directory as experiments/scaling.py writes it (table + PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  d.mkdir(parents=True)
  (d / "results.md").write_text("# Scaling: SLM x helper\n\n| slm_trainable_layers | em |\n"
                                "|---|---|\n| 2 | 0.302 |\n")
  (d / "results.json").write_text(json.dumps([dict(slm_trainable_layers=2, em=0.302)]))
  fig, ax = plt.subplots()
  ax.plot([1, 2], [0.3, 0.4])
  fig.savefig(d / "scaling_em.png")
  plt.close(fig)


def test_notebook_executes(tmp_path, monkeypatch):
  _fixture(tmp_path)
  _study_fixture(tmp_path / "studies" / "scaling")
  monkeypatch.setenv("SEEKJAX_RESULTS", str(tmp_path))
  monkeypatch.setenv("SEEKJAX_STUDIES", str(tmp_path / "studies"))
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "collaboration_analysis.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  assert "| dynamic |" in text and "a <need> exchange" in text and "leaking message" in text
  assert (tmp_path / "frontier.png").exists()
  # the study's table is printed and its plot shown; the absent studies are named
  assert "| 2 | 0.302 |" in text and "constraints: not run" in text
  assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []))
