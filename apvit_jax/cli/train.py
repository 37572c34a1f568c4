"""Train a model from a config file. Re-running the same command on the same workdir resumes.

  python train.py --config=configs/quickstart.py --workdir=workdirs/quickstart [--config.FIELD=VALUE ...]
  apvit-train --config=configs/quickstart.py --workdir=workdirs/quickstart   # the same, once installed

Every config field, its default and its meaning are listed in apvit_jax/base_config.py; each file in
configs/ states its command, data, expected accuracy and time, and takes the argument :smoke.
Examples: --config.batch_size=256 --config.model.dtype=bfloat16 --config.parallel=shard_map.
SIGTERM (e.g. Cloud TPU preemption) saves a checkpoint and exits; run the same command to resume.
Several hosts: run the same command on every host (docs/tpu_and_multi_gpu.md); outside TPU pods and SLURM
set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from apvit_jax.cli import config_errors_as_usage_errors, start

from apvit_jax.training.loop import train_and_evaluate

config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with an argument: configs/NAME.py[:ARG] (e.g. :smoke). "
    "Override any field with --config.FIELD=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and runs.jsonl. "
                    "An existing workdir is resumed from its latest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  with config_errors_as_usage_errors():
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def run():
  """The console command (pyproject.toml's [project.scripts]) and the scripts train.py / eval.py."""
  start(main, __name__)
