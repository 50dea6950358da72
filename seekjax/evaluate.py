"""`python -m seekjax.evaluate --config=configs/X.py --workdir=DIR [--methods=a,b] [--config.k=v]`.

Evaluates the learned policy and the baselines on the held-out eval split (never the
train split) and writes DIR/eval/results.json, results.md and episodes.jsonl (with each
example's private facts and spans redacted unless config.eval.redact_private is False).
Read top to bottom: build the run's parts (`run/setup.py`, as the trainer does), restore
the latest checkpoint of DIR if there is one (else the base weights stand in for every
policy), run each method greedily in batched rollouts, score, write, print the table.

Flags besides the trainer's --config/--workdir/--config.k=v:
  --methods=slm_cot,llm_only,...  default: the five methods of the paper's table and
      cold_start (the reference weights, decoding as dynamic); results hold paired
      bootstrap intervals of dynamic - cold_start and dynamic - static_interaction (EM)
  --baselines_on=reference|base|policy  the SLM weights the baselines run on. Default
      reference: the checkpoint's reference policy (the SLM after the supervised cold
      start, before RL), so baselines know the tag format and the table measures what
      RL adds; base: the pretrained weights; policy: the learned policy.
  --bootstrap=N  resamples for the 95% CIs (default 1000)
  --batch=N      most questions per rollout, which bounds memory (default 32; 0 = all)
  --out_dir=DIR  where the results go (default WORKDIR/eval), e.g. to evaluate one
      checkpoint with other methods or another helper without replacing its results
With --config.eval.paraphrase=true the methods also answer the hand-written paraphrase
check (`tasks/paraphrase.py`): its EM beside held-out in results.json ("paraphrase") and
results.md, its own results in DIR/eval/paraphrase/.
"""
from __future__ import annotations

import sys
import time

import jax

from seekjax import configcheck
from seekjax import configlib, distributed
from seekjax.eval import baselines, report, results as results_lib, shares
from seekjax.helpers import RuleLeakJudge
from seekjax.models import sharding
from seekjax.models.errors import ModelLoadError
from seekjax.rl import trainable as trainable_lib
from seekjax.rollout import config as rollout_config, engine
from seekjax.run import checkpoint, host_memory, setup
from seekjax.run import workdir as workdir_lib
from seekjax.tasks.paraphrase import TASK as paraphrase_task, world_paraphrase_examples

BASELINE_WEIGHTS = ("reference", "base", "policy")
DEFAULT_BATCH = 32   # SmolLM2-135M, float32: about 4 GB peak at the default episode budget


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(f"[seekjax.evaluate] {msg}", file=sys.stderr, flush=True)


def eval_rollout_config(rollout_cfg):
  """The run's rollout settings, made greedy with one episode per question, with the
  run's cache length as the least every method's rollouts use: methods with a smaller
  budget (slm_cot, the cascade's check: max_turns 0) or shorter prompts then share the
  programs `dynamic` and `cold_start` compile, instead of compiling their own."""
  cfg = baselines.with_settings(rollout_cfg, temperature=0.0, group_size=1)
  cfg.cache_length = rollout_config.cache_length([1], cfg)
  return cfg


def restore_policy(cfg, workdir: str, model) -> dict:
  """{trainable, ref_trainable, frozen, spec, step} of DIR's latest checkpoint, or with
  train.select_checkpoint="best_val" of its best validation point (checkpoint.BEST).

  Without a checkpoint, both policies are the base weights and step is None; a trained
  workdir without the best point asked for is a CheckpointError.
  """
  root = workdir_lib.as_path(workdir)
  name = checkpoint.BEST if cfg.train.select_checkpoint == "best_val" else checkpoint.LATEST
  if (root / checkpoint.LATEST).is_dir() and not (root / name).is_dir():
    raise checkpoint.CheckpointError(
        f'{root / name}: no best validation checkpoint (train.select_checkpoint="best_val" '
        "keeps one while training with it); evaluate the latest with "
        "--config.train.select_checkpoint=last")
  spec = setup.trainable_spec(cfg)
  trainable, frozen = trainable_lib.init(spec, model.params, jax.random.PRNGKey(cfg.seed + 1))
  out = dict(trainable=trainable, ref_trainable=trainable, frozen=frozen, spec=spec, step=None)
  if not (root / checkpoint.LATEST).is_dir():
    return out
  ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep_checkpoints, async_save=False,
                                 name=name)
  try:
    if ckpt.latest_step() is None:
      return out
    # The saved state holds the optimizer state too; its structure (not its values)
    # must match, so the template is built with the trainer's optimizer. A damaged
    # latest checkpoint falls back to the newest one that restores (left in place).
    optimizer, _ = setup.make_rl_optimizer(cfg)
    template = checkpoint.train_state(trainable, trainable_lib.reference_template(spec, trainable),
                                      optimizer.init(trainable), 0)
    step, state, _ = ckpt.restore_latest(
        template, checkpoint.model_fingerprint(model.config, spec), log=log, set_aside=False)
    return dict(out, trainable=state["trainable"], ref_trainable=state["ref_trainable"],
                step=int(step))
  finally:
    ckpt.close()


def local_models(models: dict, mesh, rollout_cfg) -> dict:
  """Each model's params gathered from every process and placed on this process's
  devices (`distributed.local_mesh`), so its rollout needs no other host."""
  mesh = distributed.local_mesh(mesh)
  replicate = bool(rollout_cfg.per_shard_decode and engine.per_shard_mesh(mesh) is not None)
  return {k: m.replace(params=distributed.rollout_params(m.params, mesh, replicate), mesh=mesh)
          for k, m in models.items()}


def _check_flags(methods, baselines_on, bootstrap, batch):
  unknown = [m for m in methods if m not in baselines.METHODS]
  if unknown or not methods:
    raise configlib.ConfigError(f"--methods: unknown {unknown or 'empty list'}; valid: "
                                f"{', '.join(baselines.METHODS)}")
  if baselines_on not in BASELINE_WEIGHTS:
    raise configlib.ConfigError(f"--baselines_on: expected one of {', '.join(BASELINE_WEIGHTS)}"
                                f", got {baselines_on!r}")
  if bootstrap < 1 or batch < 0:
    raise configlib.ConfigError("--bootstrap must be >= 1 and --batch >= 0")


def evaluate(cfg, workdir: str, methods=baselines.DEFAULT_METHODS,
             baselines_on: str = "reference", bootstrap: int = 1000,
             batch: int = DEFAULT_BATCH, out_dir: str | None = None) -> dict:
  """Evaluate `methods` on the eval split; returns {"results", "paths", "runs", "policy"}.

  The results go to `out_dir` (default WORKDIR/eval). On several processes each answers
  its share of the questions on its own devices (`eval/shares.py`); process 0 gathers
  the runs, scores and writes ("results" and "paths" are None / {} elsewhere).
  """
  _check_flags(methods, baselines_on, bootstrap, batch)
  t0 = time.perf_counter()
  setup.maybe_initialize_distributed(cfg)
  parts = setup.build_parts(cfg, training=False, workdir=workdir)   # the held-out split only
  model, eval_ex, helper, judge = parts.model, parts.eval_examples, parts.helper, parts.judge
  rcfg = eval_rollout_config(parts.rollout_cfg)
  llm_judge = judge if cfg.reward.judge == "llm" else None   # the rule judge always runs

  policy = restore_policy(cfg, workdir, model)
  step = policy["step"]
  weights = {"policy": policy["trainable"], "reference": policy["ref_trainable"]}
  models = {"base": model}
  needed = {"policy", baselines_on} | ({"reference"} if "cold_start" in methods else set())
  for k in needed - {"base"}:   # merge only what runs (memory)
    models[k] = model.replace(params=trainable_lib.merge(policy["spec"], weights[k],
                                                         policy["frozen"]))
  if distributed.multiprocess():   # each process answers on its own devices
    models = local_models(models, parts.mesh, rcfg)
  chosen = " (best validation point)" if cfg.train.select_checkpoint == "best_val" else ""
  log("dynamic policy: " + (f"checkpoint step {step}{chosen}" if step is not None else
                            "base weights (no checkpoint in the workdir)") +
      f"; baselines on the {baselines_on} weights")

  def run_on(examples: list, what: str) -> dict:
    """{name: MethodRun} of every method on `examples`, each process answering its share."""
    mine = examples
    if distributed.multiprocess():   # this process's questions
      if len(examples) < jax.process_count():
        raise setup.RunSetupError(f"config.task: {len(examples)} {what} examples for "
                                  f"{jax.process_count()} processes; each needs one")
      mine = examples[shares.share(len(examples), jax.process_index(), jax.process_count())]
    ctx = baselines.EvalContext(base_model=models[baselines_on], policy_model=models["policy"],
                                examples=mine, helper=helper, rollout_cfg=rcfg,
                                rng=jax.random.PRNGKey(cfg.seed), batch_size=batch, log=log,
                                reference_model=models.get("reference"))
    return shares.gather_runs(baselines.run_methods(ctx, tuple(methods), log=log))

  para_ex = (setup.fit_to_context(world_paraphrase_examples(), model, parts.rollout_cfg,
                                  "paraphrase")[0] if cfg.eval.paraphrase else [])
  try:
    runs = run_on(eval_ex, "eval")
    para_runs = run_on(para_ex, "paraphrase") if para_ex else None
  finally:
    setup.close_helpers(helper, judge)

  meta = dict(model=cfg.model.path, task=cfg.task.name, split="eval", helper=cfg.helper.kind,
              judge="rule+llm" if llm_judge is not None else "rule", checkpoint_step=step,
              checkpoint_selected=cfg.train.select_checkpoint,
              baselines_on=baselines_on if step is not None else f"{baselines_on} (= base: "
              "no checkpoint)", seed=cfg.seed, rollout=configcheck.config_to_dict(rcfg))
  results, paths = None, {}
  if jax.process_index() == 0:   # the judges score once, on process 0
    out = out_dir or str(workdir_lib.as_path(workdir) / "eval")
    results = results_lib.build_results(runs, eval_ex, RuleLeakJudge(), llm_judge, meta,
                                        num_resamples=bootstrap, seed=cfg.seed)
    if para_runs is not None:   # beside held-out; its own results in OUT/paraphrase
      para = results_lib.build_results(
          para_runs, para_ex, RuleLeakJudge(), llm_judge,
          dict(meta, task=paraphrase_task, split="paraphrase"), num_resamples=bootstrap,
          seed=cfg.seed)
      results["paraphrase"] = results_lib.split_summary(para, para_ex)
      para_paths = results_lib.write(para, para_runs, para_ex, f"{out}/paraphrase",
                                     redact_private=cfg.eval.redact_private)
    if hasattr(llm_judge, "usage"):   # calls and served tokens of the LLM judge
      results["meta"]["judge_usage"] = llm_judge.usage()
    results["meta"]["seconds"] = time.perf_counter() - t0
    paths = results_lib.write(results, runs, eval_ex, out,
                              redact_private=cfg.eval.redact_private)
    if para_runs is not None:
      paths["paraphrase"] = para_paths["json"]
  return {"results": results, "paths": paths, "runs": runs, "policy": policy}


def main(argv=None) -> int:
  try:
    cfg, workdir, flags = configlib.parse_argv(
        sys.argv[1:] if argv is None else argv, bool_flags=(), int_flags=("bootstrap", "batch"),
        str_flags=("methods", "baselines_on", "out_dir"))
    flags = {k: v for k, v in flags.items() if v is not None}
    if "methods" in flags:
      flags["methods"] = tuple(m.strip() for m in flags["methods"].split(",") if m.strip())
    out = evaluate(cfg, workdir, **flags)
  except (configlib.ConfigError, setup.RunSetupError, ModelLoadError, sharding.MeshError,
          checkpoint.CheckpointError, workdir_lib.WorkdirError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(report.main_table(out["results"]["methods"]))
    for extra in (report.comparison_table(out["results"].get("comparisons")),
                  report.paraphrase_table(out["results"])):
      if extra:
        print("\n" + extra)
    print(f"\nresults written to {out['paths']['json']} (table: {out['paths']['md']})")
  return 0


if __name__ == "__main__":
  host_memory.restart_with_reused_memory()
  sys.exit(main())
