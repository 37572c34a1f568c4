"""Evaluate a trained checkpoint: the script form of the `apvit-eval` command (apvit_jax/cli/evaluate.py
holds the program and its help; `python eval.py --help` prints it)."""
from apvit_jax.cli.evaluate import run

if __name__ == "__main__":
  run()
