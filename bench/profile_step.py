"""Where a train step's time goes: the step of a workload, built as bench/step_bench.py builds it (as the
trainer does), traced with `jax.profiler` for a few calls; the device operations of that program summed by
XLA instruction and grouped by what they compute.

Every operation event the profiler records carries the instruction it ran (`hlo_op`, `hlo_module`: XLA's
CPU thunks and GPU kernels alike). An instruction's kind comes from the optimised program's text (for a
fusion, the operations it fuses): matmul/conv (dot, convolution, library GEMMs and convolutions, the CPU's
YNNPACK/XNNPACK fusions of them), fused attention kernels, collectives, scatter/gather, sort/top-k,
copy/transpose (a fusion whose result is a copy or transpose: layout changes), reduce, random bits, and
element-wise/other. Loops and calls (while, conditional, call) are left out: their time is their body's
operations, counted themselves. Times are per train step and device (each device of a data-parallel step
runs the whole program), summed over the threads or streams that ran them: where operations overlap
(XLA:CPU runs independent ones on its threads at once) their sum exceeds the step's wall time, which is
reported beside it (median of untraced calls).

  python -m bench.run --suite=profile --workloads=std_vit_cifar10 --batch_size=64 \\
      --set=model.dtype=float32 --json=profile.json [--trace_dir=DIR: keep the trace for Perfetto / TensorBoard]
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import pathlib
import re
import tempfile

import jax

from apvit_jax.models import registry
from bench import common, step_bench

CONTROL_FLOW = {"while", "conditional", "call"}
COLLECTIVES = {"all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
               "all-reduce-start", "all-reduce-done", "all-gather-start", "all-gather-done",
               "collective-permute-start", "collective-permute-done", "collective-broadcast", "ragged-all-to-all"}
CATEGORIES = ("matmul/conv", "attention kernel", "collective", "scatter/gather", "sort/top-k", "copy/transpose",
              "reduce", "random bits", "element-wise/other")

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s+=\s+(.*)$")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_TARGET = re.compile(r'custom_call_target="([^"]*)"')


@dataclasses.dataclass
class Instruction:
  opcode: str
  shape: str
  called: list[str]
  target: str = ""


@dataclasses.dataclass
class Program:
  """The optimised program's instructions by name and, per computation, its instructions' names and root."""
  module: str
  instructions: dict[str, Instruction]
  computations: dict[str, list[str]]
  roots: dict[str, str]


def _shape_and_rest(text: str) -> tuple[str, str]:
  """'f32[2,3]{1,0} dot(...)' or '(f32[2], s32[]) tuple(...)' -> (shape, 'dot(...)')."""
  if not text.startswith("("):
    shape, _, rest = text.partition(" ")
    return shape, rest
  depth = 0
  for i, ch in enumerate(text):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth == 0:
      return text[:i + 1], text[i + 1:].lstrip()
  return text, ""


def parse_hlo(text: str) -> Program:
  """The text of a compiled program (`compiled.as_text()`) -> its instructions and computations."""
  module = re.search(r"^HloModule\s+([\w.\-]+)", text, re.M)
  instructions, computations, roots, current = {}, {}, {}, None
  for line in text.splitlines():
    if current is None:
      header = _COMPUTATION.match(line)
      if header:
        current = header.group(1)
        computations[current] = []
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    shape, rest = _shape_and_rest(m.group(3))
    opcode = rest.split("(", 1)[0].strip()
    target = _TARGET.search(rest)
    instructions[m.group(2)] = Instruction(opcode, shape, _CALLED.findall(rest), target.group(1) if target else "")
    computations[current].append(m.group(2))
    if m.group(1):
      roots[current] = m.group(2)
  return Program(module.group(1) if module else "", instructions, computations, roots)


def _fused(program: Program, name: str, seen=None) -> tuple[set[str], set[str]]:
  """-> (opcodes, custom-call targets) of an instruction, through the computations it fuses or calls."""
  seen = set() if seen is None else seen
  instr = program.instructions[name]
  opcodes, targets = {instr.opcode}, {instr.target} - {""}
  for computation in instr.called:
    if computation in seen or computation not in program.computations:
      continue
    seen.add(computation)
    for inner in program.computations[computation]:
      o, t = _fused(program, inner, seen)
      opcodes |= o
      targets |= t
  return opcodes, targets


def category(program: Program, name: str) -> str | None:
  """What instruction `name` computes (one of CATEGORIES), or None for loops and calls."""
  instr = program.instructions[name]
  if instr.opcode in CONTROL_FLOW:
    return None
  opcodes, targets = _fused(program, name)
  target = " ".join(targets).lower()
  root = instr.opcode
  if instr.opcode == "fusion" and instr.called and instr.called[0] in program.roots:
    root = program.instructions[program.roots[instr.called[0]]].opcode
  if opcodes & COLLECTIVES:
    return "collective"
  if "fmha" in target or "attention" in target:
    return "attention kernel"
  if opcodes & {"dot", "convolution"} or re.search(r"gemm|matmul|conv", target):
    return "matmul/conv"
  if opcodes & {"scatter", "gather", "select-and-scatter"}:
    return "scatter/gather"
  if "sort" in opcodes or "topk" in target or "top_k" in target:
    return "sort/top-k"
  if root in ("copy", "transpose"):
    return "copy/transpose"
  if opcodes & {"reduce", "reduce-window"}:
    return "reduce"
  if opcodes & {"rng-bit-generator", "rng"}:
    return "random bits"
  return "element-wise/other"


def _short(shape: str, width: int = 60) -> str:
  return shape if len(shape) <= width else shape[:width - 3] + "..."


def summarize(events, program: Program, steps: int, *, top: int = 25) -> dict:
  """Trace events (Chrome/Perfetto JSON: "X" events with `dur` in µs and args hlo_op, hlo_module,
  device_ordinal) of `steps` train steps -> ms per step and device by category (with each kind's costliest
  instruction) and by instruction (the `top` costliest), and the operation events of this program whose
  instruction is not in its text ("unmatched", named)."""
  per_op, calls, unmatched = collections.Counter(), collections.Counter(), collections.Counter()
  devices = set()
  for e in events:
    args = e.get("args") or {}
    op = args.get("hlo_op")
    if e.get("ph") != "X" or not op or "dur" not in e:
      continue
    if program.module and args.get("hlo_module") not in (None, program.module):
      continue   # another program: a batch made on the device, an eager operation
    if op not in program.instructions:
      unmatched[op] += e["dur"]
      continue
    per_op[op] += e["dur"]
    calls[op] += 1
    devices.add(args.get("device_ordinal"))
  by_category = collections.Counter()
  counted = {}
  for op, us in per_op.items():
    kind = category(program, op)
    if kind is not None:
      by_category[kind] += us
      counted[op] = kind
  num_devices = max(1, len(devices))   # each device runs the whole program (pmap, shard_map)
  per_step = steps * num_devices
  ms = lambda us: us / 1e3 / per_step
  total = sum(by_category.values())
  ops = sorted(counted, key=lambda op: -per_op[op])
  costliest = {}
  for op in ops:
    costliest.setdefault(counted[op], op)
  rows = [{"category": kind, "ms": ms(by_category[kind]), "share": by_category[kind] / total if total else 0.0,
           "instructions": sum(1 for k in counted.values() if k == kind),
           "costliest": f"{costliest[kind]} {_short(program.instructions[costliest[kind]].shape)} "
                        f"{ms(per_op[costliest[kind]]):.3f} ms"}
          for kind in CATEGORIES if by_category[kind]]
  return {"op_ms": ms(total), "devices": num_devices, "categories": rows,
          "top": [{"instruction": op, "category": counted[op], "ms": ms(per_op[op]), "calls": calls[op] / per_step,
                   "shape": _short(program.instructions[op].shape)} for op in ops[:top]],
          "unmatched_ms": ms(sum(unmatched.values())),
          "unmatched": [{"instruction": op, "ms": ms(us)} for op, us in unmatched.most_common(5)]}


def trace_events(directory: pathlib.Path) -> list[dict]:
  """The events of the newest trace jax.profiler wrote under `directory` (HOST.trace.json.gz, the trace
  viewer's JSON, written beside the XPlane file)."""
  files = sorted(directory.glob("plugins/profile/*/*.trace.json.gz"))
  if not files:
    raise FileNotFoundError(f"jax.profiler wrote no trace under {directory}")
  data = json.loads(gzip.open(files[-1]).read())
  return data["traceEvents"] if isinstance(data, dict) else data


def profile_workload(name: str, *, batch_size: int, warmup: int, repeats: int, extra: dict,
                     trace_dir: str | None = None, top: int = 25) -> dict:
  """Builds and compiles workload `name`'s train step, times `repeats` untraced calls (median), then traces
  `repeats` more -> {workload, step_ms, op_ms, categories, top, unmatched...} (per step)."""
  built = step_bench.build_step(name, batch_size=batch_size, steps=warmup + repeats, extra=extra)
  state, batch, k = built.state, built.batch, built.steps_per_call

  def call():
    nonlocal state
    state, metrics = built.compiled(state, built.data, batch, built.key)
    jax.block_until_ready(metrics)

  step_ms = common.median_seconds(call, warmup=warmup, repeats=repeats) / k * 1e3
  with tempfile.TemporaryDirectory() as scratch:
    folder = pathlib.Path(trace_dir or scratch)
    jax.profiler.start_trace(str(folder))
    try:
      for _ in range(repeats):
        call()
    finally:
      jax.profiler.stop_trace()
    events = trace_events(folder)
  summary = summarize(events, parse_hlo(built.compiled.as_text()), repeats * k, top=top)
  return {"workload": name, "batch": built.config.batch_size, "dtype": registry.compute_dtype(built.config.model.dtype),
          "step_ms": step_ms, **summary, "trace_dir": trace_dir}


def run(*, workloads, batch_size: int, warmup: int, repeats: int, extra: dict, trace_dir: str | None = None,
        top: int = 25) -> list[dict]:
  results = []
  for name in workloads:
    print(f"... {name}", flush=True)
    folder = str(pathlib.Path(trace_dir) / name) if trace_dir else None
    r = profile_workload(name, batch_size=batch_size, warmup=warmup, repeats=repeats, extra=extra,
                         trace_dir=folder, top=top)
    print(f"\n{name}, batch {r['batch']}, {r['dtype']}: {r['step_ms']:.2f} ms a step (wall, median of {repeats}); "
          f"operations {r['op_ms']:.2f} ms a step and device, summed over threads/streams"
          + (f"; {r['unmatched_ms']:.2f} ms in operations not found in the program" if r["unmatched"] else ""))
    print(common.table(r["categories"], [("category", "kind", ""), ("ms", "ms/step", ".2f"),
                                         ("share", "share", ".0%"), ("instructions", "instructions", "d"),
                                         ("costliest", "costliest instruction, shape, ms/step", "")]))
    print(common.table(r["top"], [("instruction", "instruction", ""), ("category", "kind", ""),
                                  ("ms", "ms/step", ".3f"), ("calls", "calls/step", ".0f"), ("shape", "shape", "")]))
    results.append(r)
  return results
