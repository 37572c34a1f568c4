"""Axis-aligned patches as two small matmuls: the exact separable form of the bilinear sampler.

A map without rotation or shear, theta = [[s_x, 0, t_x], [0, s_y, t_y]], samples output column j at one
x for every row and output row i at one y for every column, so bilinear sampling factorises:

    patch[i, j, c] = sum_{h, w} W_y[i, h] * image[h, w, c] * W_x[j, w]

where row j of W_x holds the two bilinear weights (1 - f_j, f_j) of sample j's left and right pixels and
zeros elsewhere (W_y likewise). The result equals `sampler.sample_patches` on the same map (PyTorch
`affine_grid` + `grid_sample`, both paddings, both `align_corners`) up to float32 rounding. Each patch
reads only a `window` of the image around itself, a static size that the caller bounds from the largest
scale its maps can take (`footprint`), so the cost per patch is two (P × window) matmuls, not a sum over
the image. Autodiff of this form needs no per-pixel scatter: the image gradient is the matmuls'
transposes followed by one scatter-add of whole windows; the map gradient flows through the weights.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from apvit_jax import sampler


def footprint(max_scale: float, patch_size: int, image_size: int, align_corners: bool = False) -> int:
  """Pixels (along one axis, padding pixel included) that one patch's samples and their right-hand
  neighbours can touch when |s| <= max_scale: the window that `sample_patches_axis_aligned` needs.

  The samples lie `step` pixels apart (step = s W / P, or s (W - 1) / (P - 1) with align_corners), so the
  floors of the first and last differ by at most floor(step (P - 1)) + 1, and each sample also reads the
  pixel right of its floor. A relative 1e-6 guards against float32 rounding of the step.
  """
  if patch_size == 1:
    return 2
  step = max_scale * ((image_size - 1) / (patch_size - 1) if align_corners else image_size / patch_size)
  return min(math.floor(step * (patch_size - 1) * (1 + 1e-6)) + 3, image_size + 2)


def sample_patches_axis_aligned(images: jax.Array, theta: jax.Array, patch_size: int | Sequence[int],
                                window: Sequence[int], *, align_corners: bool = False,
                                padding_mode: str = "zeros") -> jax.Array:
  """`sampler.sample_patches` for maps without rotation or shear, as two small matmuls per patch.

  Args:
    images: (B, H, W, C).
    theta: (B, N, 2, 3) affine maps whose off-diagonal entries theta[..., 0, 1] and theta[..., 1, 0] are
      zero: they are not read (nor differentiated). The diagonal (s_x, s_y) must stay within the scale
      `window` was computed for (`footprint`): a sample outside its patch's window would be dropped.
    patch_size: P or (P_h, P_w).
    window: (window_h, window_w) pixels, from `footprint` for each axis.
  Returns:
    (B, N, P_h, P_w, C) in the dtype of `images`; blended in float32 (float64 for float64 inputs).
  """
  b, h, w, c = images.shape
  if theta.ndim != 4 or theta.shape[-2:] != (2, 3) or theta.shape[0] != b:
    raise ValueError(f"sample_patches_axis_aligned: theta must be (B, N, 2, 3) with B={b}, got {theta.shape}")
  if padding_mode not in sampler.PADDING_MODES:
    raise ValueError(f"sample_patches_axis_aligned: padding_mode must be one of {sampler.PADDING_MODES}, "
                     f"got {padding_mode!r}")
  ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
  win_h, win_w = (min(int(window[0]), h + 2), min(int(window[1]), w + 2))
  dtype = jnp.promote_types(jnp.promote_types(theta.dtype, jnp.float32), images.dtype)
  wy, start_y = _axis_weights(theta[..., 1, 1], theta[..., 1, 2], ph, h, win_h, align_corners, padding_mode,
                              dtype)
  wx, start_x = _axis_weights(theta[..., 0, 0], theta[..., 0, 2], pw, w, win_w, align_corners, padding_mode,
                              dtype)
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(dtype)   # (B, H + 2, W + 2, C)
  if (win_h, win_w) == (h + 2, w + 2):   # every patch may reach anywhere: multiply the whole image
    cols = jnp.einsum("bhwc,bnjw->bnhjc", padded, wx, precision="highest")
  else:
    cut = lambda im, y0, x0: jax.lax.dynamic_slice(im, (y0, x0, jnp.zeros_like(x0)), (win_h, win_w, c))
    windows = jax.vmap(jax.vmap(cut, in_axes=(None, 0, 0)))(padded, start_y, start_x)  # (B, N, wh, ww, C)
    cols = jnp.einsum("bnhwc,bnjw->bnhjc", windows, wx, precision="highest")
  out = jnp.einsum("bnih,bnhjc->bnijc", wy, cols, precision="highest")
  return out.astype(images.dtype)


def _axis_weights(scale, offset, p, n, window, align_corners, padding_mode, dtype):
  """One axis: (B, N) scale and offset -> the (B, N, P, window) bilinear weight matrix and each patch's
  window start (B, N) in the image padded by one pixel (index 0 is the padding pixel left of pixel 0).

  Clamped as in `sampler`'s fused path (`sampler.clamp_for_reads`); the gradient reaches the map only where
  the coordinate lies strictly inside the clamp limits.
  """
  base = sampler._base_coords(p, align_corners, dtype)                       # (P,)
  pixel = sampler.pixel_coordinates(scale[..., None].astype(dtype) * base + offset[..., None].astype(dtype), n,
                                    align_corners)                           # (B, N, P)
  clamped, left, inside = sampler.clamp_for_reads(pixel, n, padding_mode)
  frac = jnp.where(inside, pixel, jax.lax.stop_gradient(clamped)) - jax.lax.stop_gradient(left)
  left = left.astype(jnp.int32) + 1                                          # in the padded image
  start = jnp.clip(jnp.min(left, axis=-1), 0, n + 2 - window)                # (B, N)
  k = jnp.arange(window, dtype=jnp.int32)
  rel = (left - start[..., None])[..., None]                                 # (B, N, P, 1)
  weights = jnp.where(k == rel, 1.0 - frac[..., None], 0.0) + jnp.where(k == rel + 1, frac[..., None], 0.0)
  return weights.astype(dtype), start
