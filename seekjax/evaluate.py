"""`python -m seekjax.evaluate --config=configs/X.py --workdir=DIR [--methods=a,b] [--config.k=v]`.

Evaluates the learned policy and the baselines on the held-out eval split (never the
train split) and writes DIR/eval/results.json, results.md and episodes.jsonl.
Read top to bottom: build the run's parts from the config, restore the latest
checkpoint's trainable params if DIR has one (else the base weights are the policy),
run each method greedily in one batched rollout, score, write, print the table.

Extra flags: --methods=slm_cot,llm_only,... (default: the five of the paper's table),
--baselines_on=base|policy (the SLM weights the baselines use; default base),
--bootstrap=N (resamples for the 95% CIs; default 1000),
--batch=N (most questions per rollout, which bounds memory; 0 = all in one; default 0).
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp

from seekjax import configlib
from seekjax.eval import baselines, report, results as results_lib
from seekjax.helpers import RuleLeakJudge
from seekjax.models import sharding
from seekjax.models.errors import ModelLoadError
from seekjax.rl import build, checkpoint
from seekjax.rl import step as step_lib
from seekjax.rl import trainable as trainable_lib
from seekjax.train import make_rollout_config, trainable_spec

EVAL_FLAGS = ("methods", "baselines_on", "bootstrap", "batch")


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(f"[seekjax.evaluate] {msg}", file=sys.stderr, flush=True)


def eval_rollout_config(cfg):
  """The run's rollout settings, made greedy with one episode per question."""
  return baselines.with_settings(make_rollout_config(cfg), temperature=0.0, group_size=1)


def restore_policy(cfg, workdir: str, model):
  """(trainable, frozen, spec, step): the latest checkpoint's params, or the base (step None)."""
  spec = trainable_spec(cfg)
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(cfg.seed + 1))
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return trainable, frozen, spec, None
  ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep_checkpoints, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      return trainable, frozen, spec, None
    # The saved state holds the optimizer state too; its structure (not its values)
    # must match, so the template uses the trainer's optimizer.
    optimizer, _ = step_lib.make_optimizer(cfg.optim.lr, max(cfg.rl.steps, 1),
                                           cfg.optim.warmup_steps, cfg.optim.weight_decay,
                                           cfg.optim.clip_norm, cfg.optim.b1, cfg.optim.b2)
    template = dict(trainable=trainable, ref_trainable=trainable,
                    opt_state=optimizer.init(trainable), step=jnp.asarray(0, jnp.int32))
    state, _ = ckpt.restore(step, template, checkpoint.model_fingerprint(model.config, spec))
    return state["trainable"], frozen, spec, int(step)
  finally:
    ckpt.close()


def evaluate(cfg, workdir: str, methods=baselines.DEFAULT_METHODS, baselines_on: str = "base",
             bootstrap: int = 1000, batch: int = 0) -> dict:
  """Evaluate `methods` on the eval split; returns {"results", "paths", "runs", "trainable"}."""
  if baselines_on not in ("base", "policy"):
    raise configlib.ConfigError(f"--baselines_on: expected base or policy, got {baselines_on!r}")
  unknown = [m for m in methods if m not in baselines.METHODS]
  if unknown or not methods:
    raise configlib.ConfigError(f"--methods: unknown {unknown or 'empty list'}; valid: "
                                f"{', '.join(baselines.METHODS)}")
  t0 = time.perf_counter()
  build.maybe_initialize_distributed(cfg)
  mesh = build.build_mesh(cfg)
  model = build.build_model(cfg, mesh)
  _, eval_ex = build.build_task(cfg, cfg.seed)   # the held-out split only
  if not eval_ex:
    raise build.RunSetupError("config.task: the eval split is empty")
  log(f"task {cfg.task.name}: {len(eval_ex)} eval questions")
  helper = build.build_helper(cfg.helper, model)
  judge = build.build_judge(cfg, helper)   # the rule judge always runs; this adds the LLM's
  llm_judge = judge if cfg.reward.judge == "llm" else None
  trainable, frozen, spec, step = restore_policy(cfg, workdir, model)
  policy = model.replace(params=trainable_lib.merge(spec, trainable, frozen))
  log("dynamic policy: " + (f"checkpoint step {step}" if step is not None else
                            "base weights (no checkpoint in the workdir)"))
  rcfg = eval_rollout_config(cfg)
  ctx = baselines.EvalContext(base_model=policy if baselines_on == "policy" else model,
                              policy_model=policy, examples=eval_ex, helper=helper,
                              rollout_cfg=rcfg, rng=jax.random.PRNGKey(cfg.seed),
                              batch_size=batch)
  runs = baselines.run_methods(ctx, tuple(methods), log=log)
  meta = dict(model=cfg.model.path, task=cfg.task.name, split="eval", helper=cfg.helper.kind,
              judge="rule+llm" if llm_judge is not None else "rule", checkpoint_step=step,
              baselines_on=baselines_on, seed=cfg.seed,
              rollout=configlib.config_to_dict(rcfg))
  results = results_lib.build_results(runs, eval_ex, RuleLeakJudge(), llm_judge, meta,
                                      num_resamples=bootstrap, seed=cfg.seed)
  results["meta"]["seconds"] = time.perf_counter() - t0
  paths = {}
  if jax.process_index() == 0:
    paths = results_lib.write(results, runs, eval_ex, os.path.join(workdir, "eval"))
  return {"results": results, "paths": paths, "runs": runs, "trainable": trainable}


def _split_flags(argv):
  """(argv for configlib.parse_argv, {flag: value}) with the evaluation flags taken out."""
  rest, flags = [], {}
  for a in argv:
    name, eq, value = a.lstrip("-").partition("=")
    if a.startswith("--") and name in EVAL_FLAGS:
      if not eq:
        raise configlib.ConfigError(f"--{name}: needs a value (--{name}=VALUE)")
      flags[name] = value
    else:
      rest.append(a)
  if "methods" in flags:
    flags["methods"] = tuple(m.strip() for m in flags["methods"].split(",") if m.strip())
  for name in ("bootstrap", "batch"):
    if name in flags:
      try:
        flags[name] = int(flags[name])
      except ValueError:
        raise configlib.ConfigError(f"--{name}: expected an int, got {flags[name]!r}") from None
  return rest, flags


def main(argv=None) -> int:
  try:
    rest, flags = _split_flags(sys.argv[1:] if argv is None else argv)
    cfg, workdir, _ = configlib.parse_argv(rest)
    out = evaluate(cfg, workdir, **flags)
  except (configlib.ConfigError, build.RunSetupError, ModelLoadError, sharding.MeshError,
          checkpoint.CheckpointMismatch) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(report.main_table(out["results"]["methods"]))
    print(f"\nresults written to {os.path.abspath(out['paths']['json'])} "
          f"(table: {os.path.abspath(out['paths']['md'])})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
