"""Evaluation: accuracy and loss over a whole split, a saved checkpoint evaluated (eval.py), and the
figures of where the model looks (the family draws them)."""
from __future__ import annotations

import pathlib

import jax
import numpy as np

from apvit_jax.training import checkpoint as ckpt_lib, compilation_cache
from apvit_jax.training import feed, replicas, run as run_lib, step as step_lib


def evaluate(run, state, eval_step, data, split) -> dict:
  """Accuracy and mean loss over a whole split (padding masked out). state: replicated. Several replicas:
  each replica's values and their mean and sd (training/replicas.py)."""
  totals = None
  for batch in feed.eval_batches(run, split, state, step_lib.eval_inputs_key()):
    sums = run.par.metrics(eval_step(state, data, batch))
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
  t = replicas.per_replica(totals, run.num_replicas)
  n = t["count"]
  result = {"accuracy": t["correct"] / n, "loss": t["loss"] / n, "count": np.rint(n).astype(int),
            **{"accuracy/" + k.split("/", 1)[1]: t[k] / n for k in t if k.startswith("correct/")}}
  if "confusion" in t:
    result["confusion"] = np.rint(t["confusion"]).astype(int)
  return replicas.summarize(result, run.seeds)


def evaluate_checkpoint(config, workdir: str, step: int | None = None, split: str = "test",
                        figures: int = 0, confusion: bool = False, seed_index: int | None = None) -> dict:
  """Restores the best checkpoint (or `step`) and evaluates `split` ("test" or "train"). With figures=K,
  also draws the split's first K images to WORKDIR/figures/ (see draw_figures); with confusion, adds the
  confusion matrix (rows: true class, columns: predicted). A multi-seed run (config.num_seeds > 1) is
  evaluated replica by replica (NAME/seedS, NAME_mean, NAME_sd), or only replica `seed_index`; figures
  show replica `seed_index`, or 0."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"no checkpoints in {workdir}: train first with the same --config")
  if split not in ("test", "train"):
    raise ValueError(f"unknown split {split!r}; choose 'test' or 'train'")
  if seed_index is not None:   # before anything is loaded
    replicas.check_index(seed_index, config.num_seeds)
  compilation_cache.use_workdir_cache(config.compilation_cache, workdir)
  run = run_lib.setup(config, for_training=False)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  step = step if step is not None else (ckpt.best_step() or ckpt.latest_step())
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {ckpt.directory}")
  host_state = run_lib.restore(run, ckpt, step)
  ckpt.close()
  if seed_index is not None:
    run, host_state = run_lib.one_replica(run, host_state, seed_index)
  data_split = getattr(run.dataset, split)
  eval_step = run_lib.compile_eval_step(run, confusion)
  result = {"step": step, "split": split, **({"seed": run.seeds[0]} if seed_index is not None else {}),
            **evaluate(run, run.par.replicate(host_state), eval_step, feed.device_data(run.par, data_split),
                       data_split)}
  if figures > 0 and jax.process_index() == 0:
    if run.num_replicas > 1:
      run, host_state = run_lib.one_replica(run, host_state, 0)
    suffix = f"{split}_step{step}" + (f"_seed{run.seeds[0]}" if config.num_seeds > 1 else "")
    result["figures"] = [str(p) for p in draw_figures(run, host_state, data_split, figures,
                                                      workdir / "figures", suffix)]
  return result


def draw_figures(run, host_state, data_split, count: int, out_dir, suffix: str) -> list:
  """Figures of where the model looks for the split's first `count` images, drawn by the family:
  adaptive patches (visualize.py, patches_SUFFIX_I.png) or IPS selections (visualize_ips.py,
  ips_SUFFIX_I.png), selected as evaluation selects. matplotlib is imported only here."""
  images, labels = data_split.get(np.arange(min(count, len(data_split))))
  return run.family.figures(run.model, host_state.variables(), np.asarray(images), labels, run.tasks, out_dir, suffix,
                            step_lib.eval_inputs_key())
