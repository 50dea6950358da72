"""The one schema of a run config: every key, its default, and the values it allows.

`get_config()` returns the defaults; every config file derives from it (directly, or
through a parent config file) by a plain import and changes values only. `SCHEMA` holds
each key as `(default, allowed)`, read by `seekjax.configlib`, which checks every
loaded config against it once, before a run writes anything:

    None           any value of the default's type
    ">= 1", "> 0"  a number at least / above a bound
    "[0, 1]"       a number within bounds ("(" and ")" exclude the bound)
    ("a", "b")     one of these (for a tuple value: each of its elements)
    "json object"  a string holding a JSON object, or "" for none

Every float must also be finite. A value of None is allowed only where the default is
an `optional(type)`. Keys ending in `_env` hold the NAME of an environment variable
(never a secret itself). This module imports nothing from seekjax, so library code may
read the defaults (`seekjax.rollout.rollout_config`) without an import loop.
"""
import ml_collections
from ml_collections import config_dict


class optional:  # pylint: disable=invalid-name
  """A default of None for a key of type `type_` (a fresh placeholder per config)."""

  def __init__(self, type_: type):
    self.type = type_


PROBABILITY = "[0, 1]"
COUNT = ">= 1"
JSON_OBJECT = "json object"
DTYPES = ("float32", "bfloat16")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")

SCHEMA = dict(
    seed=(0, ">= 0"),
    model=dict(
        path=("smollm2-135m", None),          # embedded name, HF dir or .gguf
        dtype=("float32", DTYPES),            # what the model computes in and stores frozen
        # what the trainable part, its gradients and optimizer state are kept in; cast to
        # model.dtype at use (a bfloat16 model keeps float32 master weights: Adam steps
        # below bfloat16's spacing would round away)
        master_dtype=("float32", DTYPES),
        mesh_shape=((1, -1, 1), None),        # (data, fsdp, tensor); -1 takes the rest
        trainable=("top_n", ("full", "top_n", "lora")),
        top_n=(2, COUNT),
        lora_rank=(8, COUNT),
        lora_alpha=(16.0, "> 0"),
        lora_targets=(("q", "v"), LORA_TARGETS),
        remat=(False, None),
    ),
    task=dict(
        name=("world_facts_mix", None),       # world facts, public + private variants
        path=("", None),                      # for file formats (hotpotqa, popqa, private_qa, ...)
        # Private variants of a share of the examples (seekjax/tasks/privacy.py): "template"
        # (offline), or "llm" (the paper's 3-step recipe at an OpenAI-compatible endpoint,
        # rows cached in the workdir's privacy/). world_facts_mix has its own: keep "none".
        privacy=("none", ("none", "template", "llm")),
        private_fraction=(0.5, PROBABILITY),  # share of examples made private
        privacy_base_url=("", None),          # llm: its endpoint; "" = the helper's
        privacy_model=("", None),             # "" = helper.model
        privacy_api_key_env=("", None),       # the NAME of the env var; "" = the helper's
        eval_fraction=(0.15, "(0, 1)"),       # held-out split by entity
        max_train=(400, COUNT),
        max_eval=(96, ">= 0"),
        # questions set aside from the train split (seeded), never trained on: the
        # learning curve's validation set (train.eval_every); 0: none
        val_size=(0, ">= 0"),
    ),
    helper=dict(
        kind=("knowledge", ("knowledge", "openai", "local_lm")),
        # knowledge helper
        coverage=(1.0, PROBABILITY),
        noise=(0.0, PROBABILITY),
        top_k=(2, COUNT),                     # (also local_lm: facts retrieved into its prompt)
        style=("terse", ("terse", "verbose")),
        # openai helper (OpenAIHelper's own arguments)
        base_url=("http://127.0.0.1:8000/v1", None),
        model=("", None),                     # openai: the served model; local_lm: a model path
                                              # ("" = the SLM)
        api_key_env=("OPENAI_API_KEY", None),  # the NAME of the env var; never the key itself
        timeout=(30.0, "> 0"),                # seconds per call (pool limit; openai: per request)
        max_retries=(3, ">= 0"),
        max_tokens=(512, COUNT),              # most tokens in one reply (openai request)
        temperature=(0.0, ">= 0"),
        top_p=(optional(float), "(0, 1]"),    # None: not sent (the server's default)
        # more request fields, as the OpenAI client's extra_body, e.g. for a Qwen3 on vLLM:
        # '{"chat_template_kwargs": {"enable_thinking": false}}'
        extra_body_json=("", JSON_OBJECT),
        system_prompt=(optional(str), None),  # None: the protocol's helper prompt
        system_prompt_file=(optional(str), None),  # or read from this file (not both)
        # the rollout's helper pool (seekjax.rollout.pool)
        concurrency=(32, COUNT),              # calls in flight (openai: its connection limit too)
        on_outage=("feedback_error", ("wait", "feedback_error")),
        outage_failures=(8, COUNT),           # consecutive connection/5xx failures start an outage,
        outage_after=(10.0, "> 0"),           # or a run of them lasting longer (seconds)
        max_outage_wait=(300.0, ">= 0"),      # "wait" gives up after this many seconds
        outage_probe_min=(0.25, "> 0"),       # seconds between probes during an outage,
        outage_probe_max=(2.0, "> 0"),        # doubling from min to max
        max_error_share=(0.5, PROBABILITY),   # a step with a larger share of failed helper
                                              # calls stops the run, not trained on
    ),
    # The LLM leak judge's endpoint (reward.judge='llm', in training and evaluation).
    # Empty / 0 inherits the helper's value; it asks with the protocol's judge prompt.
    judge=dict(
        base_url=("", None),
        model=("", None),
        api_key_env=("", None),               # the NAME of the env var; never the key itself
        max_tokens=(0, ">= 0"),
        temperature=(0.0, ">= 0"),            # not inherited: the judge decides greedily
        extra_body_json=("", JSON_OBJECT),    # "{}" sends none while the helper's has some
    ),
    rollout=dict(
        max_turns=(2, ">= 0"),                # most messages an episode may send
        max_new_tokens=(64, COUNT),           # most SLM tokens in one turn
        max_message_tokens=(40, COUNT),
        max_feedback_tokens=(64, COUNT),      # longer feedback is truncated
        max_episode_tokens=(optional(int), COUNT),   # None: derived from the above
        temperature=(1.0, ">= 0"),            # 0 is greedy
        top_k=(0, ">= 0"),                    # 0: no top-k
        top_p=(1.0, "(0, 1]"),
        # decode steps before the loop returns to the host, which appends the feedback that
        # came back meanwhile: fewer let a row that asked resume sooner (8 against 32: 1.11x
        # faster rollouts on the default, BENCHMARKS.md "Appending feedback to the rows
        # that get it")
        max_steps_per_call=(8, COUNT),
        system_prompt=(optional(str), None),  # None: the protocol's default prompt
        per_shard_decode=(True, None),        # one decode loop per batch shard (tensor axis 1)
        max_rows_per_device=(0, ">= 0"),      # more rows roll out in waves; 0: no limit
        # as rows finish, the batch halves (down to this many rows) so the decode loop stops
        # computing finished rows, and feedback for a few rows is appended in a batch of
        # those sizes; 0: the whole batch decodes until its last row is done, and appends
        compact_min_rows=(4, ">= 0"),
        blocking=(False, None),               # wait for each helper in the callback (benchmarks)
    ),
    reward=dict(
        score=("em", ("em", "f1", "task")),
        lambda_message=(0.1, ">= 0"),
        lambda_helper_tokens=(0.0, ">= 0"),
        lambda_leak=(0.5, ">= 0"),
        format_penalty=(0.1, ">= 0"),
        judge=("rule", ("rule", "llm")),
        helper_error_policy=("zero_advantage", ("score", "zero_advantage")),
        # the message and helper-token costs of a group count only where it has a correct
        # episode (any_correct), or times its success rate (scaled); rl/rewards.gate_costs
        cost_gate=("none", ("none", "any_correct", "scaled")),
        gate_leak=(False, None),              # the leak cost is gated too
        # partial credit: an episode whose helper reply held a gold answer scores at least
        # this (rl/rewards.compute_rewards); 0: only the answer scores
        reply_credit=(0.0, ">= 0"),
    ),
    rl=dict(
        steps=(24, ">= 0"),
        questions_per_step=(4, COUNT),
        group_size=(4, ">= 2"),               # group-relative advantages need two samples
        advantage=("grpo", ("grpo", "drgrpo", "rloo")),
        whiten=(False, None),
        num_epochs=(1, COUNT),
        mini_batches=(1, COUNT),
        micro_batches=(4, COUNT),
        epsilon=(0.2, "> 0"),
        epsilon_high=(0.28, "> 0"),
        aggregation=("token-mean", ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")),
        kl_method=("k3", ("k1", "k2", "k3")),
        kl_beta=(0.02, ">= 0"),
        kl_in=("loss", ("loss", "reward")),
        # top_n: keep the frozen layers' output of every token the training rollout writes
        # and train on it, instead of running those layers again (costs B x L x D x the
        # model dtype's bytes more rollout memory: rows x cache length x hidden size)
        reuse_rollout_hidden=(True, None),
    ),
    sft=dict(
        steps=(40, ">= 0"),
        batch_size=(8, COUNT),
        lr=(3e-4, "> 0"),
        num_demos=(96, COUNT),
        need_fraction=(0.2, PROBABILITY),
        knowledge=(0.0, PROBABILITY),         # share of the world's named facts taught to the
                                              # SLM before the demos (rl/knowledge.py)
        knowledge_steps=(150, ">= 0"),        # fact-only steps first (then one per demo step)
        knowledge_batch=(64, COUNT),
        decompose=(False, None),              # two-hop demos ask one fact at a time
        # the answer turn's think quotes the reply's sentence that holds the answer
        # ("The helper says: ..."), instead of one fixed sentence for every demo
        restate_reply=(False, None),
        # demonstrations from this JSONL file instead of the helper (row format:
        # seekjax/coldstart/demo_store.py); "" builds them with the helper
        demos_path=("", None),
        # appended to a demo's message for an LLM helper (not the knowledge helper), so
        # its reply ends with the short answer the demo answers with; "" sends none
        answer_request=("End your reply with the short final answer on its own line, as "
                        "'Answer: ...'.", None),
    ),
    optim=dict(
        lr=(2e-5, "> 0"),
        warmup_steps=(2, ">= 0"),
        weight_decay=(0.0, ">= 0"),
        clip_norm=(1.0, "> 0"),
        b1=(0.9, "[0, 1)"),
        b2=(0.99, "[0, 1)"),
    ),
    train=dict(
        checkpoint_every=(8, COUNT),
        keep_checkpoints=(2, COUNT),
        log_every=(1, COUNT),
        async_checkpoint=(True, None),
        # every this many RL steps (and before the first), the policy answers the
        # validation set (task.val_size) greedily: val/* metrics and val_curve.png; 0: off
        eval_every=(0, ">= 0"),
        # the policy `evaluate` answers the held-out split with: "last" (the latest
        # checkpoint) or "best_val" (the best point of the validation curve, kept in
        # WORKDIR/best_checkpoint: highest val EM, then fewest messages; needs eval_every)
        select_checkpoint=("last", ("last", "best_val")),
        # one JSON line per training episode in WORKDIR/episodes.jsonl: question, messages,
        # replies, answer, scores, reward by term, advantage (seekjax/rl/records.py)
        log_episodes=(True, None),
    ),
    eval=dict(
        redact_private=(True, None),          # evaluation transcripts hide private facts
        # also answer the hand-written paraphrase check (tasks/paraphrase.py) and report
        # its EM beside held-out (results "paraphrase"; full results in eval/paraphrase/)
        paraphrase=(False, None),
    ),
    distributed=dict(
        initialize=(False, None),             # or SEEKJAX_DISTRIBUTED=1 / JAX's env vars
        coordinator_address=("", None),
        num_processes=(0, ">= 0"),
        process_id=(-1, ">= -1"),
    ),
)


def _defaults(schema: dict) -> ml_collections.ConfigDict:
  out = {}
  for key, entry in schema.items():
    if isinstance(entry, dict):
      out[key] = _defaults(entry)
    elif isinstance(entry[0], optional):
      out[key] = config_dict.placeholder(entry[0].type)
    else:
      out[key] = entry[0]
  return ml_collections.ConfigDict(out)


def get_config() -> ml_collections.ConfigDict:
  """The defaults of every key (a new ConfigDict per call)."""
  return _defaults(SCHEMA)
