"""Per-episode training records, and how much each reward term pushes the policy to ask.

`episode_records` turns one RL step's episodes into one JSON-able dict per episode (what
it asked, what came back, how it scored, its reward by term and its advantage), for
`<workdir>/episodes.jsonl` (`run/metrics.EpisodeLog`).

`asking_push` answers "which reward term teaches the policy to ask less?". The policy
gradient on the decision to ask is, per group, sum_i A_i * (asked_i - p); the advantages
of a group's valid episodes sum to 0 (GRPO, Dr. GRPO, RLOO), so that is sum_i A_i * asked_i:
positive pushes toward asking, negative away from it. The advantage is linear in the
reward once the group's scale is fixed (GRPO: 1 / (std + eps); Dr. GRPO: 1; RLOO:
G / (G - 1)), and the reward is the sum of its components, so the push splits exactly into
one push per component: push_c = mean_i asked_i * w_g * (c_i - mean_g c). The scale w_g is
read off the advantages the step used (their least-squares slope on the centred reward),
so the split holds for any estimator that is a per-group scaling of the centred reward;
"push/other" is what it leaves (batch whitening's shift, an estimator that is not such a
scaling). PPO's clipping and the token aggregation are not modelled: the push is that of
the advantages, before the loss. Host-side numpy.
"""
from __future__ import annotations

import numpy as np

from seekjax.eval import redact as redact_lib


def _groups(x, group_size: int):
  a = np.asarray(x, np.float64)
  if a.ndim != 1 or group_size < 1 or a.shape[0] % group_size:
    raise ValueError(f"asking_push: {a.shape} values do not split into groups of {group_size}")
  return a.reshape(-1, group_size)


def group_scale(rewards, advantages, group_size: int, valid=None):
  """float64[N]: per group, the slope w of advantage on centred reward (least squares over
  its valid episodes); 0 for a group whose valid rewards are all equal."""
  r, a = _groups(rewards, group_size), _groups(advantages, group_size)
  v = np.ones_like(r) if valid is None else _groups(valid, group_size)
  n = np.maximum(v.sum(axis=1, keepdims=True), 1.0)
  rc = (r - (r * v).sum(axis=1, keepdims=True) / n) * v
  ac = (a - (a * v).sum(axis=1, keepdims=True) / n) * v
  den = (rc * rc).sum(axis=1)
  return np.where(den > 1e-12, (ac * rc).sum(axis=1) / np.maximum(den, 1e-12), 0.0)


def asking_push(components: dict, advantages, asked, group_size: int, valid=None) -> dict:
  """{"push/total": mean_i asked_i * A_i, "push/<term>": that term's share, "push/other":
  the rest}, over B episodes in contiguous groups of `group_size`.

  components: {name: float[B]} summing to the reward the advantages came from (the
  signed components of `rewards.compute_rewards` after `gate_costs`, plus any KL reward).
  advantages: float[B], what the update used (0 for invalid episodes).
  asked: float/bool[B], 1 for an episode that sent the helper at least one message.
  """
  names = list(components)
  if not names:
    raise ValueError("asking_push: no reward components")
  rewards = np.sum([np.asarray(components[k], np.float64) for k in names], axis=0)
  b = rewards.shape[0]
  v = np.ones(b) if valid is None else np.asarray(valid, np.float64)
  adv, ask = np.asarray(advantages, np.float64), np.asarray(asked, np.float64)
  if adv.shape != (b,) or ask.shape != (b,) or v.shape != (b,):
    raise ValueError(f"asking_push: advantages {adv.shape}, asked {ask.shape}, valid {v.shape}; "
                     f"expected [{b}] like the components")
  w = np.repeat(group_scale(rewards, adv, group_size, v), group_size)
  vg = _groups(v, group_size)
  n = np.repeat(np.maximum(vg.sum(axis=1), 1.0), group_size)
  out = {"push/total": float(np.mean(ask * adv * v))}
  explained = 0.0
  for k in names:
    c = np.asarray(components[k], np.float64)
    mean = np.repeat((_groups(c, group_size) * vg).sum(axis=1), group_size) / n
    out[f"push/{k}"] = float(np.mean(ask * v * w * (c - mean)))
    explained += out[f"push/{k}"]
  out["push/other"] = out["push/total"] - explained
  return out


TEXT_KEYS = ("question", "answers", "messages", "replies", "answer")


def episode_records(step: int, episodes, examples, scores: dict, rewards, components: dict,
                    advantages, valid, group_size: int, redact_private: bool = True
                    ) -> list[dict]:
  """One dict per episode of a step, in row order, for episodes.jsonl.

  episodes: `rollout.Episodes`; examples: the step's questions (episodes.question_index
  indexes them); scores: `cycle.score_episodes`'s arrays; rewards, advantages, valid:
  float[B]; components: {name: float[B]} summing to the rewards. redact_private
  (config.eval.redact_private): an example's private facts and spans become [REDACTED]
  in the text fields (`TEXT_KEYS`), as in evaluation's transcripts; whether a message
  leaked stays in "leak".
  """
  sampled = np.asarray(episodes.loss_mask).sum(axis=1)
  rows = []
  for i in range(len(episodes)):
    ex = examples[int(episodes.question_index[i])]
    pattern = redact_lib.redactor(redact_lib.private_strings(ex)) if redact_private else None
    rows.append({
        "step": int(step), "row": i, "group": i // group_size,
        "id": ex.get("id"), "question": ex["question"], "answers": list(ex["answers"])[:4],
        "messages": list(episodes.messages[i]),
        "replies": [r.text for r in episodes.replies[i]],
        "answer": episodes.answers[i], "finish": episodes.finish[i],
        "num_messages": int(episodes.num_messages[i]),
        "helper_errors": int(episodes.helper_errors[i]),
        "sampled_tokens": int(sampled[i]),
        **{k: float(scores[k][i]) for k in ("em", "score", "format_ok", "leak", "reply_held")},
        "valid": float(valid[i]), "reward": float(rewards[i]),
        "advantage": float(advantages[i]),
        "components": {k: float(v[i]) for k, v in components.items()},
    })
    if pattern is not None:
      rows[-1].update({k: redact_lib.redact(rows[-1][k], pattern) for k in TEXT_KEYS})
  return rows
