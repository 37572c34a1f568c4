"""Training curves from a workdir's metrics.jsonl, as PNG.

  python -m apvit_jax.plot WORKDIR [WORKDIR ...] [--out=curves.png]

One figure, three panels against the epoch: training loss, test loss, test accuracy; one line per
workdir (labelled by its folder name), so runs can be compared side by side. A multi-seed workdir
(config.num_seeds > 1) is drawn as the mean over its seeds with a band of one standard deviation.
Default output: WORKDIR/curves.png for one workdir, ./curves.png for several.
"""
from __future__ import annotations

import argparse
import pathlib

from apvit_jax.training.metrics import read_records
from apvit_jax.training.replicas import mean_value


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"no metrics.jsonl in {workdir}: is it a training workdir?")
  return read_records(path)


def curves(records: list[dict]) -> dict[str, tuple[list[float], list[float], list[float] | None]]:
  """{"train_loss" | "test_loss" | "test_accuracy": (epochs, values, sds)}; values are the mean over the
  replicas of a multi-seed run (NAME_mean) and sds their standard deviation (NAME_sd), None for a one-seed
  run. A resumed run's repeated steps keep their last record. Train records get their epoch from the test
  records' steps per epoch."""
  tests = {r["step"]: r for r in records if r["split"] == "test"}
  trains = {r["step"]: r for r in records if r["split"] == "train"}
  steps_per_epoch = next((s / r["epoch"] for s, r in sorted(tests.items()) if r.get("epoch")), None)
  to_epoch = (lambda s: s / steps_per_epoch) if steps_per_epoch else (lambda s: float(s))

  def series(by_step: dict, name: str):
    steps = sorted(by_step)
    sds = [by_step[s].get(name + "_sd") for s in steps]
    return ([to_epoch(s) for s in steps], [mean_value(by_step[s], name) for s in steps],
            sds if steps and all(sd is not None for sd in sds) else None)
  return {"train_loss": series(trains, "loss"), "test_loss": series(tests, "loss"),
          "test_accuracy": series(tests, "accuracy")}


def plot(workdirs, out) -> pathlib.Path:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from apvit_jax.visualize import save_figure
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for workdir in workdirs:
    label = pathlib.Path(workdir).resolve().name
    for ax, (name, (x, y, sd)) in zip(axes, curves(read_metrics(workdir)).items()):
      line, = ax.plot(x, y, label=label, marker="." if len(x) < 40 else None)
      if sd is not None:   # several seeds: the mean, and a band of one standard deviation
        ax.fill_between(x, [m - d for m, d in zip(y, sd)], [m + d for m, d in zip(y, sd)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
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
