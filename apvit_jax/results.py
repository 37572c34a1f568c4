"""Results tables from training workdirs: per seed the final and the best test value of each metric, the
epochs, wall time and training images/s; per experiment the mean ± sample sd over its seeds. Markdown on
stdout, and JSON with --json.

  python -m apvit_jax.results RUN_s0,RUN_s1,RUN_s2 OTHER_3seeds [--metrics=accuracy/majority,accuracy/top]

Each argument is one experiment: its workdirs joined by commas are its seeds, and a multi-seed workdir
(config.num_seeds > 1) gives each of its replicas as a seed. "Best" is the best test record of the run
(highest; lowest for a name with "loss" in it), chosen per metric and per seed: it selects on the test set,
as the published papers' figures do. Default metrics: every accuracy the runs log (IPS: one per task).
A resumed run's repeated steps keep their last record; wall time is the sum, over the starts listed in
runs.jsonl, of the time from each start to its last record; images/s is the last test record's training
rate (its process's), per replica.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re

import numpy as np

from apvit_jax.plot import read_metrics
from apvit_jax.training.metrics import read_records
from apvit_jax.training.replicas import replica_records


@dataclasses.dataclass
class SeedResult:
  """One seed of one run. final / best / best_epoch: {metric: value}; wall_seconds and images_per_sec are
  the workdir's (shared by its replicas: shared_by > 1), None where the workdir does not record them."""
  workdir: str
  seed: int | None   # None: a one-seed workdir without runs.jsonl
  epochs: float
  final: dict
  best: dict
  best_epoch: dict
  wall_seconds: float | None
  images_per_sec: float | None
  shared_by: int


def _lower_is_better(name: str) -> bool:
  return "loss" in name


def logged_metrics(record: dict) -> list[str]:
  """The accuracies a one-seed test record holds, "accuracy" first."""
  return sorted((k for k in record if k.startswith("accuracy")), key=lambda n: (n != "accuracy", n))


def _wall_seconds(starts: list[float], records: list[dict]) -> float | None:
  """Sum over the starts of (the last record's time before the next start - that start)."""
  if not starts:
    return None
  bounds = sorted(starts) + [math.inf]
  total = 0.0
  for begin, end in zip(bounds, bounds[1:]):
    times = [r["time"] for r in records if begin <= r["time"] < end]
    total += max(times) - begin if times else 0.0
  return total


def read_workdir(workdir, metrics=None) -> list[SeedResult]:
  """A training workdir -> one SeedResult per seed (per replica of a multi-seed run)."""
  records = read_metrics(workdir)
  runs = read_records(pathlib.Path(workdir) / "runs.jsonl")
  per_seed = replica_records([r for r in records if r["split"] == "test"])
  if not next(iter(per_seed.values())):
    raise ValueError(f"{workdir}: metrics.jsonl holds no test record (the run has not evaluated yet)")
  wall = _wall_seconds([r["time"] for r in runs], records)
  out = []
  for seed, seed_records in per_seed.items():
    tests = {r["step"]: r for r in seed_records}   # a repeated step keeps its last record
    steps = sorted(tests)
    last = tests[steps[-1]]
    names = list(metrics) if metrics else logged_metrics(last)
    for name in names:
      missing = [s for s in steps if name not in tests[s]]
      if missing:
        raise ValueError(f"{workdir}: no {name!r} in the test record of step {missing[0]}; it logs "
                         f"{logged_metrics(tests[missing[0]]) + ['loss']}")
    values = {n: np.array([tests[s][n] for s in steps], np.float64) for n in names}
    epochs = np.array([tests[s].get("epoch", math.nan) for s in steps], np.float64)
    pick = {n: int(np.argmin(v) if _lower_is_better(n) else np.argmax(v)) for n, v in values.items()}
    rate = last.get("images_per_sec")   # the process's training rate over all replicas
    if seed is None:   # a one-seed run: its seed is in its config (unknown without runs.jsonl)
      seed = runs[-1]["config"].get("seed") if runs else None
    out.append(SeedResult(str(workdir), seed, float(epochs[-1]), {n: float(v[-1]) for n, v in values.items()},
                          {n: float(v[pick[n]]) for n, v in values.items()},
                          {n: float(epochs[i]) for n, i in pick.items()}, wall,
                          rate / len(per_seed) if rate is not None and np.isfinite(rate) else None, len(per_seed)))
  return out


def experiment_name(workdirs: list[str]) -> str:
  """The first workdir's folder name, without a trailing _sN when several workdirs are the seeds."""
  name = pathlib.Path(workdirs[0]).resolve().name
  return re.sub(r"_s\d+$", "", name) if len(workdirs) > 1 else name


def summarize(seeds: list[SeedResult]) -> dict:
  """Mean and sample sd (ddof=1; None for one seed) over the seeds of final and best values, and the
  experiment's total wall time (each workdir counted once)."""
  stat = lambda xs: {"mean": float(np.mean(xs)), "sd": float(np.std(xs, ddof=1)) if len(xs) > 1 else None}
  walls = {r.workdir: r.wall_seconds for r in seeds}
  return {"num_seeds": len(seeds),
          "final": {n: stat([r.final[n] for r in seeds]) for n in seeds[0].final},
          "best": {n: stat([r.best[n] for r in seeds]) for n in seeds[0].best},
          "wall_seconds": None if None in walls.values() else float(sum(walls.values()))}


def _value(name: str, x: float) -> str:
  return f"{100 * x:.2f}" if name.startswith("accuracy") else f"{x:.4f}"


def _stat(name: str, s: dict) -> str:
  return _value(name, s["mean"]) + (f" ± {_value(name, s['sd'])}" if s["sd"] is not None else "")


def markdown(experiments: list[tuple[str, list[SeedResult]]]) -> str:
  """One table: a row per seed and, for an experiment of several seeds, a mean ± sd row; accuracies in %."""
  names = list(experiments[0][1][0].final)
  head = (["experiment", "seed", "epochs"] + [f"{n} final" for n in names] + [f"{n} best (epoch)" for n in names]
          + ["wall s", "train img/s per seed"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (2 * len(names) + 2)]
  for label, seeds in experiments:
    for r in seeds:
      wall = "–" if r.wall_seconds is None else f"{r.wall_seconds:,.0f}" + (
          f" (one run of {r.shared_by} seeds)" if r.shared_by > 1 else "")
      cells = ([label, "?" if r.seed is None else str(r.seed), f"{r.epochs:g}"] + [_value(n, r.final[n]) for n in names]
               + [f"{_value(n, r.best[n])} ({r.best_epoch[n]:g})" for n in names]
               + [wall, "–" if r.images_per_sec is None else f"{r.images_per_sec:,.1f}"])
      lines.append("| " + " | ".join(cells) + " |")
    if len(seeds) == 1:
      continue
    s = summarize(seeds)
    wall = "–" if s["wall_seconds"] is None else f"{s['wall_seconds']:,.0f} in all"
    lines.append("| " + " | ".join([f"**{label}**", f"mean ± sd of {len(seeds)}", ""]
                                   + [_stat(n, s["final"][n]) for n in names]
                                   + [_stat(n, s["best"][n]) for n in names] + [wall, ""]) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m apvit_jax.results", description=__doc__.split("\n\n")[0])
  parser.add_argument("experiments", nargs="+",
                      help="one argument per experiment: its workdirs (its seeds) joined by commas")
  parser.add_argument("--metrics", default="", help="comma-separated test metrics (default: every accuracy)")
  parser.add_argument("--json", default="", help="also write the results here (never over an existing file)")
  args = parser.parse_args(argv)
  metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] or None
  if args.json and pathlib.Path(args.json).exists():
    parser.error(f"--json={args.json} exists; it is not overwritten (move it or name another file)")
  experiments = []
  for group in args.experiments:
    workdirs = [w for w in group.split(",") if w]
    seeds = [r for w in workdirs for r in read_workdir(w, metrics)]
    repeated = sorted({r.seed for r in seeds if r.seed is not None and [x.seed for x in seeds].count(r.seed) > 1})
    if repeated:
      parser.error(f"{group}: seed(s) {repeated} appear in more than one workdir; an experiment's seeds differ")
    metrics = metrics or list(seeds[0].final)   # every experiment of the table has the first one's columns
    experiments.append((experiment_name(workdirs), seeds))
  print(markdown(experiments))
  if args.json:
    payload = [{"experiment": label, "seeds": [dataclasses.asdict(r) for r in seeds], **summarize(seeds)}
               for label, seeds in experiments]
    with open(args.json, "x") as f:
      f.write(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
