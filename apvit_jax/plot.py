"""Training curves from a workdir's metrics.jsonl, as PNG.

  python -m apvit_jax.plot WORKDIR [WORKDIR ...] [--out=curves.png]
  python -m apvit_jax.plot RUN_s0 RUN_s1 RUN_s2 --seeds --test=accuracy/majority,accuracy/top
  python -m apvit_jax.plot A_s0,A_s1,A_s2 B_s0,B_s1,B_s2 --test=accuracy/majority

One figure against the epoch: training loss, then one panel per test metric (`--test`, default test loss
and test accuracy; an IPS run logs accuracy/TASK too); one line per workdir (labelled by its folder name),
so runs can be compared side by side. A multi-seed workdir (config.num_seeds > 1) is drawn as the mean over
its seeds with a band of one standard deviation; `--seeds` draws the workdirs given as the seeds of one
run the same way (mean and sample sd over all their seeds, a multi-seed workdir giving each of its
replicas, at the epochs they all logged).
Workdirs joined by commas are the seeds of one experiment, drawn the same way, one line each: `A_s0,A_s1
A_s2x3 B_s0,B_s1` compares A (five seeds, the last three from one multi-seed workdir) with B.
Default output: WORKDIR/curves.png for one workdir, ./curves.png for several.
"""
from __future__ import annotations

import argparse
import os
import pathlib

from apvit_jax.training.metrics import read_records
from apvit_jax.training.replicas import mean_value, replica_records


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"no metrics.jsonl in {workdir}: is it a training workdir?")
  return read_records(path)


def curves(records: list[dict], test_metrics=("loss", "accuracy")
           ) -> dict[str, tuple[list[float], list[float], list[float] | None]]:
  """{"train_loss" | "test_NAME" for each of test_metrics: (epochs, values, sds)}; values are the mean over
  the replicas of a multi-seed run (NAME_mean) and sds their standard deviation (NAME_sd), None for a
  one-seed run. A resumed run's repeated steps keep their last record. Train records get their epoch from
  the test records' steps per epoch."""
  tests = {r["step"]: r for r in records if r["split"] == "test"}
  trains = {r["step"]: r for r in records if r["split"] == "train"}
  steps_per_epoch = next((s / r["epoch"] for s, r in sorted(tests.items()) if r.get("epoch")), None)
  to_epoch = (lambda s: s / steps_per_epoch) if steps_per_epoch else (lambda s: float(s))

  def series(by_step: dict, name: str):
    steps = sorted(by_step)
    missing = [s for s in steps if name not in by_step[s] and f"{name}_mean" not in by_step[s]]
    if missing:
      logged = sorted({k.removesuffix("_mean") for k in by_step[missing[0]]} - {"step", "split", "time"})
      raise ValueError(f"no {name!r} in the record of step {missing[0]}; it has {logged}")
    sds = [by_step[s].get(name + "_sd") for s in steps]
    return ([to_epoch(s) for s in steps], [mean_value(by_step[s], name) for s in steps],
            sds if steps and all(sd is not None for sd in sds) else None)
  return {"train_loss": series(trains, "loss"), **{f"test_{name}": series(tests, name) for name in test_metrics}}


def seed_curves(runs: list[dict]) -> dict[str, tuple[list[float], list[float], list[float] | None]]:
  """The curves of one-seed runs (each as `curves` gives them) -> their mean and sample standard deviation
  (ddof=1, as a multi-seed run logs) at the epochs every run has."""
  import numpy as np
  out = {}
  for name in runs[0]:
    shared = sorted(set.intersection(*(set(run[name][0]) for run in runs)))
    by_epoch = [dict(zip(*run[name][:2])) for run in runs]
    values = np.array([[values[e] for e in shared] for values in by_epoch])
    out[name] = (shared, values.mean(0).tolist(), values.std(0, ddof=1).tolist() if len(runs) > 1 else None)
  return out


def seed_group(workdirs, test_metrics) -> tuple[str, dict]:
  """Workdirs that are the seeds of one experiment -> (label, their mean curves with a band), labelled by
  what the folder names share: "run_s0", "run_s1" -> "run_s… (2 seeds)"."""
  each = [curves(r, test_metrics) for w in workdirs for r in replica_records(read_metrics(w)).values()]
  if len(each) < 2:
    raise ValueError(f"seeds of one experiment: at least two are needed; {', '.join(map(str, workdirs))} "
                     f"hold(s) one")
  shared = os.path.commonprefix([pathlib.Path(w).resolve().name for w in workdirs])
  return f"{shared or 'runs'}… ({len(each)} seeds)", seed_curves(each)


def lines(workdirs, test_metrics=("loss", "accuracy"), seeds: bool = False) -> list[tuple[str, dict]]:
  """[(label, curves)], one per argument of `workdirs`: a workdir, or workdirs joined by commas, the seeds
  of one experiment (their mean and a band); with `seeds` one for all of them."""
  groups = [[w for a in workdirs for w in str(a).split(",") if w]] if seeds else \
      [[w for w in str(a).split(",") if w] for a in workdirs]
  return [seed_group(g, test_metrics) if seeds or len(g) > 1 else
          (pathlib.Path(g[0]).resolve().name, curves(read_metrics(g[0]), test_metrics)) for g in groups]


def plot(workdirs, out, test_metrics=("loss", "accuracy"), seeds: bool = False) -> pathlib.Path:
  """The figure of `lines(workdirs, test_metrics, seeds)`, written to `out`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from apvit_jax.visualize import save_figure
  runs = lines(workdirs, test_metrics, seeds)
  fig, axes = plt.subplots(1, 1 + len(test_metrics), figsize=(4.3 * (1 + len(test_metrics)), 3.6))
  for label, run in runs:
    for ax, (name, (x, y, sd)) in zip(axes, run.items()):
      line, = ax.plot(x, y, label=label, marker="." if len(x) < 40 else None)
      if sd is not None:   # several seeds: the mean, and a band of one standard deviation
        ax.fill_between(x, [m - d for m, d in zip(y, sd)], [m + d for m, d in zip(y, sd)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
      ax.set_title(name.replace("_", " "), fontsize=10)
      ax.set_xlabel("epoch" if x else "")
      ax.grid(alpha=0.3)
  axes[-1].legend(fontsize=8)
  return save_figure(fig, out)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m apvit_jax.plot", description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+", help="training workdirs (each holds metrics.jsonl); joined "
                      "by commas: the seeds of one experiment, one line with a band")
  parser.add_argument("--out", default=None, help="PNG to write (default: see module docstring)")
  parser.add_argument("--test", default="loss,accuracy",
                      help="comma-separated test metrics, one panel each (e.g. accuracy/majority)")
  parser.add_argument("--seeds", action="store_true",
                      help="the workdirs (and their replicas) are seeds of one run: their mean with a band of one sd")
  args = parser.parse_args(argv)
  test_metrics = tuple(m.strip() for m in args.test.split(",") if m.strip())
  if not test_metrics:
    parser.error("--test names no metric")
  single = len(args.workdirs) == 1 and "," not in args.workdirs[0]
  out = args.out or (pathlib.Path(args.workdirs[0]) / "curves.png" if single else "curves.png")
  print(f"wrote {plot(args.workdirs, out, test_metrics, args.seeds)}")


if __name__ == "__main__":
  main()
