"""One entry point for the benchmarks; runs on whatever backend JAX finds (CPU, GPU, TPU).

  python -m bench.run --suite=all --json=bench/results/RUN.json             # GPU / TPU: the issue's sizes
  python -m bench.run --suite=steps --batch_size=8 --repeats=3 --json=...   # CPU: small batches
  python -m bench.run --suite=steps --workloads=apvit_cifar10 --set=model.dtype=float32
  python -m bench.run --suite=gpu --out=DIR    # ours vs the PyTorch peers, the GPU issue's sizes
  python -m bench.run --suite=cpu --out=DIR    # ours vs the PyTorch peers, the CPU issue's sizes
  python -m bench.run --suite=gpu --only=apvit_cifar10 --out=DIR2   # only the jobs with these words in their names
  python -m bench.run --suite=seeds --num_seeds=1,2,4,8 --json=...   # K seeds in one step (num_seeds)
  python -m bench.run --suite=host --workers=0,1,2 --json=...   # streamed host batches/s, grain workers
  python -m bench.run --suite=profile --workloads=dps_vit_cifar10 --json=...   # where a step's time goes
  python -m bench.run --suite=reruns --batch_size=8 --repeats=3 --json=...   # a second run in one process

Suites: `sampler` (bench/sampler_bench.py), `steps` (bench/step_bench.py) and `seeds`
(bench/seeds_bench.py: dps_vit_cifar10, or the first of --workloads, at each --num_seeds) and `host`
(bench/host_bench.py: streamed batches made in the training process or in grain workers) and `profile`
(bench/profile_step.py: a workload's step traced, its operations' time by kind and by instruction) and
`reruns` (bench/rerun_bench.py: a second equal run in one process, its programs shared or not) print
Markdown tables and write --json; `gpu` and `cpu` (bench/peers_suite.py) time ours and the PyTorch
peers in the same process and write DIR/results.json and DIR/results.md. Timings are medians after
warm-up; no test asserts any.
"""
import json
import pathlib
import sys

from absl import app, flags, logging

from bench import common, host_bench, peers_suite, profile_step, rerun_bench, sampler_bench, seeds_bench, step_bench

flags.DEFINE_enum("suite", "all", ["all", "sampler", "steps", "seeds", "host", "profile", "reruns",
                                    *peers_suite.PRESETS],
                  "Which benchmarks to run: sampler, steps, all (both), seeds, host, profile (where each of "
                  "--workloads spends its step), reruns (a second run in the same process), or ours vs the "
                  "PyTorch peers at the sizes of the GPU or the CPU speed issue (gpu, cpu).")
flags.DEFINE_string("out", None, "gpu/cpu suites: folder for results.json and results.md.")
flags.DEFINE_list("only", [], "gpu/cpu suites: run only the jobs with one of these words in their name, "
                  "or with one of these whole names (e.g. --only=sampler,apvit_cifar10: the sampler sizes and "
                  "the apvit_cifar10 step; --only='step dps_vit_cifar10': that step without its variants), "
                  "such as those a run cut by a time limit did not reach.")
flags.DEFINE_bool("tiny", False, "gpu/cpu suites: tiny sizes, to check the command end to end on a CPU.")
flags.DEFINE_list("workloads", list(step_bench.WORKLOADS), "Train-step workloads (steps suite): "
                  + ", ".join(step_bench.WORKLOADS))
flags.DEFINE_list("num_seeds", ["1", "2", "4", "8"], "seeds suite: the replica counts K to time.")
flags.DEFINE_list("workers", ["0", "1", "2"], "host suite: the data.workers values to time (0: in the "
                  "training process).")
flags.DEFINE_integer("num_batches", 48, "host suite: batches per pipeline.", lower_bound=2)
flags.DEFINE_integer("batch_size", 0, "Global batch for every step workload; 0: the reference batch "
                     "(the config's, or the issue's table).", lower_bound=0)
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.", lower_bound=0)
flags.DEFINE_integer("repeats", 20, "Timed calls; the median is reported.", lower_bound=1)
flags.DEFINE_multi_string("set", [], "FIELD=VALUE config override for every step workload (Python "
                          "literal or string), e.g. --set=model.dtype=float32 --set=parallel=shard_map.")
flags.DEFINE_string("json", None, "Write the results (and the machine) to this file.")
flags.DEFINE_string("trace_dir", None, "profile suite: keep each workload's jax.profiler trace in DIR/WORKLOAD "
                    "(Perfetto or TensorBoard can open it); by default it is read and deleted.")
flags.DEFINE_integer("top", 25, "profile suite: how many of the costliest instructions to list.", lower_bound=1)


def _parse_overrides(items) -> dict:
  import ast
  out = {}
  for item in items:
    key, _, value = item.partition("=")
    if not key or not _:
      raise app.UsageError(f"--set={item!r}: expected FIELD=VALUE")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  unknown = [w for w in f.workloads if w not in step_bench.WORKLOADS]
  if unknown:
    raise app.UsageError(f"unknown workloads {unknown}; choose from {list(step_bench.WORKLOADS)}")
  command = " ".join(["python -m bench.run", *sys.argv[1:]])
  if f.only and f.suite not in peers_suite.PRESETS:
    raise app.UsageError(f"--only chooses jobs of the gpu and cpu suites, not of --suite={f.suite}")
  if f.json and pathlib.Path(f.json).exists():   # checked before any work; results are never overwritten
    raise app.UsageError(f"--json={f.json} exists: give another path")
  if f.suite in peers_suite.PRESETS:
    if not f.out:
      raise app.UsageError(f"--suite={f.suite} writes DIR/results.json and DIR/results.md: give --out=DIR")
    try:
      peers_suite.check_out(pathlib.Path(f.out))   # before any work, as --json above
      peers_suite.jobs(f.suite, tiny=f.tiny, warmup=f.warmup, repeats=f.repeats, only=tuple(f.only))
    except (FileExistsError, ValueError) as e:
      raise app.UsageError(str(e)) from e
    result = peers_suite.run(f.suite, f.out, tiny=f.tiny, warmup=f.warmup, repeats=f.repeats, command=command,
                             only=tuple(f.only))
    failed = [r["workload"] for r in result["rows"] if r.get("error")]
    if failed:   # every other row is measured and written; the exit status says that some are not
      sys.exit(f"{len(failed)} workload(s) failed (their rows carry the error): {', '.join(failed)}")
    return
  result = {"machine": common.machine(), "command": command}
  print(json.dumps(result["machine"]))
  if f.suite in ("all", "sampler"):
    result["sampler"] = sampler_bench.run(warmup=f.warmup, repeats=f.repeats)
  if f.suite == "seeds":
    workload = f.workloads[0] if f["workloads"].present else "dps_vit_cifar10"
    result["seeds"] = seeds_bench.run(workload=workload, num_seeds=[int(k) for k in f.num_seeds],
                                      batch_size=f.batch_size, warmup=f.warmup, repeats=f.repeats,
                                      extra=_parse_overrides(f.set))
  if f.suite == "host":
    print(f"data.workers=-1 (auto) resolves to {host_bench.auto_workers()} worker processes here")
    result["host"] = host_bench.run(workers=[int(w) for w in f.workers], num_batches=f.num_batches)
  if f.suite == "profile":
    if not f["workloads"].present:
      raise app.UsageError("--suite=profile: name the workloads to profile, e.g. --workloads=dps_vit_cifar10")
    result["profile"] = profile_step.run(workloads=f.workloads, batch_size=f.batch_size, warmup=f.warmup,
                                         repeats=f.repeats, extra=_parse_overrides(f.set), trace_dir=f.trace_dir,
                                         top=f.top)
  if f.suite == "reruns":
    workloads = f.workloads if f["workloads"].present else ["std_vit_cifar10"]
    result["reruns"] = rerun_bench.run(workloads=workloads, batch_size=f.batch_size, repeats=f.repeats,
                                       extra=_parse_overrides(f.set))
  if f.suite in ("all", "steps"):
    result["steps"] = step_bench.run(workloads=f.workloads, batch_size=f.batch_size, warmup=f.warmup,
                                     repeats=f.repeats, extra=_parse_overrides(f.set))
  if f.json:
    path = pathlib.Path(f.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
