"""Per-episode training records and the asking push, against hand-computed values."""
import json
import os
import types

import jax.numpy as jnp
import numpy as np
import pytest

from seekjax.protocol import HelperReply
from seekjax.rl import advantages as advantages_lib
from seekjax.rl.records import asking_push, episode_records, group_scale
from seekjax.run.metrics import EpisodeLog

# One group of 4: episode 0 asked and was right, 1 asked and was wrong, 2 and 3 answered
# alone and were wrong. Message cost 0.1 per message.
SCORE = np.array([1.0, 0.0, 0.0, 0.0])
COST = np.array([-0.1, -0.1, 0.0, 0.0])
ASKED = np.array([1.0, 1.0, 0.0, 0.0])


def _adv(rewards, estimator, whiten=False, valid=None):
  v = np.ones(len(rewards)) if valid is None else valid
  return np.asarray(advantages_lib.get_advantage_fn(estimator)(
      jnp.asarray(rewards, jnp.float32), 4, whiten=whiten,
      valid=jnp.asarray(v, jnp.float32))) * v


def test_grpo_push_by_hand():
  # rewards [0.9, -0.1, 0, 0]: mean 0.2, std sqrt(0.165) = 0.40620
  adv = _adv(SCORE + COST, "grpo")
  push = asking_push({"score": SCORE, "message_cost": COST}, adv, ASKED, 4)
  std = np.sqrt(0.165)
  # score centred [0.75, -0.25, -0.25, -0.25]: the askers' share (0.75 - 0.25) / std / 4
  np.testing.assert_allclose(push["push/score"], 0.5 / std / 4, rtol=1e-4)
  # cost centred [-0.05, -0.05, 0.05, 0.05]: the askers' share -0.1 / std / 4
  np.testing.assert_allclose(push["push/message_cost"], -0.1 / std / 4, rtol=1e-4)
  np.testing.assert_allclose(push["push/total"], 0.4 / std / 4, rtol=1e-4)
  assert abs(push["push/other"]) < 1e-6


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
def test_push_splits_exactly_for_each_estimator(estimator):
  rng = np.random.default_rng(0)
  comps = {"score": rng.integers(0, 2, 16).astype(float),
           "message_cost": -0.1 * rng.integers(0, 3, 16),
           "format_cost": -0.1 * rng.integers(0, 2, 16)}
  asked = (comps["message_cost"] < 0).astype(float)
  adv = _adv(sum(comps.values()), estimator)
  push = asking_push(comps, adv, asked, 4)
  assert abs(push["push/other"]) < 1e-5, push
  np.testing.assert_allclose(push["push/total"], np.mean(asked * adv), atol=1e-7)
  scale = {"drgrpo": 1.0, "rloo": 4 / 3}.get(estimator)
  if scale:   # a fixed scaling of the centred reward: its slope, in groups with a spread
    w = group_scale(sum(comps.values()), adv, 4)
    np.testing.assert_allclose(w[w != 0], scale, rtol=1e-5)


def test_invalid_episodes_count_nowhere():
  valid = np.array([1.0, 1.0, 1.0, 0.0])
  adv = _adv(SCORE + COST, "grpo", whiten=True, valid=valid)
  push = asking_push({"score": SCORE, "message_cost": COST}, adv, ASKED, 4, valid)
  total = sum(v for k, v in push.items() if k not in ("push/total",))
  np.testing.assert_allclose(total, push["push/total"], atol=1e-7)
  # the invalid episode (3) counts neither in the group mean nor the push: as if the group
  # were [1, 0, 0] with costs [-.1, -.1, 0] (whitening one GRPO group moves it < 1e-5)
  alone = asking_push({"score": SCORE[:3], "message_cost": COST[:3]},
                      _adv3(SCORE[:3] + COST[:3]), ASKED[:3], 3)
  np.testing.assert_allclose(push["push/score"] * 4, alone["push/score"] * 3, rtol=1e-4)


def _adv3(rewards):
  return np.asarray(advantages_lib.get_advantage_fn("grpo")(
      jnp.asarray(rewards, jnp.float32), 3, whiten=False, valid=jnp.ones(3, jnp.float32)))


def test_push_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match="groups of 3"):
    asking_push({"score": SCORE}, SCORE, ASKED, 3)
  with pytest.raises(ValueError, match="advantages"):
    asking_push({"score": SCORE}, SCORE[:2], ASKED, 4)
  with pytest.raises(ValueError, match="no reward components"):
    asking_push({}, SCORE, ASKED, 4)


class _Eps(types.SimpleNamespace):
  """The `rollout.Episodes` fields `episode_records` reads."""

  def __len__(self):
    return len(self.answers)


def _episodes():
  reply = HelperReply(kind="info", text="Paris is the capital.", tokens=5, latency=0.1)
  return _Eps(loss_mask=np.array([[0, 1, 1, 1], [0, 1, 1, 0]]), question_index=np.array([0, 0]),
              messages=[["capital of France?"], []], replies=[[reply], []],
              answers=["Paris", None], finish=["answer", "episode_budget"],
              num_messages=np.array([1, 0]), helper_errors=np.array([0, 0]))


def test_episode_records_fields_and_json(tmp_path):
  eps = _episodes()
  examples = [{"id": "q0", "question": "What is the capital of France?", "answers": ["Paris"]}]
  scores = {k: np.array(v, np.float32) for k, v in dict(
      em=[1, 0], score=[1, 0], format_ok=[1, 0], leak=[0, 0], reply_held=[1, 0]).items()}
  comps = {"score": np.array([1.0, 0.0]), "message_cost": np.array([-0.1, 0.0]),
           "format_cost": np.array([0.0, -0.1])}
  rows = episode_records(7, eps, examples, scores, np.array([0.9, -0.1]), comps,
                         np.array([0.7, -0.7]), np.array([1.0, 1.0]), 2)
  assert rows[0]["replies"] == ["Paris is the capital."] and rows[0]["sampled_tokens"] == 3
  assert rows[1]["answer"] is None and rows[1]["format_ok"] == 0.0
  assert rows[1]["components"]["format_cost"] == pytest.approx(-0.1)
  assert {r["step"] for r in rows} == {7} and [r["group"] for r in rows] == [0, 0]
  log = EpisodeLog(str(tmp_path))
  log.write(rows)
  back = [json.loads(l) for l in open(tmp_path / "episodes.jsonl")]
  assert back[0]["messages"] == ["capital of France?"] and back[0]["id"] == "q0"


def test_private_details_are_redacted_in_the_records():
  eps = _episodes()
  eps.messages = [["My sister Amina lives in Paris: capital of France?"], []]
  examples = [{"id": "q0#private", "question": "My sister Amina moved to the capital of France. "
               "Name it.", "answers": ["Paris"],
               "private_facts": ["the user's sister Amina moved to Paris"],
               "private_spans": ["My sister", "Amina"]}]
  scores = {k: np.zeros(2, np.float32) for k in ("em", "score", "format_ok", "leak", "reply_held")}
  comps = {"score": np.zeros(2)}
  args = (3, eps, examples, scores, np.zeros(2), comps, np.zeros(2), np.ones(2), 2)
  hidden = episode_records(*args)[0]
  assert "Amina" not in json.dumps(hidden) and "sister" not in json.dumps(hidden)
  assert hidden["question"].startswith("[REDACTED] [REDACTED] moved")
  assert hidden["answer"] == "Paris" and hidden["replies"] == ["Paris is the capital."]
  shown = episode_records(*args, redact_private=False)[0]
  assert shown["messages"] == eps.messages[0]


def test_episode_log_drops_the_steps_a_resume_samples_again(tmp_path):
  log = EpisodeLog(str(tmp_path))
  for step in (1, 2, 3):
    log.write([{"step": step, "row": 0, "reward": float("nan")}, {"step": step, "row": 1}])
  with open(tmp_path / "episodes.jsonl", "a") as f:
    f.write('{"step": 4, "row"')   # killed mid-write
  EpisodeLog(str(tmp_path), resume_step=2).write([{"step": 3, "row": 0}])
  rows = [json.loads(l) for l in open(tmp_path / "episodes.jsonl")]
  assert [(r["step"], r["row"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]
  assert rows[0]["reward"] is None   # strict JSON
  EpisodeLog(str(tmp_path / "off"), enabled=False).write([{"step": 1}])
  assert not os.path.exists(tmp_path / "off" / "episodes.jsonl")
