"""Test fixtures for the rollout: a tiny model overfit to follow a scripted protocol, and
scripted helpers. The model is trained (a few hundred Adam steps) to emit exactly

  <think>...</think><message>...</message>  -> feedback ->  ... -> <answer>...</answer><eos>

so multi-turn episodes happen for real, through real sampling."""
from __future__ import annotations

import asyncio

import jax
import jax.numpy as jnp
import numpy as np
import optax

import seekjax as sj
from seekjax import protocol
from seekjax.helpers.base import Helper, HelperReply
from seekjax.models import decoder
from seekjax.coldstart import sft

FEEDBACK = "the capital is Asmara"
SYSTEM = "Think, then <answer> or <message>."  # short, so the overfit stays cheap


class ScriptedHelper(Helper):
  """Replies with fixed info after an optional delay; counts calls."""

  def __init__(self, text=FEEDBACK, delay=0.0, kind="info"):
    self.text, self.delay, self.kind = text, delay, kind
    self.calls = []

  async def respond(self, message, history):
    self.calls.append((message, len(history)))
    if self.delay:
      await asyncio.sleep(self.delay)
    return HelperReply(self.kind, self.text, tokens=len(self.text.split()))


def feedback_text(tokenizer, reply: HelperReply) -> str:
  return protocol.format_feedback(reply, special_tokens=tokenizer.special_tokens) + "\n"


def script_ids(tokenizer, question, turns: list[str], feedback: str):
  """Prompt ids and the full scripted episode (ids, mask), laid out as the rollout does."""
  prompt = tokenizer.encode_chat(protocol.slm_messages(question, SYSTEM))
  demo = sft.Demo(question, turns, [feedback.rstrip("\n")] * (len(turns) - 1))
  ids, mask = sft.demo_ids(tokenizer, demo, system=SYSTEM)
  return prompt, ids, mask


def overfit(model, sequences, masks, until=0.1, max_steps=600, lr=1e-2):
  """Train `model` to reproduce the masked tokens of each sequence (teacher forcing).

  Trains until the mean NLL is below `until` (a convergence criterion, so the result does
  not hang on one float trajectory, which differs with the ISA XLA compiles for), or
  `max_steps`. Only the LM head rows at predicted positions are computed, which keeps this
  cheap with a 49k vocabulary. Returns (model, last NLL).
  """
  width = max(len(s) for s in sequences)
  k = max(int(m[1:].sum()) for m in masks)
  toks = np.zeros((len(sequences), width), np.int32)
  src = np.zeros((len(sequences), k), np.int32)   # position whose logits predict...
  tgt = np.zeros((len(sequences), k), np.int32)   # ...this token
  w = np.zeros((len(sequences), k), np.float32)
  for i, (s, m) in enumerate(zip(sequences, masks)):
    toks[i, :len(s)] = s
    where = np.flatnonzero(m[1:]) + 1
    src[i, :len(where)] = where - 1
    tgt[i, :len(where)] = s[where]
    w[i, :len(where)] = 1.0
  toks, src, tgt, w = map(jnp.asarray, (toks, src, tgt, w))
  cfg = model.config
  pos = jnp.broadcast_to(jnp.arange(width), toks.shape)
  opt = optax.adam(lr)

  def loss_fn(p):
    x, _ = decoder.hidden_states(p, cfg, toks, pos)
    x = jnp.take_along_axis(x, src[..., None], axis=1)
    lp = jax.nn.log_softmax(decoder.lm_head(p, cfg, x))
    nll = -jnp.take_along_axis(lp, tgt[..., None], -1)[..., 0]
    return jnp.sum(nll * w) / jnp.sum(w)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  params, state = model.params, opt.init(model.params)
  for _ in range(max_steps):
    params, state, loss = step(params, state)
    if float(loss) < until:
      break
  return model.replace(params=params), float(loss)
