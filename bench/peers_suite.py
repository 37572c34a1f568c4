"""Ours against the PyTorch peers, in one process, one command:

  python -m bench.run --suite=gpu --out=DIR    # the GPU issue's sizes (H100: a few minutes)
  python -m bench.run --suite=cpu --out=DIR    # the CPU issue's sizes (2 cores: ~10 minutes)

Writes DIR/results.json (rows, machine, command) and DIR/results.md (the table). Rows:
- sampler forward, forward+backward to images and maps, and forward+backward to the maps alone (what an
  adaptive model's train step computes: its images are data) (ours: `sample_patches`; peer: torch
  affine_grid + grid_sample); the same three for the separable sampler (`separable_sampler`, the model's
  model.adaptive.patch_sampler="separable") on the same maps without rotation, with the gather sampler's
  time on those maps beside it;
- train steps with on-device augmentation, ours (the trainer's own compiled step, `bench/step_bench.py`)
  vs a PyTorch ViT of the same shape (`bench/torch_peers.py`: timm where installed, torch.compile + bf16
  + fused AdamW on GPU);
- our other workloads alone (adaptive models, IPS), where no peer exists in PyTorch at hand.
Each row: ms and images/s, the peer's, ours vs peer (> 1: ours faster), MFU where the device's peak and
the FLOPs are known, and a hint at the bound from the measured numbers (× bandwidth floor for the
sampler; MFU for steps). The hint is arithmetic on measurements, not a profile.
`tiny=True` shrinks every workload (batch 2, one layer, small canvases) so a test runs the whole command
on a CPU; its timings mean nothing.
"""
from __future__ import annotations

import json
import pathlib
import traceback

import jax
import numpy as np

from apvit_jax import sampler, separable_sampler
from apvit_jax.models.vit import decode_variant
from bench import common, sampler_bench, step_bench, torch_peers

# (workload of bench/step_bench.py, batch, whether a PyTorch ViT of the same shape is the peer, overrides)
PRESETS = {
    "gpu": {
        "sampler": sampler_bench.SIZES,
        "steps": (("vit_s16_224", 256, True, {}), ("pit_t_32", 256, True, {}), ("vit_t2_32", 512, True, {}),
                  ("std_vit_cifar10", 256, True, {}), ("dps_vit_cifar10", 256, False, {}),
                  ("dps_vit_cifar10", 256, False, {"model.adaptive.patch_sampler": "separable"}),
                  ("dps_vit_cifar10", 256, False, {"steps_per_call": 8}),
                  ("apvit_cifar10", 256, False, {}),
                  ("ips_megapixel_mnist", 16, False, {"model.ips.memory": 100, "model.ips.chunk": 100})),
    },
    "cpu": {
        "sampler": (sampler_bench.SIZES[0], ("B32 224² 196×16²", 32, 224, 16)),
        "steps": (("std_vit_cifar10", 64, True, {"model.dtype": "float32"}),),
    },
}
TINY_SAMPLER = (("B2 16² 4×8²", 2, 16, 8),)
TINY_OVERRIDES = {"model.depth": 1}
TINY_IPS = {"data.canvas": 200, "model.ips.patch_size": 25, "model.ips.patch_stride": 25,
            "model.ips.memory": 8, "model.ips.chunk": 8, "model.ips.num_stages": 1}


def sampler_rows(sizes, *, warmup: int, repeats: int) -> list[dict]:
  """Per size: the gather sampler on near-grid maps (turned, scaled, shifted), then the separable sampler
  on the same maps without the turn (what it can cut), each forward, fwd+bwd and fwd+bwd to the maps
  alone; the separable rows carry the gather sampler's time on their maps (gather_ms)."""
  torch, why_not = torch_peers.torch_or_reason()
  timed = lambda fn, args: 1e3 * common.median_seconds(lambda: jax.block_until_ready(fn(*args)),
                                                       warmup=max(warmup, 1), repeats=repeats)
  rows = []
  for name, batch, side, patch in sizes:
    window = (separable_sampler.footprint(sampler_bench.MAX_SCALE * patch / side, patch, side),) * 2
    gather = lambda x, t, p=patch: sampler.sample_patches(x, t, p)
    separable = lambda x, t, p=patch, w=window: separable_sampler.sample_patches_axis_aligned(x, t, p, w)
    bandwidth, floor_from = common.floor_bandwidth(batch * side * side * sampler_bench.CHANNELS * 4)  # the images
    for label, cut, axis_aligned in (("", gather, False), ("separable ", separable, True)):
      images, theta = sampler_bench._inputs(batch, side, patch, axis_aligned=axis_aligned)
      cotangent = jax.numpy.ones((batch, (side // patch) ** 2, patch, patch, sampler_bench.CHANNELS))
      image_bytes, patch_bytes = images.size * 4, cotangent.size * 4
      gather_here = (dict((mode, fn) for mode, fn, *_ in _sampler_passes(gather, images, theta, cotangent, 0, 0))
                     if axis_aligned else {})
      for mode, fn, args, moved in _sampler_passes(cut, images, theta, cotangent, image_bytes, patch_bytes):
        ms = timed(fn, args)
        row = {"workload": f"sampler {label}{mode} {name}", "ours_ms": ms, "floor_gb_s": bandwidth / 1e9,
               "bound": f"{ms / (moved / bandwidth * 1e3):.1f}× {floor_from} bandwidth floor"}
        if axis_aligned:
          row["gather_ms"] = timed(gather_here[mode], args)
        if torch is None:
          row.update(peer="-", note=why_not)
        else:
          row.update(peer="torch affine_grid + grid_sample", peer_ms=torch_peers.sampler_ms(
              np.asarray(images), np.asarray(theta), patch, backward=mode != "forward",
              image_grad=mode == "fwd+bwd", warmup=max(warmup, 1), repeats=repeats))
        rows.append(row)
  return rows


def _sampler_passes(cut, images, theta, cotangent, image_bytes, patch_bytes):
  """(mode, jitted fn, its arguments, bytes a perfect kernel moves) for forward, fwd+bwd (gradients to the
  images and the maps) and fwd+bwd to the maps alone (a DPS-ViT/APViT step: the images are data)."""
  forward = jax.jit(cut)
  both = jax.jit(lambda x, t, c: jax.vjp(cut, x, t)[1](c))
  maps = jax.jit(lambda x, t, c: jax.vjp(lambda t: cut(x, t), t)[1](c))
  return (("forward", forward, (images, theta), image_bytes + patch_bytes),
          ("fwd+bwd", both, (images, theta, cotangent), 3 * image_bytes + 2 * patch_bytes),
          ("fwd+bwd to maps", maps, (images, theta, cotangent), 2 * image_bytes + 2 * patch_bytes))


def peer_shape(config) -> dict:
  """The PyTorch ViT matching one of our ViT configs: image side, patch, width, depth, heads, classes."""
  m = config.model
  shape = decode_variant(m.variant)
  side = int(config.data.name.split(":")[1].split("x")[0])
  return dict(image=side, patch=shape["patch_size"], width=m.width or shape["width"],
              depth=m.depth or shape["depth"], heads=m.num_heads or shape["num_heads"],
              classes=int(config.data.name.split(":")[2]), dropout=m.dropout)


def step_name(name: str, overrides: dict) -> str:
  """The row label: "step NAME" and the overrides that change the model (not the dtype)."""
  return f"step {name}" + "".join(f" {k.split('.')[-1]}={v}" for k, v in overrides.items() if k != "model.dtype")


def step_rows(steps, *, tiny: bool, warmup: int, repeats: int) -> list[dict]:
  _, why_not = torch_peers.torch_or_reason()
  rows = []
  for name, batch, has_peer, overrides in steps:
    extra = {**overrides, **(TINY_OVERRIDES if tiny else {}),
             **(TINY_IPS if tiny and name.startswith("ips") else {})}
    if tiny and name.startswith("ips"):
      extra.pop("model.depth")
    batch = 2 if tiny else batch
    print(f"... {name} (batch {batch})", flush=True)
    ours = step_bench.time_workload(name, batch_size=batch, warmup=warmup, repeats=repeats, extra=extra)
    row = {"workload": step_name(name, overrides), "batch": batch, "dtype": ours["dtype"], "ours_ms": ours["step_ms"],
           "ours_with_data_ms": ours["loop_step_ms"], "mfu": ours["mfu"], "compile_s": ours["compile_s"],
           "xla_memory_gib": ours["xla_memory_gib"], "peak_gib": ours["peak_gib"],
           "bound": (f"MFU {ours['mfu']:.0%}" if ours["mfu"] else "-"), "flops_note": ours["flops_note"]}
    if not has_peer:
      row.update(peer="-", note="no PyTorch peer run here")
    elif why_not:
      row.update(peer="-", note=why_not)
    else:
      config = step_bench.workload_config(name, batch, 1, extra)
      peer_ms, how = torch_peers.vit_step_ms(**peer_shape(config), batch=batch,
                                             crop_padding=config.augment.crop_padding, warmup=warmup,
                                             repeats=repeats)
      row.update(peer=how, peer_ms=peer_ms)
    rows.append(row)
  return rows


def finish(rows: list[dict]) -> list[dict]:
  for r in rows:
    batch = r.get("batch")
    if batch:
      r["ours_images_per_s"] = batch / r["ours_ms"] * 1e3
      if r.get("peer_ms"):
        r["peer_images_per_s"] = batch / r["peer_ms"] * 1e3
    if r.get("peer_ms"):
      r["ours_vs_peer"] = r["peer_ms"] / r["ours_ms"]
  return rows


COLUMNS = [("workload", "workload", ""), ("batch", "batch", "d"), ("ours_ms", "ours ms", ".2f"),
           ("gather_ms", "gather ms (same maps)", ".2f"),
           ("ours_images_per_s", "ours img/s", ",.0f"), ("peer_ms", "peer ms", ".2f"),
           ("peer_images_per_s", "peer img/s", ",.0f"), ("ours_vs_peer", "ours vs peer", ".2f"),
           ("mfu", "MFU", ".1%"), ("peak_gib", "peak GiB", ".2f"), ("bound", "bound (hint)", ""),
           ("peer", "peer", "")]


def jobs(preset: str, *, tiny: bool, warmup: int, repeats: int, only: tuple[str, ...] = ()
         ) -> list[tuple[str, object]]:
  """The suite as (name, () -> rows) jobs: one per sampler size, one per train-step workload; with
  `only`, the jobs with one of those words in their name, e.g. "sampler", "step", "dps_vit_cifar10", or
  with one of those whole names, e.g. "step dps_vit_cifar10" (that job alone, not its variants); each must
  name a job, else ValueError."""
  spec = PRESETS[preset]
  out = [(f"sampler {size[0]}", lambda size=size: sampler_rows((size,), warmup=warmup, repeats=repeats))
         for size in (TINY_SAMPLER if tiny else spec["sampler"])]
  for step in spec["steps"]:
    out.append((step_name(step[0], step[3]),
                lambda step=step: step_rows((step,), tiny=tiny, warmup=warmup, repeats=repeats)))
  if not only:
    return out
  picks = lambda o, name: o == name or o in name.split()
  unmatched = [o for o in only if not any(picks(o, name) for name, _ in out)]
  if unmatched:
    raise ValueError(f"--only={','.join(unmatched)} matches no job of the {preset} suite; its jobs: "
                     + "; ".join(name for name, _ in out))
  return [(name, job) for name, job in out if any(picks(o, name) for o in only)]


def check_out(out: pathlib.Path) -> None:
  """Refuses, before any work, a folder that already holds a suite's results (never overwritten)."""
  for name in ("results.json", "results.md"):
    if (out / name).exists():
      raise FileExistsError(f"{out / name} exists: give another --out (results are never overwritten)")


def run(preset: str, out: str | pathlib.Path, *, tiny: bool = False, warmup: int = 3, repeats: int = 10,
        command: str = "", only: tuple[str, ...] = ()) -> dict:
  """Runs one preset ("gpu" or "cpu"), writes out/results.json and out/results.md, returns the result.

  Both files are rewritten after every job (a sampler size, a train step), so a run stopped by a time
  limit keeps what it measured ("complete": false). A job that raises (out of memory, a kernel the device
  lacks) becomes a row with its "error"; the others still run. `only`: run those jobs alone (see `jobs`),
  e.g. the ones a cut run did not reach."""
  out = pathlib.Path(out)
  check_out(out)
  todo = jobs(preset, tiny=tiny, warmup=warmup, repeats=repeats, only=only)
  out.mkdir(parents=True, exist_ok=True)
  result = {"preset": preset, "tiny": tiny, "machine": common.machine(), "command": command,
            "complete": False, "rows": []}
  for name, job in todo:
    try:
      rows = job()
    except Exception as e:  # noqa: BLE001 -- one workload's failure must not cost the others' numbers
      traceback.print_exc()
      rows = [{"workload": name, "error": f"{type(e).__name__}: {e}"[:1000]}]
    result["rows"] += finish(rows)
    _write(out, result)
  result["complete"] = True
  table, notes = _write(out, result)
  print(table)
  print("\n".join(notes))
  return result


def _write(out: pathlib.Path, result: dict) -> tuple[str, list[str]]:
  rows = result["rows"]
  table = common.table(rows, COLUMNS)
  notes = [f"- {r['workload']}: {r['note']}" for r in rows if r.get("note")]
  notes += [f"- {r['workload']}: FAILED {r['error']}" for r in rows if r.get("error")]
  if not result["complete"]:
    notes.append("- incomplete: the run stopped (or is still running) before its last workload")
  (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
  (out / "results.md").write_text(f"# {result['preset']} suite\n\n`{result['command']}`\n\n"
                                  f"{json.dumps(result['machine'])}\n\n{table}\n\n" + "\n".join(notes) + "\n")
  return table, notes
