"""Plain float64 NumPy loop reference of torch affine_grid + grid_sample(bilinear), channels-last."""
import numpy as np


def affine_grid(theta, ph, pw, align_corners):
  """theta (..., 2, 3) -> grid (..., ph, pw, 2), written straight from PyTorch's documentation."""
  theta = np.asarray(theta, np.float64)
  def base(n):
    if align_corners:
      return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return np.linspace(-1.0, 1.0, n) * (n - 1) / n
  xs, ys = base(pw), base(ph)
  out = np.zeros(theta.shape[:-2] + (ph, pw, 2))
  for idx in np.ndindex(*theta.shape[:-2]):
    t = theta[idx]
    for i in range(ph):
      for j in range(pw):
        out[idx + (i, j)] = t @ np.array([xs[j], ys[i], 1.0])
  return out


def homography_grid(h, ph, pw):
  """h (..., 3, 3) -> grid (..., ph, pw, 2): the affine grid of the top rows over the bottom row's."""
  h = np.asarray(h, np.float64)
  xy = affine_grid(h[..., :2, :], ph, pw, False)
  w = affine_grid(np.concatenate([h[..., 2:, :], h[..., 2:, :]], -2), ph, pw, False)[..., :1]
  return xy / w


def grid_sample(images, grid, padding_mode, align_corners):
  """images (B, H, W, C), grid (B, ..., 2) -> (B, ..., C)."""
  images = np.asarray(images, np.float64)
  grid = np.asarray(grid, np.float64)
  b, h, w, c = images.shape
  out = np.zeros(grid.shape[:-1] + (c,))
  for idx in np.ndindex(*grid.shape[:-1]):
    gx, gy = grid[idx]
    if align_corners:
      x, y = (gx + 1) / 2 * (w - 1), (gy + 1) / 2 * (h - 1)
    else:
      x, y = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
    if padding_mode == "border":
      x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    acc = np.zeros(c)
    for yy in (y0, y0 + 1):
      for xx in (x0, x0 + 1):
        wgt = (1 - abs(x - xx)) * (1 - abs(y - yy))
        if 0 <= xx < w and 0 <= yy < h:
          acc += wgt * images[idx[0], yy, xx]
    out[idx] = acc
  return out
