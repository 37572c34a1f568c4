"""Evaluate a trained checkpoint: prints and writes JSON with accuracy, loss and count.

  python eval.py --config=configs/quickstart.py --workdir=workdirs/quickstart [--step=N] [--split=test]
  python eval.py --config=configs/apvit_cifar10.py --workdir=workdirs/apvit_cifar10 --visualize=8
  python eval.py --config=configs/quickstart.py --workdir=workdirs/quickstart --confusion
  apvit-eval --config=configs/quickstart.py --workdir=workdirs/quickstart   # the same, once installed

--visualize=K draws, for the split's first K images, the image, the regular grid, the adaptive patches
on the image and the sampled patches, as WORKDIR/figures/patches_SPLIT_stepSTEP_I.png.

A multi-seed run (--config.num_seeds=K) is evaluated replica by replica (accuracy/seedS, accuracy_mean,
accuracy_sd, ...); --seed_index=k evaluates replica k only (seed config.seed + k).
"""
import json
import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from apvit_jax.cli import config_errors_as_usage_errors, start

from apvit_jax.training.evaluate import evaluate_checkpoint

config_flags.DEFINE_config_file("config", None, "The config file the run was trained with "
                                "(configs/NAME.py[:ARG]), with the same overrides.", lock_config=True)
flags.DEFINE_string("workdir", None, "The training run's workdir (the --workdir given to train.py).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the best by test accuracy.")
flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
flags.DEFINE_integer("visualize", 0, "Draw patch figures for this many images of the split "
                     "(WORKDIR/figures/); 0: none.", lower_bound=0)
flags.DEFINE_bool("confusion", False, "Also compute and print the confusion matrix (rows: true class, "
                  "columns: predicted); it is written to the JSON as well.")
flags.DEFINE_integer("seed_index", None, "A multi-seed run (config.num_seeds=K): evaluate only replica "
                     "k (0..K-1, seed config.seed+k); default: every replica, with mean and sd. --visualize draws "
                     "this replica (default 0).", lower_bound=0)
flags.DEFINE_string("output", None, "JSON file to write; default WORKDIR/eval_STEP_SPLIT.json.")
flags.mark_flags_as_required(["config", "workdir"])


def confusion_table(matrix) -> str:
  """Rows: true class; columns: predicted class; last column: per-class accuracy."""
  width = max(4, len(str(max(max(r) for r in matrix))) + 1)
  head = "true\\pred" + "".join(f"{j:>{width}}" for j in range(len(matrix))) + "   acc"
  rows = [f"{i:>9}" + "".join(f"{v:>{width}}" for v in row) + f"  {row[i] / max(sum(row), 1):.3f}"
          for i, row in enumerate(matrix)]
  return "\n".join([head, *rows])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  f = flags.FLAGS
  with config_errors_as_usage_errors():
    result = evaluate_checkpoint(f.config, f.workdir, step=f.step, split=f.split, figures=f.visualize,
                                 confusion=f.confusion, seed_index=f.seed_index)
  seed = f"_seed{result['seed']}" if "seed" in result else ""
  out = pathlib.Path(f.output or pathlib.Path(f.workdir) / f"eval_{result['step']}_{result['split']}{seed}.json")
  out.write_text(json.dumps(result, indent=2) + "\n")
  for name, value in result.items():
    if name.startswith("confusion"):
      print(f"{name}:\n{confusion_table(value)}")
  print(json.dumps({k: v for k, v in result.items() if not k.startswith("confusion")}))
  print(f"wrote {out}")


def run():
  """The console command (pyproject.toml's [project.scripts]) and the scripts train.py / eval.py."""
  start(main, __name__)
