"""RL learns when to ask: 24 GRPO iterations move the number of messages the right way.

A tiny model is cold-started on a 50/50 mix of "ask, then answer from the feedback" and
"answer alone" demonstrations, so that it asks about half the time and its episodes
follow the protocol. Then `rl_iteration` (real rollouts at temperature 1.0 with a
scripted helper, rewards, GRPO advantages, the jitted PPO step) runs on a task with two
kinds of question, every question of both kinds at each step (groups of 8):

  ask:   only the helper's feedback holds the answer; the alone answer is wrong.
         Asking pays 1 - lambda_message, answering alone 0: asking must increase.
  alone: the alone answer is right too, so a message only costs lambda_message.
         Asking pays 1 - lambda_message, answering alone 1: asking must decrease.

The ask kind's answer is one of CITIES, a different one at every step (each city in turn,
in a seed's order), and the helper's feedback names it; the cold start teaches the model to
copy whichever city the feedback names. With one fixed answer the policy could learn to say
it without asking (reward 1, more than asking's 1 - lambda_message), and on one seed under
SSE4_2 it did: the "ask" kind's asking fell to 0 while its reward reached 1. With cities
drawn at random, runs of the same city let it learn to answer that city after asking
instead of copying (seen natively: every answer "Asmara", the reward falling at the end).
In turn, a guess without copying is right on one step in three, less than copying.

Both directions are learnt in one run, from the same start, so the policy must tell the
kinds apart from the question (what the paper asks of an SLM). Each step sees both kinds
twice, so no step pushes one kind's way alone; groups of 8 (a group whose episodes all
ask teaches nothing, and groups of 4 often did); the lr warms up over WARMUP steps, to a
peak of 5e-4 (at 1e-3 the shared "ask" decision swung to "answer alone" for both kinds
right after the warmup on one seed in five under SSE4_2, and the ask kind did not come
back in 24 steps). With these settings the directions and the reward rise held on 10 of
10 seeds natively (AVX2) and under SSE4_2 on an AMD EPYC box. The RL runs from two seeds
and everything must hold on each.

Cold start. Full-vocabulary SFT of a random model costs about a second a step on this
CPU (the 49k-row LM head), so the model starts with zero embedding rows for every token
the script never uses; those tokens then have logit exactly 0 and the cold start trains
only the script's rows, with the exact full-vocabulary softmax (the other V - |S| logits
enter the log-sum-exp as log(V - |S|)). RL then trains every row.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seekjax as sj
from seekjax import configlib
from seekjax.helpers import RuleLeakJudge
from seekjax.helpers.base import HelperReply
from seekjax.models import decoder
from seekjax.models.api import load_tokenizer
from seekjax.rl import cycle
from seekjax.coldstart import sft
from seekjax.rl import step as step_lib
from seekjax.rl.settings import rl_settings
from seekjax.rl import trainable as trainable_lib
from seekjax.rollout import rollout_config
from seekjax.run.setup import make_step
from tests.scripted import ScriptedHelper, feedback_text

pytestmark = pytest.mark.trajectory   # cold start and RL outcomes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM = "Ask or answer."
CITIES = ("Asmara", "Massawa", "Assab")   # the helper's feedback: the answer itself
INFO = CITIES[0]
ALONE_ANSWER = "Keren"               # what the SLM says without asking
QUESTIONS = {  # kind -> (questions, gold answers given this step's city, expected sign)
    "ask": (["What is the capital of Eritrea?", "Which city is Eritrea's capital?"],
            lambda city: [city], +1),
    "alone": (["Name a town in Eritrea.", "Give any Eritrean town."],
              lambda city: [city, ALONE_ANSWER], -1),
}
ALL_QUESTIONS = [q for kind in sorted(QUESTIONS) for q in QUESTIONS[kind][0]]
MESSAGE = "<message>capital?</message>"
ALONE_TURNS = [f"<answer>{ALONE_ANSWER}</answer>"]
LAMBDA_MESSAGE = 0.3
RL_STEPS = 24
GROUP_SIZE = 8
LR = 5e-4
WARMUP = 5   # steps: Adam's first updates move every weight by about lr whatever the gradient's
             # size; at full lr they swung the shared "ask" decision for both kinds at once
# Every episode fits in 64 tokens (prompt <= 27), so the step compiles once.
ROLLOUT = dict(max_turns=1, max_new_tokens=16, max_message_tokens=12, max_feedback_tokens=16,
               max_episode_tokens=36, temperature=1.0, top_k=0, top_p=1.0,
               max_steps_per_call=16, helper_timeout=30.0, system_prompt=SYSTEM)


# The cold start's lr per chunk of CHUNK steps: it runs until the NLL is within TOLERANCE of
# the floor (below), stepping the lr down, and fails only when the last chunk has not got there.
CHUNK = 200
LRS = (3e-3, 3e-3, 3e-3, 1e-3, 1e-3, 1e-3, 3e-4, 3e-4, 1e-4, 1e-4)
TOLERANCE = 0.001   # above the floor (`demos`): a plateau where the tokens after the choice
                    # still mix both kinds ("<message>Keren</answer>") sat 0.055 above it, and
                    # at 0.005 two sampled episodes in 16 still broke the protocol


def demos(tokenizer):
  """The cold start's (ids, mask) pairs and its NLL floor.

  Every question has one "ask" demo per city (the feedback names the city, the answer
  copies it) and as many copies of the "alone" demo, so the model asks half the time. Only
  the first token of each demo (ask or answer) is uncertain: the floor is ln 2 per demo
  over the SLM tokens.
  """
  seqs, masks = [], []
  for q in ALL_QUESTIONS:
    for city in CITIES:
      fb = feedback_text(tokenizer, HelperReply("info", city)).rstrip("\n")
      for turns in ([MESSAGE, f"<answer>{city}</answer>"], ALONE_TURNS):
        ids, mask = sft.demo_ids(tokenizer, sft.Demo(q, turns, [fb] * (len(turns) - 1)),
                                 system=SYSTEM)   # laid out exactly as the rollout lays them out
        seqs.append(ids)
        masks.append(mask)
  return seqs, masks, len(seqs) * np.log(2) / sum(int(m.sum()) for m in masks)


def cold_start(config, tokenizer, seed=0):
  """A model that follows the protocol and asks on about half of its episodes.

  Trains to a convergence criterion (NLL < floor + TOLERANCE), not to a step count that
  happens to suffice on one instruction set: the float trajectory differs with the ISA XLA
  compiles for. Returns (model, the NLL of the SLM tokens under the full vocabulary after
  each chunk, the floor).
  """
  seqs, masks, floor = demos(tokenizer)
  vocab = np.unique(np.concatenate(seqs + [np.asarray(tokenizer.eos_ids)]))
  local = np.full(config.vocab_size, -1, np.int64)
  local[vocab] = np.arange(len(vocab))
  small = config.replace(vocab_size=len(vocab))
  width = max(len(s) for s in seqs)
  k = max(int(m.sum()) for m in masks)
  toks = np.zeros((len(seqs), width), np.int32)
  src, tgt = np.zeros((len(seqs), k), np.int32), np.zeros((len(seqs), k), np.int32)
  w = np.zeros((len(seqs), k), np.float32)
  for i, (s, m) in enumerate(zip(seqs, masks)):
    toks[i, :len(s)] = local[s]
    where = np.flatnonzero(m)
    src[i, :len(where)], tgt[i, :len(where)], w[i, :len(where)] = where - 1, local[s[where]], 1
  toks, src, tgt, w = map(jnp.asarray, (toks, src, tgt, w))
  positions = jnp.broadcast_to(jnp.arange(width), toks.shape)
  log_rest = float(np.log(config.vocab_size - len(vocab)))   # the zero-logit tokens
  opt = optax.inject_hyperparams(optax.adam)(learning_rate=LRS[0])

  def loss_fn(p):
    x, _ = decoder.hidden_states(p, small, toks, positions)
    logits = decoder.lm_head(p, small, jnp.take_along_axis(x, src[..., None], axis=1))
    lse = jnp.logaddexp(jax.nn.logsumexp(logits, axis=-1), log_rest)
    nll = lse - jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * w) / jnp.sum(w)

  @jax.jit
  def train(p, s, lr):
    s.hyperparams["learning_rate"] = lr
    def body(carry, _):
      p, s = carry
      loss, g = jax.value_and_grad(loss_fn)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    (p, s), curve = jax.lax.scan(body, (p, s), None, length=CHUNK)
    return p, s, curve[-1]

  params = decoder.init_params(small, jax.random.PRNGKey(seed))
  state, curve = opt.init(params), []
  for lr in LRS:
    params, state, nll = train(params, state, jnp.float32(lr))
    curve.append(float(nll))
    if curve[-1] < floor + TOLERANCE:
      break
  embed = np.zeros((config.vocab_size, config.hidden_size), np.float32)
  embed[vocab] = np.asarray(params["embed"])
  params = dict(params, embed=jnp.asarray(embed))
  return sj.Model(config, params, tokenizer, None, "cold-start"), curve, floor


@pytest.fixture(scope="module")
def cold_model():
  tok = load_tokenizer()
  config = sj.ModelConfig(arch="llama", vocab_size=tok.vocab_size, hidden_size=64,
                          num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                          intermediate_size=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_embeddings=True, max_position_embeddings=256)
  return cold_start(config, tok)


def run_rl(model, lr=LR, seed=0):
  """RL_STEPS rl_iterations on every question of both kinds at each step, each step with
  its own city (the helper names it, the ask kind's gold answer is it).

  Returns (per-step metrics, per-step {kind: mean messages per episode}, final model).
  """
  cfg = configlib.load_config(os.path.join(ROOT, "configs", "tiny_test.py"))
  cfg.model.trainable = "full"
  cfg.rl.update(steps=RL_STEPS, questions_per_step=len(ALL_QUESTIONS), group_size=GROUP_SIZE,
                advantage="grpo", whiten=False, num_epochs=1, mini_batches=1, micro_batches=1,
                kl_method="k3", kl_beta=0.02, kl_in="loss", aggregation="token-mean")
  cfg.reward.update(score="em", lambda_message=LAMBDA_MESSAGE, lambda_helper_tokens=0.0,
                    format_penalty=0.1, helper_error_policy="zero_advantage")
  spec = trainable_lib.Trainable(mode="full")
  # a copy: the train step donates its inputs, and the caller keeps using `model`
  params = jax.tree.map(jnp.array, model.params)
  trainable, frozen = trainable_lib.init(spec, params, jax.random.PRNGKey(seed))
  optimizer, _ = step_lib.make_optimizer(lr, RL_STEPS, WARMUP, 0.0, 1.0)
  settings = rl_settings(cfg)
  helper = ScriptedHelper(text=INFO)
  ctx = cycle.RunContext(
      settings=settings, model=model, spec=spec, frozen=frozen, helper=helper,
      judge=RuleLeakJudge(), rollout_cfg=rollout_config(group_size=GROUP_SIZE, **ROLLOUT),
      train_step=make_step(settings, model.config, spec, optimizer,
                           rollout_temperature=ROLLOUT["temperature"]))
  ref = jax.tree.map(jnp.array, trainable)
  opt_state = optimizer.init(trainable)
  kinds = sorted(QUESTIONS)
  rows, by_kind = [], []
  # every city equally often, never twice in a row: a policy that answers one city without
  # copying the feedback is right on one step in three, so copying pays more
  cities = np.resize(np.random.default_rng(seed).permutation(len(CITIES)), RL_STEPS)
  for step in range(RL_STEPS):
    helper.text = city = CITIES[cities[step]]
    examples = []
    for kind in kinds:
      questions, answers, _ = QUESTIONS[kind]
      examples += [dict(question=q, answers=answers(city), private_facts=[], task="", kind=kind)
                   for q in questions]
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    trainable, opt_state, metrics, episodes, _ = cycle.rl_iteration(ctx, trainable, opt_state,
                                                                 ref, examples, rng)
    rows.append(metrics)
    kind_of = np.array([examples[i]["kind"] for i in episodes.question_index])
    by_kind.append({k: float(episodes.num_messages[kind_of == k].mean()) for k in kinds})
  params = trainable_lib.merge(spec, trainable, frozen)
  return rows, by_kind, model.replace(params=params)


def ask_rates(model, episodes_per_question=16, seed=7):
  """{kind: fraction of sampled episodes (temperature 1) that send a message}."""
  rates = {}
  for kind, (questions, _, _) in sorted(QUESTIONS.items()):
    eps = sj.rollout(model, questions * episodes_per_question, ScriptedHelper(text=INFO),
                     rollout_config(**ROLLOUT), jax.random.PRNGKey(seed))
    rates[kind] = float((eps.num_messages > 0).mean())
  return rates


@pytest.mark.parametrize("city", CITIES)
def test_cold_start_follows_the_protocol_and_asks_about_half_the_time(cold_model, city):
  model, curve, floor = cold_model
  print(f"\ncold start NLL per {CHUNK} steps {np.round(curve, 4).tolist()} (floor {floor:.4f})")
  assert curve[-1] < floor + TOLERANCE, curve
  eps = sj.rollout(model, ALL_QUESTIONS * 4, ScriptedHelper(text=city),
                   rollout_config(**ROLLOUT), jax.random.PRNGKey(123))
  # It asks on some episodes and not on others: room to move both ways.
  assert 0.1 <= eps.num_messages.mean() <= 0.9, eps.num_messages
  answered = [a for a in eps.answers if a is not None]
  assert len(answered) >= 15, eps.answers
  for a, n in zip(eps.answers, eps.num_messages):
    if a is not None:   # after asking, the city the feedback named
      assert a == (city if n else ALONE_ANSWER), (a, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_rl_moves_the_number_of_messages_the_right_way_for_each_kind(cold_model, seed):
  model, _, _ = cold_model
  before = ask_rates(model)
  rows, by_kind, trained = run_rl(model, seed=seed)
  after = ask_rates(trained)
  rewards = [r["reward"] for r in rows]
  print(f"\nreward by step {np.round(rewards, 3).tolist()}")
  for kind, (_, _, sign) in sorted(QUESTIONS.items()):
    msgs = [b[kind] for b in by_kind]
    print(f"{kind}: messages/episode by step {np.round(msgs, 2).tolist()}; "
          f"asks {before[kind]:.3f} before RL -> {after[kind]:.3f} after (32 sampled episodes)")
    # At lr 1e-4 the training batches moved by less than their sampling noise in 30 steps.
    assert sign * (after[kind] - before[kind]) >= 0.3, (kind, before, after, msgs)
  assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.05, rewards
  # the protocol survives: the last episodes still end with an answer
  assert np.mean([r["format_ok"] for r in rows[-5:]]) >= 0.8, [r["format_ok"] for r in rows]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["kl"]) for r in rows)
