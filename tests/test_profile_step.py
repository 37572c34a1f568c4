"""bench/profile_step.py: a compiled program's text read into instructions and kinds, trace events summed per
step and device by kind, and a real train step profiled end to end on this CPU."""
import jax
import numpy as np
import pytest

from bench import peers_suite, profile_step

# A program as XLA prints it after optimisation (names and syntax from jax 0.12's CPU and GPU dumps).
HLO = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[8,4]{1,0})->f32[8,4]{1,0}}

%fused_dot (param_0: f32[8,4], param_1: f32[4,4]) -> f32[8,4] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,4]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_transpose (param_0.1: f32[8,4]) -> f32[4,8] {
  %param_0.1 = f32[8,4]{1,0} parameter(0)
  %negate.1 = f32[8,4]{1,0} negate(%param_0.1)
  ROOT %transpose.1 = f32[4,8]{1,0} transpose(%negate.1), dimensions={1,0}
}

%add_reducer (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%x, %y)
}

%fused_reduce (param_0.2: f32[8,4]) -> f32[8] {
  %param_0.2 = f32[8,4]{1,0} parameter(0)
  %constant.1 = f32[] constant(0)
  %exp.1 = f32[8,4]{1,0} exponential(%param_0.2)
  ROOT %reduce.1 = f32[8]{0} reduce(%exp.1, %constant.1), dimensions={1}, to_apply=%add_reducer
}

%fused_scatter (param_0.3: f32[8,4], param_1.3: s32[3,1], param_2.3: f32[3,4]) -> f32[8,4] {
  %param_0.3 = f32[8,4]{1,0} parameter(0)
  %param_1.3 = s32[3,1]{1,0} parameter(1)
  %param_2.3 = f32[3,4]{1,0} parameter(2)
  ROOT %scatter.1 = f32[8,4]{1,0} scatter(%param_0.3, %param_1.3, %param_2.3), update_window_dims={1}, inserted_window_dims={0}, scatter_dims_to_operand_dims={0}, index_vector_dim=1, to_apply=%add_reducer
}

%fused_add (param_0.4: f32[8,4]) -> f32[8,4] {
  %param_0.4 = f32[8,4]{1,0} parameter(0)
  ROOT %add.2 = f32[8,4]{1,0} add(%param_0.4, %param_0.4)
}

%body (arg_tuple.1: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %arg_tuple.1 = (s32[], f32[8,4]{1,0}) parameter(0)
  %gte.1 = f32[8,4]{1,0} get-tuple-element(%arg_tuple.1), index=1
  %add_fusion.1 = f32[8,4]{1,0} fusion(%gte.1), kind=kLoop, calls=%fused_add
  %gte.0 = s32[] get-tuple-element(%arg_tuple.1), index=0
  ROOT %tuple.1 = (s32[], f32[8,4]{1,0}) tuple(%gte.0, %add_fusion.1)
}

%cond (arg_tuple.2: (s32[], f32[8,4])) -> pred[] {
  %arg_tuple.2 = (s32[], f32[8,4]{1,0}) parameter(0)
  %gte.2 = s32[] get-tuple-element(%arg_tuple.2), index=0
  %constant.2 = s32[] constant(3)
  ROOT %compare.1 = pred[] compare(%gte.2, %constant.2), direction=LT
}

ENTRY %main.1 (p.1: f32[8,4], p.2: f32[4,4], idx: s32[3,1], upd: f32[3,4]) -> f32[8,4] {
  %p.1 = f32[8,4]{1,0} parameter(0)
  %p.2 = f32[4,4]{1,0} parameter(1)
  %idx = s32[3,1]{1,0} parameter(2)
  %upd = f32[3,4]{1,0} parameter(3)
  %ynn_fusion.3 = f32[8,4]{1,0} fusion(%p.1, %p.2), kind=kCustom, calls=%fused_dot, metadata={op_name="jit(step)/dot_general"}
  %transpose_copy_fusion = f32[4,8]{1,0} fusion(%ynn_fusion.3), kind=kLoop, calls=%fused_transpose
  %wrapped_reduce = f32[8]{0} fusion(%ynn_fusion.3), kind=kLoop, calls=%fused_reduce
  %scatter_fusion = f32[8,4]{1,0} fusion(%p.1, %idx, %upd), kind=kLoop, calls=%fused_scatter
  %all-reduce = f32[8,4]{1,0} all-reduce(%scatter_fusion), replica_groups={}, to_apply=%add_reducer
  %custom-call.2 = (f32[8,4]{1,0}, s8[256]{0}) custom-call(%p.1, %p.2), custom_call_target="__cublas$gemm"
  %custom-call.3 = (bf16[2,4,8,8]{3,2,1,0}, u8[0]{0}) custom-call(%p.1, %p.1, %p.1), custom_call_target="__cudnn$fmhaSoftmax"
  %rng = (u64[2]{0}, u32[8,4]{1,0}) rng-bit-generator(%idx), algorithm=rng_default
  %constant.3 = s32[] constant(0)
  %tuple.2 = (s32[], f32[8,4]{1,0}) tuple(%constant.3, %all-reduce)
  %while.1 = (s32[], f32[8,4]{1,0}) while(%tuple.2), condition=%cond, body=%body
  ROOT %gte.3 = f32[8,4]{1,0} get-tuple-element(%while.1), index=1
}
"""


def test_instructions_take_their_kind_from_what_they_fuse():
  program = profile_step.parse_hlo(HLO)
  assert program.module == "jit_step"
  kinds = {name: profile_step.category(program, name) for name in
           ("ynn_fusion.3", "transpose_copy_fusion", "wrapped_reduce", "scatter_fusion", "all-reduce",
            "custom-call.2", "custom-call.3", "rng", "add_fusion.1", "while.1", "tuple.2")}
  assert kinds == {"ynn_fusion.3": "matmul/conv", "transpose_copy_fusion": "copy/transpose",
                   "wrapped_reduce": "reduce", "scatter_fusion": "scatter/gather", "all-reduce": "collective",
                   "custom-call.2": "matmul/conv", "custom-call.3": "attention kernel", "rng": "random bits",
                   "add_fusion.1": "element-wise/other", "while.1": None, "tuple.2": "element-wise/other"}
  assert program.instructions["custom-call.2"].shape == "(f32[8,4]{1,0}, s8[256]{0})"   # a tuple shape whole
  assert program.instructions["while.1"].called == ["cond", "body"]


def _event(op, dur, module="jit_step", device="0", step_name=None):
  return {"ph": "X", "name": step_name or op, "dur": dur, "ts": 0.0,
          "args": {"hlo_op": op, "hlo_module": module, "device_ordinal": device}}


def test_summary_is_per_step_and_device_and_leaves_out_loops_and_other_programs():
  program = profile_step.parse_hlo(HLO)
  events = []
  for device in ("0", "1"):          # two devices, two steps each
    for _ in range(2):
      events += [_event("ynn_fusion.3", 600.0, device=device), _event("transpose_copy_fusion", 100.0, device=device),
                 _event("add_fusion.1", 50.0, device=device), _event("add_fusion.1", 50.0, device=device),
                 _event("while.1", 5000.0, device=device),                 # a loop: its body is counted instead
                 _event("ynn_fusion.3", 9000.0, module="jit_make_batch"),  # another program
                 _event("copy.77", 200.0, device=device),                  # not in this program's text
                 {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 7000.0, "args": {}}]   # the runtime
  s = profile_step.summarize(events, program, steps=2, top=2)
  assert s["devices"] == 2
  assert [(r["category"], r["ms"], r["instructions"]) for r in s["categories"]] == [
      ("matmul/conv", 0.6, 1), ("copy/transpose", 0.1, 1), ("element-wise/other", 0.1, 1)]
  np.testing.assert_allclose(s["op_ms"], 0.8)
  np.testing.assert_allclose(sum(r["share"] for r in s["categories"]), 1.0)
  assert [(r["instruction"], r["calls"]) for r in s["top"]] == [("ynn_fusion.3", 1.0), ("transpose_copy_fusion", 1.0)]
  assert s["categories"][0]["costliest"] == "ynn_fusion.3 f32[8,4]{1,0} 0.600 ms"
  assert s["unmatched"] == [{"instruction": "copy.77", "ms": 0.2}] and s["unmatched_ms"] == 0.2


@pytest.mark.slow
def test_a_train_step_profiled_on_this_cpu():
  """The tiny ViT step (one block, batch 8 over this session's 8 devices) traced for two steps: the trace's
  operation events belong to the program (matched by module and instruction, none unmatched), the
  matmuls are found, and the kinds add up to the operations' total."""
  r = profile_step.profile_workload("std_vit_cifar10", batch_size=jax.device_count(), warmup=1, repeats=2,
                                    extra={**peers_suite.TINY_OVERRIDES, "model.dtype": "float32"}, top=5)
  kinds = {row["category"]: row["ms"] for row in r["categories"]}
  assert kinds.get("matmul/conv", 0) > 0 and r["op_ms"] > 0 and r["step_ms"] > 0
  np.testing.assert_allclose(sum(kinds.values()), r["op_ms"], rtol=1e-9)
  assert r["devices"] == jax.device_count()
  assert r["unmatched_ms"] == 0.0, r["unmatched"]
  assert len(r["top"]) == 5 and r["top"][0]["ms"] >= r["top"][-1]["ms"]
