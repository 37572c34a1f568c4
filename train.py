"""Train a model from a config file: the script form of the `apvit-train` command (apvit_jax/cli/train.py
holds the program and its help; `python train.py --help` prints it)."""
from apvit_jax.cli.train import run

if __name__ == "__main__":
  run()
