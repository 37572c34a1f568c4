"""The patch sampler (`sample_patches`: affine_grid + bilinear grid_sample) forward and forward+backward at
three sizes, with the bytes a perfect kernel must move and the time memory bandwidth alone would allow.

Bytes (float32): forward reads the images once and writes the patches; forward+backward (as in training:
the patches are materialised, the cotangent comes back) reads the images twice, writes their gradient,
writes the patches and reads their cotangent: 3·|images| + 2·|patches|. The maps (B·N·6 floats) are
negligible.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax import sampler
from bench import common

# (name, batch, image side, patch side); the patch count is (side / patch)².
SIZES = (("B256 32² 16×8²", 256, 32, 8), ("B1024 32² 64×4²", 1024, 32, 4), ("B128 224² 196×16²", 128, 224, 16))
CHANNELS = 3


MAX_SCALE = 1.2   # the maps' largest scale, relative to a ViT tile


def _inputs(batch: int, side: int, patch: int, seed: int = 0, axis_aligned: bool = False):
  """Images (B, S, S, 3) and near-grid maps (B, N, 2, 3): the ViT tiles, scaled by 0.8-1.2, turned by
  up to ±0.3 rad (not turned if axis_aligned) and shifted, as a trained adaptive front-end produces."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(batch, side, side, CHANNELS)).astype(np.float32)
  grid = np.asarray(sampler.regular_grid_theta((side, side), patch))
  n = grid.shape[0]
  angle = rng.uniform(-0.3, 0.3, (batch, n)) * (not axis_aligned)
  scale = rng.uniform(0.8, MAX_SCALE, (batch, n))
  rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
  theta = np.concatenate([grid[None, :, :, :2] * (scale[..., None, None]) @ rot,
                          grid[None, :, :, 2:] + rng.uniform(-0.05, 0.05, (batch, n, 2, 1))], -1)
  return jnp.asarray(images), jnp.asarray(theta.astype(np.float32))


def run(*, warmup: int, repeats: int, sizes=SIZES) -> list[dict]:
  peak_flops, spec_bw = common.device_peaks(jax.devices()[0])
  rows = []
  for name, batch, side, patch in sizes:
    images, theta = _inputs(batch, side, patch)
    forward = jax.jit(lambda x, t, p=patch: sampler.sample_patches(x, t, p))
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(
        forward.eval_shape(images, theta).shape, dtype=np.float32))

    def fwd_bwd(x, t, ct, p=patch):
      out, vjp = jax.vjp(lambda x, t: sampler.sample_patches(x, t, p), x, t)
      return out, vjp(ct)
    both = jax.jit(fwd_bwd)
    image_bytes, patch_bytes = images.size * 4, cotangent.size * 4
    bw, floor_from = common.floor_bandwidth(image_bytes)   # a CPU: a copy of an image-sized array
    for mode, fn, args, bytes_moved in (
        ("forward", forward, (images, theta), image_bytes + patch_bytes),
        ("fwd+bwd", both, (images, theta, cotangent), 3 * image_bytes + 2 * patch_bytes)):
      compiled = fn.lower(*args).compile()
      seconds = common.median_seconds(lambda: jax.block_until_ready(compiled(*args)), warmup=warmup,
                                      repeats=repeats)
      rows.append({"size": name, "mode": mode, "ms": seconds * 1e3, "bytes_mb": bytes_moved / 1e6,
                   "floor_ms": bytes_moved / bw * 1e3, "floor_from": floor_from,
                   "floor_gb_s": bw / 1e9, "achieved_gb_s": bytes_moved / seconds / 1e9,
                   "xla_flops": common.flops_of(compiled)})
  for r in rows:
    r["x_floor"] = r["ms"] / r["floor_ms"]
  print((f"bandwidth: spec {spec_bw / 1e9:.0f} GB/s" if spec_bw else "bandwidth: a copy of each size's images")
        + (f"; peak {peak_flops / 1e12:.0f} TFLOP/s" if peak_flops else ""))
  print(common.table(rows, [("size", "size", ""), ("mode", "pass", ""), ("ms", "ms", ".3f"),
                            ("bytes_mb", "MB moved", ".1f"), ("floor_gb_s", "floor GB/s", ".1f"),
                            ("floor_ms", "bandwidth floor ms", ".3f"),
                            ("x_floor", "× floor", ".1f"), ("achieved_gb_s", "GB/s", ".1f")]))
  return rows
