"""Bilinear affine patch sampler with PyTorch `affine_grid` + `grid_sample` semantics, channels-last.

Coordinates follow PyTorch: a grid holds normalised (x, y) in [-1, 1], x along width, y along height.
With `align_corners=False`, -1 and 1 are the outer edges of the border pixels; with `True`, their centres.
All coordinate arithmetic runs in float32 (bfloat16 coordinates would be off by whole pixels on large
images); pixel values keep the image dtype when gathered and are blended in float32.
"""
from __future__ import annotations

import functools
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
  return _map_base_grid_vjp(rows.astype(_coord_dtype(rows)), tuple(int(s) for s in size), align_corners)


def _base_grid(size: tuple[int, int], align_corners: bool, dtype) -> tuple[jax.Array, jax.Array]:
  ph, pw = size
  return _base_coords(pw, align_corners, dtype), _base_coords(ph, align_corners, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _map_base_grid_vjp(rows, size, align_corners):
  xs, ys = _base_grid(size, align_corners, rows.dtype)
  t = rows[..., None, None, :, :]  # (..., 1, 1, K, 3)
  # Written out rather than as a matmul so the ViT-grid case stays bit-exact (no accumulation reordering).
  return t[..., 0] * xs[None, :, None] + t[..., 1] * ys[:, None, None] + t[..., 2]


def _map_base_grid_fwd(rows, size, align_corners):
  return _map_base_grid_vjp(rows, size, align_corners), None


def _map_base_grid_bwd(size, align_corners, _, cotangent):
  # d rows[..., k, :] = sum over pixels of cotangent[..., k] * (x, y, 1): one small matmul, 6-8x faster on
  # CPU than the three reductions autodiff writes (measured).
  xs, ys = _base_grid(size, align_corners, cotangent.dtype)
  ones = jnp.ones((), cotangent.dtype)
  base = jnp.stack(jnp.broadcast_arrays(xs[None, :], ys[:, None], ones), -1)  # (P_h, P_w, 3)
  return (jnp.einsum("...hwk,hwj->...kj", cotangent, base),)


_map_base_grid_vjp.defvjp(_map_base_grid_fwd, _map_base_grid_bwd)


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


def pixel_coordinates(coord: jax.Array, n: int, align_corners: bool) -> jax.Array:
  """Normalised coordinates along an axis of n pixels -> pixel coordinates, computed once for every
  consumer (an optimisation barrier). XLA otherwise recomputes them inside each fusion that reads them,
  and where they land on whole pixels (integer crops, flips, a regular grid) two fusions may round to
  either side of the pixel, pairing one fusion's floor (the corner read) with another's fraction (its
  weight): a read a whole pixel off (seen in the crop augmentation as a train step compiled it; tests in
  test_compiled_sampling.py). Floors, clamps and fractions of one value are exact, so they always agree.
  jax 0.10.2's XLA:CPU removes the barrier before fusion (its optimised HLO fuses the coordinate arithmetic
  into every gather again), so there the defect remains; a sort over the coordinates keeps them apart on
  that stack too but made the sampler 10-20x slower (measured), and is not used."""
  return jax.lax.optimization_barrier(_unnormalise(coord, n, align_corners))


def grid_sample(images: jax.Array, grid: jax.Array, padding_mode: str = "zeros",
                align_corners: bool = False) -> jax.Array:
  """Bilinear sampling, as `torch.nn.functional.grid_sample(mode="bilinear")` in NHWC.

  Differentiable through a `jax.custom_vjp` whose backward reuses the forward's corner indices and
  weights: the image gradient is one scatter-add of the four weighted corners, the grid gradient is
  formed analytically (a few fused element-wise passes instead of ~90 small autodiff operations).
  `grid_sample_autodiff` is the same function left to JAX's autodiff; the tests hold the two equal.

  Args:
    images: (B, H, W, C).
    grid: (B, ..., 2) normalised (x, y) coordinates.
    padding_mode: "zeros" (outside pixels read as 0) or "border" (coordinates clamped to the image).
  Returns:
    (B, ..., C) in the dtype of `images`.
  """
  _check_grid_sample_args(images, grid, padding_mode)
  return _grid_sample_fused_vjp(images, grid, padding_mode, align_corners)


def grid_sample_autodiff(images: jax.Array, grid: jax.Array, padding_mode: str = "zeros",
                         align_corners: bool = False) -> jax.Array:
  """`grid_sample` as four masked gathers left to JAX's autodiff: the reference path (same arguments,
  same result) that the fused backward of `grid_sample` is tested against."""
  _check_grid_sample_args(images, grid, padding_mode)
  return _sample_masked(images, grid, padding_mode, align_corners)


def _check_grid_sample_args(images, grid, padding_mode):
  if images.ndim != 4:
    raise ValueError(f"grid_sample: images must be (B, H, W, C), got shape {images.shape}")
  if grid.shape[-1] != 2 or grid.shape[0] != images.shape[0]:
    raise ValueError(f"grid_sample: grid must be (B, ..., 2) with B={images.shape[0]}, got {grid.shape}")
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"grid_sample: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def _sample_masked(images, grid, padding_mode, align_corners):
  """The forward pass: four gathers of clamped corners, outside corners masked to weight 0."""
  b, h, w, c = images.shape
  out_shape = grid.shape[:-1]
  dtype = _coord_dtype(grid)
  g = grid.reshape(b, -1, 2).astype(dtype)
  x = pixel_coordinates(g[..., 0], w, align_corners)
  y = pixel_coordinates(g[..., 1], h, align_corners)
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


def _fold_vmapped_axis(fn):
  """fn(*arrays) -> array or tuple of arrays, where every argument and output has a leading axis whose
  entries fn treats independently and in order: the batch of images, or the flat samples of those images,
  image-major. Under jax.vmap (the replicas of a multi-seed run), the vmapped axis is folded into that
  leading axis, so fn runs once on K*B images: XLA:CPU runs a batched gather or scatter several times
  slower than the 1-D ones fn is written with. Unbatched arguments are broadcast first."""
  folded = jax.custom_batching.custom_vmap(fn)

  @folded.def_vmap
  def rule(axis_size, in_batched, *args):
    args = [x if batched else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, batched in zip(args, in_batched)]
    out = folded(*(x.reshape(-1, *x.shape[2:]) for x in args))
    return (jax.tree.map(lambda y: y.reshape(axis_size, -1, *y.shape[1:]), out),
            jax.tree.map(lambda _: True, out))
  return folded


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _grid_sample_fused_vjp(images, grid, padding_mode, align_corners):
  # Called without differentiation: the masked gathers (no padded copy of the image) are fastest.
  return _fold_vmapped_axis(lambda i, g: _sample_masked(i, g, padding_mode, align_corners))(images, grid)


def _forward_keeping_corners(images, grid, padding_mode, align_corners):
  """The forward under differentiation (see _forward_keeping_corners_folded)."""
  out, *residuals = _fold_vmapped_axis(functools.partial(_forward_keeping_corners_folded, padding_mode,
                                                         align_corners))(images, grid)
  return out, tuple(residuals)


def _backward_from_corners(padding_mode, align_corners, residuals, cotangent):
  """The backward (see _backward_from_corners_folded)."""
  return _fold_vmapped_axis(functools.partial(_backward_from_corners_folded, padding_mode, align_corners))(
      *residuals, cotangent)


def _forward_keeping_corners_folded(padding_mode, align_corners, images, grid):
  """Reads the image padded by one zero pixel, so every corner is an in-bounds read and the backward's
  scatter-add needs no mask; keeps the per-sample corners. -> (out, images, grid, top_left, wx, wy, dx,
  dy): the residuals flat, every array with a leading image (or image-major sample) axis."""
  b, h, w, c = images.shape
  g = grid.reshape(-1, 2).astype(_coord_dtype(grid))
  corners = _corners(g, b, h, w, padding_mode, align_corners)
  top_left, wx, wy = corners[:3]
  values = _gather_corners(_pad_flat(images), top_left, w)
  out = _blend(values, wx, wy, _blend_dtype(images, g))
  return (out.reshape(*grid.shape[:-1], c).astype(images.dtype), images, grid, *corners)


def _backward_from_corners_folded(padding_mode, align_corners, images, grid, top_left, wx, wy, dx, dy,
                                  cotangent):
  b, h, w, c = images.shape
  acc = _blend_dtype(images, wx)
  ct = cotangent.reshape(-1, c).astype(acc)
  wx_, wy_ = wx[:, None], wy[:, None]
  image_grad = jnp.zeros((b * (h + 2) * (w + 2), c), acc)
  for offset, weight in zip(_corner_offsets(w), _corner_weights(wx_, wy_)):  # four in-place scatter-adds, no concatenation
    image_grad = image_grad.at[top_left + offset].add(ct * weight, mode="promise_in_bounds")
  image_grad = image_grad.reshape(b, h + 2, w + 2, c)[:, 1:-1, 1:-1].astype(images.dtype)
  tl, tr, bl, br = (v.astype(acc) for v in _gather_corners(_pad_flat(images), top_left, w))
  # d out / d wx and d out / d wy along the cotangent, summed over channels.
  d_wx = _sum_channels(ct * ((1 - wy_) * (tr - tl) + wy_ * (br - bl)))
  d_wy = _sum_channels(ct * ((1 - wx_) * (bl - tl) + wx_ * (br - tr)))
  grid_grad = jnp.stack([d_wx * dx, d_wy * dy], -1).reshape(grid.shape).astype(grid.dtype)
  return image_grad, grid_grad


_grid_sample_fused_vjp.defvjp(_forward_keeping_corners, _backward_from_corners)


def _corners(g: jax.Array, b: int, h: int, w: int, padding_mode: str, align_corners: bool):
  """Where each sample's 2x2 neighbourhood lies in the image padded by one pixel on every side.

  g: (S, 2) with S = B K samples, K per image. Returns (top_left, wx, wy, dx, dy), each (S,): the flat
  index of the top-left corner in the padded image viewed as (B (H+2) (W+2), C) (int32); the weights of
  the right and lower corners; d(pixel coordinate)/d(grid coordinate), zero where the coordinate was
  clamped. Clamping to [-1, W] (zeros) or [0, W-1] (border) before the floor makes every corner an
  in-bounds read: outside corners read the zero padding, exactly what PyTorch's masks give.
  The result passes an optimisation barrier: XLA would otherwise recompute this arithmetic inside each of
  the gathers and the scatter that consume it (measured 2.5x slower on CPU).
  """
  def axis(coord, n):
    scale = (n - 1) / 2.0 if align_corners else n / 2.0
    clamped, left, inside = clamp_for_reads(pixel_coordinates(coord, n, align_corners), n, padding_mode)
    slope = jnp.where(inside, scale, 0.0).astype(coord.dtype)
    return left.astype(jnp.int32) + 1, clamped - left, slope

  x0, wx, dx = axis(g[:, 0], w)
  y0, wy, dy = axis(g[:, 1], h)
  image_start = jnp.repeat(jnp.arange(b, dtype=jnp.int32) * ((h + 2) * (w + 2)), g.shape[0] // b)
  return jax.lax.optimization_barrier((image_start + y0 * (w + 2) + x0, wx, wy, dx, dy))


def clamp_for_reads(pixel: jax.Array, n: int, padding_mode: str):
  """Pixel coordinates along an axis of n pixels (any shape) -> (clamped, left, inside), each that shape.

  clamped: the coordinate clamped to [-1, n] (zeros: beyond, both corners read zero padding) or [0, n - 1]
  (border). left: floor(clamped) as a float, at most n - 1, so the right corner is at most n. inside: the
  coordinate lies strictly within those limits, the only place where grid_sample passes its gradient
  (PyTorch's clip_coordinates_set_grad gives 0 outside and on the limits themselves).
  """
  lo, hi = (-1.0, float(n)) if padding_mode == "zeros" else (0.0, n - 1.0)
  clamped = jnp.clip(pixel, lo, hi)
  return clamped, jnp.minimum(jnp.floor(clamped), n - 1.0), (pixel > lo) & (pixel < hi)


def _corner_offsets(w: int) -> tuple[int, int, int, int]:
  """Flat offsets of the top-left, top-right, bottom-left, bottom-right corners in the padded image."""
  return (0, 1, w + 2, w + 3)


def _gather_corners(padded_flat, top_left, w):
  """(B (H+2) (W+2), C), (S,) -> four (S, C) corner values: TL, TR, BL, BR. Four 1-D gathers: XLA:CPU
  runs one gather with an (S, 4) index array ~7x slower (measured)."""
  return tuple(padded_flat.at[top_left + o].get(mode="promise_in_bounds") for o in _corner_offsets(w))


def _corner_weights(wx, wy):
  """Right/lower weights (S, 1) -> the bilinear weights of the TL, TR, BL, BR corners, each (S, 1)."""
  return (1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx


def _blend(values, wx, wy, dtype):
  """Bilinear blend of the four (S, C) corners with right/lower weights wx, wy (S,), in `dtype`."""
  wx, wy = wx[:, None].astype(dtype), wy[:, None].astype(dtype)
  tl, tr, bl, br = (v.astype(dtype) * weight for v, weight in zip(values, _corner_weights(wx, wy)))
  return tl + tr + bl + br


def _sum_channels(x):
  """(S, C) -> (S,). Few channels are added as columns: XLA:CPU hands a reduction over a minor axis of 3
  to a library kernel that took 15 of 54 ms in the sampler's backward (profiled)."""
  if x.shape[-1] <= 4:
    return functools.reduce(jnp.add, [x[:, i] for i in range(x.shape[-1])])
  return x.sum(-1)


def _blend_dtype(images, coords):
  """Pixel values are blended (and gradients accumulated) in float32, or float64 where given."""
  return jnp.promote_types(images.dtype, coords.dtype)


def _pad_flat(images):
  """(B, H, W, C) -> the image with one zero pixel on every side, as rows (B (H+2) (W+2), C)."""
  b, h, w, c = images.shape
  return jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b * (h + 2) * (w + 2), c)


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
