"""Rollout engine benchmarks on SmolLM2-135M (float32, CPU), every figure measured side by side.

Sections (--sections, default all):
  throughput  16 rows x 3 helper turns: `sj.rollout` (KV cache kept, feedback appended in
              place) vs the re-prefill host loop of benchmarks/reprefill_baseline.py
              (Search-R1 / tunix-vanilla style), same model, greedy, same helper; checks that
              both give identical tokens per row. Episodes/s.
  latency     the same rollout with a 250 ms helper vs an instant one (async pool), and
              with the callback made blocking (rollout_config(blocking=True)); for rows
              that all ask at the same step ("sync") and for rows that ask at different
              steps ("stagger").
  decode      single-turn decode through `sj.rollout` (no messages, 128 tokens, batch 16,
              eos disabled so every row runs the full length) vs transformers `generate`
              on the same weights (and `sj.generate_ids` for reference). Tokens/s.

To make SmolLM2 really send 3 messages, its top layers are first fine-tuned (Adam, frozen
bottom layers whose outputs are computed once) on scripted 3-message episodes; the
result is cached under ~/.cache/seekjax/bench/ so reruns skip it.

  .venv/bin/python benchmarks/rollout_bench.py [--quick] [--sections throughput,latency,decode]
      [--reps 3] [--rows 16] [--steps-per-call 16] [--out benchmarks/results/rollout_bench.json]

Repetitions alternate between the compared variants (A B A B ...) after one warm-up run of
each (compile); the tables give medians with min-max.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# ---------------------------------------------------------------------------- the script
SHORT_SYSTEM = "Think, then <answer> or <message>."  # the rollout tests' short prompt

# (country, capital, population of the capital) -- the helper's knowledge
FACTS = [
    ("Eritrea", "Asmara", "900 thousand"), ("Burkina Faso", "Ouagadougou", "2.5 million"),
    ("Bhutan", "Thimphu", "115 thousand"), ("Mongolia", "Ulaanbaatar", "1.6 million"),
    ("Kyrgyzstan", "Bishkek", "1.1 million"), ("Paraguay", "Asuncion", "520 thousand"),
    ("Malawi", "Lilongwe", "1.1 million"), ("Laos", "Vientiane", "950 thousand"),
    ("Suriname", "Paramaribo", "240 thousand"), ("Namibia", "Windhoek", "430 thousand"),
    ("Slovenia", "Ljubljana", "290 thousand"), ("Tajikistan", "Dushanbe", "860 thousand"),
    ("Mauritania", "Nouakchott", "1.3 million"), ("Fiji", "Suva", "95 thousand"),
    ("Latvia", "Riga", "610 thousand"), ("Gabon", "Libreville", "700 thousand"),
    ("Nepal", "Kathmandu", "850 thousand"), ("Moldova", "Chisinau", "640 thousand"),
    ("Rwanda", "Kigali", "1.2 million"), ("Benin", "Porto-Novo", "260 thousand"),
]
# Per-row context sentences that the scripted first think copies: rows with more of them
# close their first </message> later, so rows reach the helper at different steps.
CONTEXT = ["My aunt lives there.", "She loves the food.", "We visit in May."]


def question(i: int, k: int) -> str:
  country = FACTS[i % len(FACTS)][0]
  return " ".join(CONTEXT[:k] + [f"What is the capital of {country}?"])


def script_turns(i: int, k: int) -> list[str]:
  country, capital, _ = FACTS[i % len(FACTS)]
  ctx = " ".join(CONTEXT[:k] + [""])
  return [
      f"<think>{ctx}I need the capital of {country}.</think>"
      f"<message>What is the capital of {country}?</message>",
      f"<think>The helper says {capital}. I will check.</think>"
      f"<message>Is {capital} the capital of {country}?</message>",
      f"<think>Yes. How many people live in {capital}?</think>"
      f"<message>What is the population of {capital}?</message>",
      f"<think>The capital of {country} is {capital}.</think><answer>{capital}</answer>",
  ]


def helper_text(message: str) -> str:
  """The scripted helper's reply: a pure function of the message."""
  hit = None
  for country, capital, pop in FACTS:
    if country.lower() in message.lower() or capital.lower() in message.lower():
      hit = (country, capital, pop)
      break
  if hit is None:
    return "I do not know that."
  country, capital, pop = hit
  if "population" in message.lower() or "people" in message.lower():
    return f"{capital} has about {pop} people."
  if message.strip().lower().startswith("is "):
    return f"Yes, {capital} is the capital of {country}."
  return f"The capital of {country} is {capital}."


def make_helper(delay: float = 0.0):
  from seekjax.helpers.base import Helper, HelperReply

  class ScriptHelper(Helper):
    """Deterministic replies (see helper_text) after `delay` seconds; counts calls."""
    name = "script"

    def __init__(self):
      self.calls = 0

    async def respond(self, message, history):
      self.calls += 1
      if delay:
        await asyncio.sleep(delay)
      text = helper_text(message)
      return HelperReply("info", text, tokens=len(text.split()))

  return ScriptHelper()


def stagger_questions(n: int) -> list[str]:
  return [question(i, i % 4) for i in range(n)]


def sync_questions(n: int) -> list[str]:
  return [question(0, 0)] * n


# ---------------------------------------------------------------------------- utilities
from benchmarks.decode_vs_hf import loadavg, log  # noqa: E402  (after ROOT is on sys.path)


def med_range(xs):
  return statistics.median(xs), min(xs), max(xs)


def fmt_rate(n, times):
  m, lo, hi = med_range(times)
  return f"{n / m:.3f} ({n / hi:.3f}-{n / lo:.3f})"


def fmt_s(times):
  m, lo, hi = med_range(times)
  return f"{m:.1f} ({lo:.1f}-{hi:.1f})"


# ---------------------------------------------------------------------------- fine-tune
def _layer(cfg, lp, x, pos, mask):
  """One Llama block (SmolLM2 has no biases / q-k norm), built from seekjax.models.decoder."""
  import jax
  from seekjax.models import attention, decoder
  b, t, _ = x.shape
  h = decoder.rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
  q = (h @ lp["q"]).reshape(b, t, cfg.num_heads, cfg.head_dim)
  k = (h @ lp["k"]).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
  v = (h @ lp["v"]).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
  q, k = decoder.rope(q, pos, cfg.rope_theta), decoder.rope(k, pos, cfg.rope_theta)
  x = x + attention.attention(q, k, v, mask) @ lp["o"]
  h = decoder.rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
  return x + (jax.nn.silu(h @ lp["gate"]) * (h @ lp["up"])) @ lp["down"]


def _run_layers(cfg, layers, x, pos, mask):
  import jax
  return jax.lax.scan(lambda x, lp: (_layer(cfg, lp, x, pos, mask), None), x, layers)[0]


def training_demos(tok, n_short: int, n_long: int):
  """(ids, mask) of scripted episodes: n_short with SHORT_SYSTEM, n_long with the real prompt."""
  from seekjax import protocol
  from seekjax.helpers.base import HelperReply
  from seekjax.coldstart import sft
  out = []
  for j in range(n_short + n_long):
    i, k = j, j % 4
    turns = script_turns(i, k)
    msgs = [protocol.parse_slm_turn(t).text for t in turns[:-1]]
    fbs = [protocol.format_feedback(HelperReply("info", helper_text(m)),
                                    special_tokens=tok.special_tokens) for m in msgs]
    system = SHORT_SYSTEM if j < n_short else protocol.SLM_SYSTEM_PROMPT
    out.append(sft.demo_ids(tok, sft.Demo(question(i, k), turns, fbs), system=system,
                            max_feedback_tokens=48))
  return out


def protocol_model(model, args):
  """SmolLM2 with its top layers fine-tuned to follow the scripted 3-message protocol."""
  import jax
  import jax.numpy as jnp
  import optax
  cfg, tok = model.config, model.tokenizer
  demos = training_demos(tok, args.ft_short, args.ft_long)
  n_top, n_bot = args.ft_layers, cfg.num_layers - args.ft_layers
  base = model.params["layers"]
  key = hashlib.sha256(json.dumps(dict(
      ids=[d[0].tolist() for d in demos], masks=[d[1].tolist() for d in demos], top=n_top,
      lr=args.ft_lr, steps=args.ft_steps, target=args.ft_target,
      base=float(jnp.sum(base["down"][-1])), v=2)).encode()).hexdigest()[:16]
  path = os.path.join(os.path.expanduser("~"), ".cache", "seekjax", "bench",
                      f"smollm2_protocol_{key}.npz")
  if os.path.exists(path):
    top = dict(np.load(path))
    log(f"fine-tuned top {n_top} layers loaded from {path}")
  else:
    log(f"fine-tuning the top {n_top} of {cfg.num_layers} layers on {len(demos)} scripted "
        f"episodes (Adam lr {args.ft_lr}, <= {args.ft_steps} steps); cached to {path}")
    bottom = jax.tree.map(lambda x: x[:n_bot], base)
    top = jax.tree.map(lambda x: x[n_bot:], base)
    groups = []  # short and long demos padded separately (different widths)
    for sel in ([d for d in demos[:args.ft_short]], [d for d in demos[args.ft_short:]]):
      if not sel:
        continue
      w = max(len(i) for i, _ in sel)
      ids = np.zeros((len(sel), w), np.int32)
      valid = np.zeros((len(sel), w), bool)
      k = max(int(m[1:].sum()) for _, m in sel)
      src, tgt, wt = (np.zeros((len(sel), k), np.int32) for _ in range(3))
      for r, (s, m) in enumerate(sel):
        ids[r, :len(s)], valid[r, :len(s)] = s, True
        where = np.flatnonzero(m[1:]) + 1
        src[r, :len(where)], tgt[r, :len(where)], wt[r, :len(where)] = where - 1, s[where], 1
      pos = np.broadcast_to(np.arange(w), ids.shape).astype(np.int32)
      mask = (pos[:, None, :] <= pos[:, :, None]) & valid[:, None, :]
      x = model.params["embed"][jnp.asarray(ids)]
      h = jax.jit(lambda b, x, p, m: _run_layers(cfg, b, x, p, m))(bottom, x, pos, mask)
      groups.append(tuple(map(jnp.asarray, (h, pos, mask, src, tgt, wt))))
    total = sum(float(g[-1].sum()) for g in groups)
    frozen = dict(embed=model.params["embed"], final_norm=model.params["final_norm"])

    def loss_fn(top, frozen, groups):  # everything an argument: nothing constant-folded
      from seekjax.models import decoder
      nll = 0.0
      for h, pos, mask, src, tgt, wt in groups:
        x = _run_layers(cfg, top, h, pos, mask)
        x = jnp.take_along_axis(x, src[..., None], axis=1)
        x = decoder.rms_norm(x, frozen["final_norm"], cfg.rms_norm_eps)
        lp = jax.nn.log_softmax(jnp.einsum("bkd,vd->bkv", x, frozen["embed"]), axis=-1)
        nll = nll + jnp.sum(-jnp.take_along_axis(lp, tgt[..., None], -1)[..., 0] * wt)
      return nll / total

    opt = optax.adam(args.ft_lr)

    @jax.jit
    def step(top, st, frozen, groups):
      loss, g = jax.value_and_grad(loss_fn)(top, frozen, groups)
      u, st = opt.update(g, st, top)
      return optax.apply_updates(top, u), st, loss

    st = opt.init(top)
    t0 = time.perf_counter()
    for s in range(args.ft_steps):
      top, st, loss = step(top, st, frozen, groups)
      loss = float(loss)
      if s % 5 == 0 or loss < args.ft_target:
        log(f"  step {s + 1}: loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)")
      if loss < args.ft_target:
        break
    top = {k: np.asarray(v) for k, v in top.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **top)
    os.replace(path + ".tmp.npz", path)
  layers = {k: jnp.concatenate([v[:n_bot], jnp.asarray(top[k])]) for k, v in base.items()}
  return model.replace(params={**model.params, "layers": layers})


# ---------------------------------------------------------------------------- profiling
@contextlib.contextmanager
def engine_profile(record: dict):
  """Time every jitted engine call (blocking until ready) by wrapping the module functions."""
  import jax
  from seekjax.rollout import engine
  names = ("prefill", "decode_until_blocked", "append_chunk")
  orig = {n: getattr(engine, n) for n in names}
  for n in names:
    record.setdefault(n, {"calls": 0, "seconds": 0.0})
  record.setdefault("decode_steps", 0)
  record.setdefault("append_rows", [])
  record.setdefault("append_width", [])

  def wrap(n):
    def fn(*a, **kw):
      t0 = time.perf_counter()
      out = jax.block_until_ready(orig[n](*a, **kw))
      record[n]["calls"] += 1
      record[n]["seconds"] += time.perf_counter() - t0
      if n == "decode_until_blocked":
        record["decode_steps"] += int(out.steps)
      if n == "append_chunk":
        record["append_rows"].append(int(np.sum(np.asarray(a[3]) > 0)))
        record["append_width"].append(int(a[2].shape[1]))
      return out
    fn.lower = orig[n].lower   # the rollout's warm-up compiles ahead of time; not timed
    return fn

  for n in names:
    setattr(engine, n, wrap(n))
  try:
    yield record
  finally:
    for n in names:
      setattr(engine, n, orig[n])


# ---------------------------------------------------------------------------- sections
def rollout_cfg(args, system, **kw):
  import seekjax as sj
  base = dict(max_turns=3, max_new_tokens=64, max_message_tokens=32, max_feedback_tokens=48,
              max_episode_tokens=256, temperature=0.0, max_steps_per_call=args.steps_per_call,
              helper_timeout=60.0, helper_concurrency=64, on_outage="wait", system_prompt=system)
  base.update(kw)
  return sj.rollout_config(**base)


def compare_rows(eps, base):
  """How many rows have identical tokens, loss masks, message counts and finish reasons."""
  same = 0
  first_bad = None
  for i in range(len(eps)):
    n = int(eps.lengths[i])
    ok = (n == int(base.lengths[i])
          and np.array_equal(eps.tokens[i, :n], base.tokens[i, :n])
          and np.array_equal(eps.loss_mask[i, :n], base.loss_mask[i, :n])
          and int(eps.num_messages[i]) == int(base.num_messages[i])
          and eps.finish[i] == base.finish[i] and eps.messages[i] == base.messages[i])
    same += ok
    if not ok and first_bad is None:
      first_bad = i
  return same, first_bad


def section_throughput(model, args, res):
  import jax
  import seekjax as sj
  from seekjax import protocol
  from benchmarks.reprefill_baseline import reprefill_rollout
  rows = []
  systems = {"short": SHORT_SYSTEM, "full": protocol.SLM_SYSTEM_PROMPT}
  for sys_name in args.systems.split(","):
    for scen in args.tp_scenarios.split(","):
      qs = stagger_questions(args.rows) if scen == "stagger" else sync_questions(args.rows)
      cfg = rollout_cfg(args, systems[sys_name])
      tag = f"{sys_name} prompt, {scen}"
      log(f"[throughput] {tag}: warm-up (compile) seekjax")
      t0 = time.perf_counter()
      eps = sj.rollout(model, qs, make_helper(), cfg, jax.random.PRNGKey(0))
      warm_sj = time.perf_counter() - t0
      log(f"  {warm_sj:.1f}s; messages/row {eps.num_messages.tolist()} finish "
          f"{sorted(set(eps.finish))}; prompt tokens {eps.prompt_lengths.min()}-"
          f"{eps.prompt_lengths.max()}; episode tokens {(eps.lengths - eps.prompt_lengths).min()}"
          f"-{(eps.lengths - eps.prompt_lengths).max()}")
      log(f"  row 0: {eps.transcripts[0]!r}")
      log(f"[throughput] {tag}: warm-up (compile) re-prefill baseline")
      t0 = time.perf_counter()
      base = reprefill_rollout(model, qs, make_helper(), cfg)
      warm_base = time.perf_counter() - t0
      same, bad = compare_rows(eps, base)
      log(f"  {warm_base:.1f}s; identical rows {same}/{len(eps)}"
          + (f" (first differing row {bad})" if bad is not None else ""))
      t_sj, t_base, loads, base_runs, profs = [], [], [], [], []
      for r in range(args.reps):
        loads.append(loadavg())
        order = ("sj", "base") if r % 2 == 0 else ("base", "sj")
        for which in order:
          t0 = time.perf_counter()
          if which == "sj":  # profiled: each jitted engine call is timed (blocking on it)
            prof = {}
            with engine_profile(prof):
              peps = sj.rollout(model, qs, make_helper(), cfg, jax.random.PRNGKey(0))
            t_sj.append(time.perf_counter() - t0)
            prof.update(wall=t_sj[-1], helper_wait=peps.helper_wait_time)
            profs.append(prof)
          else:
            base_runs.append(reprefill_rollout(model, qs, make_helper(), cfg))
            t_base.append(time.perf_counter() - t0)
        log(f"  rep {r + 1}/{args.reps}: seekjax {t_sj[-1]:.1f}s  re-prefill {t_base[-1]:.1f}s "
            f"(load {loads[-1]:.1f})")
      prof = sorted(profs, key=lambda p: p["wall"])[len(profs) // 2]
      log(f"  engine profile (median rep): {json.dumps(prof)}")
      b = sorted(base_runs, key=lambda x: x.wall_time)[len(base_runs) // 2]
      row = dict(
          system=sys_name, scenario=scen, rows=len(qs), seekjax_s=t_sj, baseline_s=t_base,
          ratio=statistics.median(t_base) / statistics.median(t_sj),
          warmup_seekjax_s=warm_sj, warmup_baseline_s=warm_base,
          identical_rows=same, messages_per_row=eps.num_messages.tolist(),
          finish=sorted(set(eps.finish)), episode_tokens=(eps.lengths - eps.prompt_lengths).tolist(),
          prompt_tokens=eps.prompt_lengths.tolist(), engine_profile=prof,
          baseline_breakdown=dict(model_s=b.model_time, helper_wait_s=b.helper_wait_time,
                                  turns=b.turns, prefilled_tokens=b.prefilled_tokens,
                                  decode_steps=b.decode_steps),
          loadavg_1m=loads)
      rows.append(row)
      log(f"[throughput] {tag}: seekjax {fmt_rate(len(qs), t_sj)} eps/s, re-prefill "
          f"{fmt_rate(len(qs), t_base)} eps/s, ratio {row['ratio']:.2f}")
  table = ["| prompt | rows ask | seekjax eps/s (min-max) | re-prefill eps/s (min-max) | "
           "seekjax / re-prefill | identical rows | messages/row |",
           "|---|---|---:|---:|---:|---:|---|"]
  for r in rows:
    table.append(f"| {r['system']} | {r['scenario']} | {fmt_rate(r['rows'], r['seekjax_s'])} | "
                 f"{fmt_rate(r['rows'], r['baseline_s'])} | {r['ratio']:.2f}x | "
                 f"{r['identical_rows']}/{r['rows']} | {sorted(set(r['messages_per_row']))} |")
  table += ["", "| prompt | rows ask | seekjax: prefill s | decode s (calls, steps, ms/step) | "
            "append s (calls, rows/call) | helper wait s | re-prefill: model s (turns, "
            "prefilled tokens, decode steps) |", "|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    p, bb = r["engine_profile"], r["baseline_breakdown"]
    d = p["decode_until_blocked"]
    rows_per = (statistics.mean(p["append_rows"]) if p["append_rows"] else 0)
    table.append(
        f"| {r['system']} | {r['scenario']} | {p['prefill']['seconds']:.1f} | "
        f"{d['seconds']:.1f} ({d['calls']}, {p['decode_steps']}, "
        f"{1e3 * d['seconds'] / max(p['decode_steps'], 1):.0f}) | "
        f"{p['append_chunk']['seconds']:.1f} ({p['append_chunk']['calls']}, {rows_per:.1f}) | "
        f"{p['helper_wait']:.2f} | {bb['model_s']:.1f} ({bb['turns']}, {bb['prefilled_tokens']}, "
        f"{bb['decode_steps']}) |")
  res["throughput"] = dict(rows=rows, markdown="\n".join(table))
  print("\n" + res["throughput"]["markdown"] + "\n", flush=True)


def section_latency(model, args, res):
  import jax
  import seekjax as sj
  rows = []
  delay = args.delay
  for scen in args.scenarios.split(","):
    qs = stagger_questions(args.rows) if scen == "stagger" else sync_questions(args.rows)
    modes = {"instant": (0.0, False), "slow": (delay, False), "slow_blocking": (delay, True)}
    times = {m: [] for m in modes}
    info = {m: {} for m in modes}
    log(f"[latency] {scen}: warm-up (compile; the modes share every compiled shape)")
    eps = sj.rollout(model, qs, make_helper(), rollout_cfg(args, SHORT_SYSTEM),
                     jax.random.PRNGKey(0))
    log(f"  {eps.wall_time:.1f}s; messages/row {eps.num_messages.tolist()}")
    loads = []
    for r in range(args.reps):
      loads.append(loadavg())
      order = list(modes) if r % 2 == 0 else list(modes)[::-1]
      for m in order:
        d, blocking = modes[m]
        cfg = rollout_cfg(args, SHORT_SYSTEM, blocking=blocking)
        t0, c0 = time.perf_counter(), time.process_time()
        eps = sj.rollout(model, qs, make_helper(d), cfg, jax.random.PRNGKey(0))
        times[m].append(time.perf_counter() - t0)
        info[m].setdefault("helper_wait_s", []).append(eps.helper_wait_time)
        info[m].setdefault("cpu_s", []).append(time.process_time() - c0)
        info[m]["messages"] = eps.num_messages.tolist()
      log(f"  rep {r + 1}/{args.reps}: " + "  ".join(f"{m} {times[m][-1]:.1f}s" for m in modes)
          + f" (load {loads[-1]:.1f})")
    inst = statistics.median(times["instant"])
    row = dict(scenario=scen, rows=len(qs), delay_s=delay, times=times, info=info,
               slow_over_instant=statistics.median(times["slow"]) / inst,
               blocking_over_instant=statistics.median(times["slow_blocking"]) / inst,
               serial_helper_s=3 * len(qs) * delay, loadavg_1m=loads)
    rows.append(row)
    log(f"[latency] {scen}: slow/instant {row['slow_over_instant']:.2f}, blocking/instant "
        f"{row['blocking_over_instant']:.2f}")
  table = [f"| rows ask | instant s | {delay * 1e3:.0f} ms helper s | {delay * 1e3:.0f} ms "
           "blocking s | slow / instant | blocking / instant | host idle waiting (slow) s | "
           "process CPU s: instant / slow / blocking |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    t = r["times"]
    table.append(f"| {r['scenario']} | {fmt_s(t['instant'])} | {fmt_s(t['slow'])} | "
                 f"{fmt_s(t['slow_blocking'])} | {r['slow_over_instant']:.2f}x | "
                 f"{r['blocking_over_instant']:.2f}x | "
                 f"{statistics.median(r['info']['slow']['helper_wait_s']):.2f} | "
                 + " / ".join(f"{statistics.median(r['info'][m]['cpu_s']):.0f}"
                              for m in ("instant", "slow", "slow_blocking")) + " |")
  res["latency"] = dict(rows=rows, markdown="\n".join(table))
  print("\n" + res["latency"]["markdown"] + "\n", flush=True)


DECODE_PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Describe, in detail, a day in the life of a lighthouse keeper.",
    "Explain how a steam engine works, step by step.",
    "Write a letter to a friend about your trip to the mountains.",
    "Tell the history of the bicycle.",
    "Describe the water cycle to a ten year old.",
    "Write a travel guide for a small fishing village.",
    "Explain why the sky is blue.",
]


def hf_model(model):
  """transformers LlamaForCausalLM with our weights (seekjax.models.export when present)."""
  try:
    from seekjax.models import export
    return export.to_hf_model(model, bos_token_id=None, eos_token_id=None,
                              pad_token_id=model.tokenizer.pad_id), "seekjax.models.export"
  except ImportError:
    pass
  import torch
  import transformers
  cfg, p = model.config, model.params
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
      rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
      tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None,
      pad_token_id=model.tokenizer.pad_id)
  hf = transformers.LlamaForCausalLM(hf_cfg)
  t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))  # noqa: E731
  sd = {"model.embed_tokens.weight": t(p["embed"]), "model.norm.weight": t(p["final_norm"])}
  names = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
               o="self_attn.o_proj", gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj")
  for i in range(cfg.num_layers):
    for ours, theirs in names.items():
      sd[f"model.layers.{i}.{theirs}.weight"] = t(np.asarray(p["layers"][ours][i]).T)
    sd[f"model.layers.{i}.input_layernorm.weight"] = t(p["layers"]["attn_norm"][i])
    sd[f"model.layers.{i}.post_attention_layernorm.weight"] = t(p["layers"]["mlp_norm"][i])
  hf.load_state_dict(sd, strict=False)
  hf.tie_weights()
  return hf.eval(), "built in rollout_bench.py"


def section_decode(model, args, res):
  import jax
  import torch
  import transformers
  import seekjax as sj
  new, b = args.decode_tokens, args.rows
  tok = model.tokenizer
  no_eos = copy.copy(tok)
  no_eos.eos_ids = ()  # rows may not stop early: every row decodes `new` tokens
  m = model.replace(tokenizer=no_eos)
  qs = [DECODE_PROMPTS[i % len(DECODE_PROMPTS)] for i in range(b)]
  cfg = sj.rollout_config(max_turns=0, max_new_tokens=new, temperature=0.0,
                          max_steps_per_call=new, system_prompt="You are a helpful assistant.")
  helper = make_helper()
  hf, how = hf_model(model)
  hf.generation_config.eos_token_id = None
  hf.generation_config.bos_token_id = None
  hf.generation_config.pad_token_id = tok.pad_id
  log(f"[decode] transformers model via {how}; torch threads {torch.get_num_threads()}")

  def run_sj():
    t0 = time.perf_counter()
    eps = sj.rollout(m, qs, helper, cfg, jax.random.PRNGKey(0))
    return time.perf_counter() - t0, eps

  log("[decode] warm-up sj.rollout")
  t, eps = run_sj()
  gen_len = (eps.lengths - eps.prompt_lengths)
  sampled = eps.loss_mask.sum(1)
  log(f"  {t:.1f}s; finish {sorted(set(eps.finish))}; sampled tokens/row {sorted(set(sampled.tolist()))};"
      f" helper calls {helper.calls}")
  prompts = [eps.tokens[i, :eps.prompt_lengths[i]].tolist() for i in range(b)]
  width = max(map(len, prompts))
  ids = torch.full((b, width), tok.pad_id, dtype=torch.long)
  attn = torch.zeros((b, width), dtype=torch.long)
  for i, p in enumerate(prompts):  # left padding for generate
    ids[i, width - len(p):] = torch.tensor(p)
    attn[i, width - len(p):] = 1

  def run_hf(threads):
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with torch.inference_mode():
      out = hf.generate(input_ids=ids, attention_mask=attn, max_new_tokens=new,
                        min_new_tokens=new, do_sample=False, use_cache=True, eos_token_id=None,
                        pad_token_id=tok.pad_id)
    return time.perf_counter() - t0, out[:, width:].numpy()

  def run_gen():
    t0 = time.perf_counter()
    out = sj.generate_ids(model, prompts, max_new_tokens=new, temperature=0.0, stop_ids=())
    return time.perf_counter() - t0, np.asarray(out)

  impls = {"rollout": lambda: run_sj()[0]}
  for th in args.torch_threads:  # torch is timed at each thread count; the best one counts
    log(f"[decode] warm-up transformers ({th} torch threads)")
    t, hf_out = run_hf(th)
    log(f"  {t:.1f}s")
    impls[f"hf{th}"] = functools.partial(lambda th: run_hf(th)[0], th)
  if args.decode_generate:
    log("[decode] warm-up sj.generate_ids")
    t, gen_out = run_gen()
    log(f"  {t:.1f}s")
    impls["generate_ids"] = lambda: run_gen()[0]
  sj_out = np.stack([eps.tokens[i, eps.prompt_lengths[i]:eps.lengths[i]] for i in range(b)])
  agree = [int(np.sum(np.cumprod(sj_out[i] == hf_out[i]))) for i in range(b)]
  log(f"  greedy agreement with transformers (leading identical tokens per row): {agree}")
  times = {k: [] for k in impls}
  loads = []
  for r in range(args.reps):
    loads.append(loadavg())
    order = list(impls) if r % 2 == 0 else list(impls)[::-1]
    for k in order:
      times[k].append(impls[k]())
    log(f"  rep {r + 1}/{args.reps}: " + "  ".join(
        f"{k} {times[k][-1]:.1f}s ({b * new / times[k][-1]:.1f} tok/s)" for k in impls)
        + f" (load {loads[-1]:.1f})")
  row = dict(rows=b, new_tokens=new, times=times, finish=sorted(set(eps.finish)),
             sampled_per_row=sorted(set(sampled.tolist())), generated_per_row=gen_len.tolist(),
             helper_calls=helper.calls, agree_leading=agree, hf_built_by=how,
             ratio=min(statistics.median(times[f"hf{th}"]) for th in args.torch_threads)
             / statistics.median(times["rollout"]),
             torch_threads=args.torch_threads, transformers=transformers.__version__,
             torch=torch.__version__, loadavg_1m=loads)
  table = ["| implementation | tokens/s (min-max) | speed vs best transformers |",
           "|---|---:|---:|"]
  hf_med = min(statistics.median(times[f"hf{th}"]) for th in args.torch_threads)
  names = {"rollout": "sj.rollout (max_turns=0)", "generate_ids": "sj.generate_ids (reference)"}
  names.update({f"hf{th}": f"transformers generate, {th} torch thread(s)"
                for th in args.torch_threads})
  for k in impls:
    table.append(f"| {names[k]} | {fmt_rate(b * new, times[k])} | "
                 f"{hf_med / statistics.median(times[k]):.2f}x |")
  res["decode"] = dict(rows=[row], markdown="\n".join(table))
  print("\n" + res["decode"]["markdown"] + "\n", flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="smoke run: 4 rows, 1 rep, short decode")
  ap.add_argument("--sections", default="throughput,latency,decode")
  ap.add_argument("--rows", type=int, default=16)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--systems", default="short,full", help="throughput system prompts")
  ap.add_argument("--scenarios", default="stagger,sync", help="latency scenarios")
  ap.add_argument("--tp-scenarios", default="stagger", help="throughput scenarios")
  ap.add_argument("--steps-per-call", type=int, default=16, help="rollout max_steps_per_call")
  ap.add_argument("--delay", type=float, default=0.25, help="slow helper latency, seconds")
  ap.add_argument("--decode-tokens", type=int, default=128)
  ap.add_argument("--decode-generate", type=int, default=1, help="also time sj.generate_ids")
  ap.add_argument("--torch-threads", default="1,2", help="transformers thread counts to time")
  ap.add_argument("--ft-layers", type=int, default=6)
  ap.add_argument("--ft-steps", type=int, default=60)
  ap.add_argument("--ft-lr", type=float, default=3e-4)
  ap.add_argument("--ft-target", type=float, default=0.01)
  ap.add_argument("--ft-short", type=int, default=8)
  ap.add_argument("--ft-long", type=int, default=4)
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  if args.quick:
    args.rows, args.reps, args.decode_tokens = 4, 1, 16
    args.systems, args.decode_generate = "short", 0
  args.torch_threads = [int(t) for t in str(args.torch_threads).split(",")]
  name = "rollout_bench" + ("" if "," in args.sections else "_" + args.sections)
  args.out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                      name + ("_quick" if args.quick else "") + ".json")
  import jax
  import seekjax as sj
  log(f"cpus={os.cpu_count()} jax={jax.__version__} loadavg(1m)={loadavg():.2f} args={vars(args)}")
  model = sj.load_model("smollm2-135m", dtype="float32")
  sections = args.sections.split(",")
  res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             command="python " + " ".join([os.path.relpath(__file__, ROOT)] +
                                          (argv if argv is not None else sys.argv[1:])),
             host=platform.node(), cpus=os.cpu_count(), jax=jax.__version__, args=vars(args))
  if "throughput" in sections or "latency" in sections:
    pm = protocol_model(model, args)
  if "throughput" in sections:
    section_throughput(pm, args, res)
  if "latency" in sections:
    section_latency(pm, args, res)
  if "decode" in sections:
    section_decode(model, args, res)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1, default=str)
  for s in ("throughput", "latency", "decode"):
    if s in res:
      print(f"## {s}\n\n{res[s]['markdown']}\n")
  log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
