"""Training curves from a workdir's metrics.jsonl, as PNG.

  python -m apvit_jax.plot WORKDIR [WORKDIR ...] [--out=curves.png]

One figure, three panels against the epoch: training loss, test loss, test accuracy; one line per
workdir (labelled by its folder name), so runs can be compared side by side. Default output:
WORKDIR/curves.png for one workdir, ./curves.png for several.
"""
from __future__ import annotations

import argparse
import pathlib

from apvit_jax.training.metrics import read_records


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"no metrics.jsonl in {workdir}: is it a training workdir?")
  return read_records(path)


def curves(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
  """{"train_loss" | "test_loss" | "test_accuracy": (epochs, values)}; a resumed run's repeated steps
  keep their last record. Train records get their epoch from the test records' steps per epoch."""
  tests = {r["step"]: r for r in records if r["split"] == "test"}
  trains = {r["step"]: r for r in records if r["split"] == "train"}
  steps_per_epoch = next((s / r["epoch"] for s, r in sorted(tests.items()) if r.get("epoch")), None)
  to_epoch = (lambda s: s / steps_per_epoch) if steps_per_epoch else (lambda s: float(s))
  out = {"train_loss": ([to_epoch(s) for s in sorted(trains)], [trains[s]["loss"] for s in sorted(trains)]),
         "test_loss": ([to_epoch(s) for s in sorted(tests)], [tests[s]["loss"] for s in sorted(tests)]),
         "test_accuracy": ([to_epoch(s) for s in sorted(tests)], [tests[s]["accuracy"] for s in sorted(tests)])}
  return out


def plot(workdirs, out) -> pathlib.Path:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from apvit_jax.visualize import save_figure
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for workdir in workdirs:
    label = pathlib.Path(workdir).resolve().name
    for ax, (name, (x, y)) in zip(axes, curves(read_metrics(workdir)).items()):
      ax.plot(x, y, label=label, marker="." if len(x) < 40 else None)
      ax.set_title(name.replace("_", " "), fontsize=10)
      ax.set_xlabel("epoch" if x else "")
      ax.grid(alpha=0.3)
  axes[2].legend(fontsize=8)
  return save_figure(fig, out)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m apvit_jax.plot", description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="training workdirs (each holds metrics.jsonl)")
  parser.add_argument("--out", default=None, help="PNG to write (default: see module docstring)")
  args = parser.parse_args(argv)
  out = args.out or (pathlib.Path(args.workdirs[0]) / "curves.png" if len(args.workdirs) == 1 else "curves.png")
  print(f"wrote {plot(args.workdirs, out)}")


if __name__ == "__main__":
  main()
