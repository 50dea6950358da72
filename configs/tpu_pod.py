"""Multi-host example (TPU pod slice or several GPU hosts) through JAX's own runtime.

What it is for: the same Qwen3 run, started on every host with the same command.
What it needs: on TPU, nothing (jax.distributed.initialize() discovers the slice);
on GPU hosts, the coordinator env vars or flags:
  --config.distributed.coordinator_address=HOST0:1234
  --config.distributed.num_processes=N --config.distributed.process_id=I
Mesh: data x fsdp over all chips (tensor 1); the batch is split over processes.
"""
from configs.qwen3_hotpotqa import get_config as parent


def get_config(arg: str = ""):
  c = parent()
  c.distributed.initialize = True
  c.model.mesh_shape = (-1, 8, 1) if not arg else tuple(int(x) for x in arg.split(","))
  c.rl.questions_per_step = 256
  c.rl.mini_batches = 4
  c.rl.micro_batches = 2   # 128 rows a micro-batch: every chip holds rows
  return c
