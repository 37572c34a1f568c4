"""Bilinear affine patch sampler with PyTorch `affine_grid` + `grid_sample` semantics, channels-last.

Coordinates follow PyTorch: a grid holds normalised (x, y) in [-1, 1], x along width, y along height.
With `align_corners=False`, -1 and 1 are the outer edges of the border pixels; with `True`, their centres.
All coordinate arithmetic runs in float32 (bfloat16 coordinates would be off by whole pixels on large
images); pixel values keep the image dtype when gathered and are blended in float32.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

PADDING_MODES = ("zeros", "border")


def _coord_dtype(x: jax.Array) -> jnp.dtype:
  return jnp.promote_types(x.dtype, jnp.float32)


def _base_coords(n: int, align_corners: bool, dtype) -> jax.Array:
  """Normalised centres of n output pixels along one axis, shape (n,)."""
  i = jnp.arange(n, dtype=dtype)
  if align_corners:
    return i * (2.0 / (n - 1)) - 1.0 if n > 1 else jnp.zeros((1,), dtype)
  # (2i + 1) / n - 1 equals torch's linspace(-1, 1, n) * (n - 1) / n, and is exact for power-of-two n.
  return (2.0 * i + 1.0) / n - 1.0


def affine_grid(theta: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """Sampling grid for affine maps, as `torch.nn.functional.affine_grid`.

  Args:
    theta: (..., 2, 3) maps from output coordinates (x, y, 1) to input coordinates (x, y).
    size: (P_h, P_w) of the output.
  Returns:
    (..., P_h, P_w, 2) normalised input coordinates (x, y).
  """
  if theta.shape[-2:] != (2, 3):
    raise ValueError(f"affine_grid: theta must have shape (..., 2, 3), got {theta.shape}")
  return _map_base_grid(theta, size, align_corners)


def _map_base_grid(rows: jax.Array, size: Sequence[int], align_corners: bool) -> jax.Array:
  """rows (..., K, 3) applied to every output pixel's (x, y, 1) -> (..., P_h, P_w, K), float32+."""
  ph, pw = (int(s) for s in size)
  dtype = _coord_dtype(rows)
  rows = rows.astype(dtype)
  xs = _base_coords(pw, align_corners, dtype)
  ys = _base_coords(ph, align_corners, dtype)
  t = rows[..., None, None, :, :]  # (..., 1, 1, K, 3)
  # Written out rather than as a matmul so the ViT-grid case stays bit-exact (no accumulation reordering).
  return (t[..., 0] * xs[None, :, None] + t[..., 1] * ys[:, None, None] + t[..., 2])


def homography_grid(h: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """Sampling grid for projective maps: (x, y) = (H[0] . p, H[1] . p) / (H[2] . p) with p = (x, y, 1).

  Args:
    h: (..., 3, 3) homographies from output coordinates to input coordinates. A bottom row (0, 0, 1)
      gives exactly `affine_grid(h[..., :2, :])`.
    size: (P_h, P_w) of the output.
  Returns:
    (..., P_h, P_w, 2) normalised input coordinates (x, y).
  """
  if h.shape[-2:] != (3, 3):
    raise ValueError(f"homography_grid: h must have shape (..., 3, 3), got {h.shape}")
  xyw = _map_base_grid(h, size, align_corners)  # (..., P_h, P_w, 3) homogeneous coordinates
  return xyw[..., :2] / xyw[..., 2:]


def _unnormalise(coord: jax.Array, n: int, align_corners: bool) -> jax.Array:
  if align_corners:
    return (coord + 1.0) * ((n - 1) / 2.0)
  return ((coord + 1.0) * n - 1.0) / 2.0


def grid_sample(images: jax.Array, grid: jax.Array, padding_mode: str = "zeros",
                align_corners: bool = False) -> jax.Array:
  """Bilinear sampling, as `torch.nn.functional.grid_sample(mode="bilinear")` in NHWC.

  Args:
    images: (B, H, W, C).
    grid: (B, ..., 2) normalised (x, y) coordinates.
    padding_mode: "zeros" (outside pixels read as 0) or "border" (coordinates clamped to the image).
  Returns:
    (B, ..., C) in the dtype of `images`.
  """
  if images.ndim != 4:
    raise ValueError(f"grid_sample: images must be (B, H, W, C), got shape {images.shape}")
  if grid.shape[-1] != 2 or grid.shape[0] != images.shape[0]:
    raise ValueError(f"grid_sample: grid must be (B, ..., 2) with B={images.shape[0]}, got {grid.shape}")
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"grid_sample: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
  b, h, w, c = images.shape
  out_shape = grid.shape[:-1]
  dtype = _coord_dtype(grid)
  g = grid.reshape(b, -1, 2).astype(dtype)
  x = _unnormalise(g[..., 0], w, align_corners)
  y = _unnormalise(g[..., 1], h, align_corners)
  if padding_mode == "border":
    x = jnp.clip(x, 0.0, w - 1.0)
    y = jnp.clip(y, 0.0, h - 1.0)
  x0f, y0f = jnp.floor(x), jnp.floor(y)
  wx1, wy1 = x - x0f, y - y0f
  wx0, wy0 = 1.0 - wx1, 1.0 - wy1
  x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
  x1, y1 = x0 + 1, y0 + 1

  flat = images.reshape(b, h * w, c)

  def corner(yi, xi, weight):
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)  # (B, K)
    vals = jax.vmap(lambda im, ix: im[ix])(flat, idx)  # (B, K, C): a gather, no copy per patch
    return vals.astype(dtype) * jnp.where(inside, weight, 0.0)[..., None]

  out = (corner(y0, x0, wy0 * wx0) + corner(y0, x1, wy0 * wx1)
         + corner(y1, x0, wy1 * wx0) + corner(y1, x1, wy1 * wx1))
  return out.reshape(*out_shape, c).astype(images.dtype)


def sample_patches(images: jax.Array, theta: jax.Array, patch_size: int | Sequence[int], *,
                   align_corners: bool = False, padding_mode: str = "zeros") -> jax.Array:
  """Cuts N affine (or projective) patches out of each image.

  Args:
    images: (B, H, W, C).
    theta: (B, N, 2, 3) one affine map per patch (output patch coords -> image coords), or
      (B, N, 3, 3) one homography per patch.
    patch_size: P or (P_h, P_w).
  Returns:
    (B, N, P_h, P_w, C).
  """
  if theta.ndim != 4 or theta.shape[-2:] not in ((2, 3), (3, 3)) or theta.shape[0] != images.shape[0]:
    raise ValueError(f"sample_patches: theta must be (B, N, 2, 3) or (B, N, 3, 3) with "
                     f"B={images.shape[0]}, got {theta.shape}")
  size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
  if theta.shape[-2] == 3:
    grid = homography_grid(theta, size, align_corners=align_corners)
  else:
    grid = affine_grid(theta, size, align_corners=align_corners)
  return grid_sample(images, grid, padding_mode=padding_mode, align_corners=align_corners)


def regular_grid_theta(image_size: Sequence[int], patch_size: int) -> jax.Array:
  """Affine maps of the non-overlapping ViT tiles, row-major, shape (N, 2, 3), align_corners=False.

  Tile (r, c) has theta [[P/W, 0, t_x], [0, P/H, t_y]] with t_x = (2c + 1) P / W - 1.
  """
  h, w = (int(s) for s in image_size)
  if h % patch_size or w % patch_size:
    raise ValueError(f"regular_grid_theta: image size {(h, w)} is not divisible by patch size {patch_size}")
  nh, nw = h // patch_size, w // patch_size
  ty = (2.0 * jnp.arange(nh, dtype=jnp.float32) + 1.0) * patch_size / h - 1.0
  tx = (2.0 * jnp.arange(nw, dtype=jnp.float32) + 1.0) * patch_size / w - 1.0
  ty, tx = jnp.meshgrid(ty, tx, indexing="ij")
  sx = jnp.full_like(tx, patch_size / w)
  sy = jnp.full_like(ty, patch_size / h)
  zero = jnp.zeros_like(tx)
  theta = jnp.stack([jnp.stack([sx, zero, tx], -1), jnp.stack([zero, sy, ty], -1)], -2)
  return theta.reshape(nh * nw, 2, 3)
