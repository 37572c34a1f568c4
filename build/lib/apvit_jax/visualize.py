"""Figures of where a model looks: the image, the regular ViT grid, the adaptive patches drawn as
(rotated, sheared or projective) quadrilaterals on the image, and the patches as sampled.

Written with matplotlib's Agg backend (no display needed); used by `eval.py --visualize=K`.
"""
from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax import sampler
from apvit_jax.data import augment

# Patch corners in patch coordinates, in drawing order; the first one is marked, so rotation shows.
_CORNERS = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])


def patch_corners(theta: np.ndarray, image_hw) -> np.ndarray:
  """theta (N, 2, 3) or (N, 3, 3) -> corners (N, 4, 2) as (x, y) in pixel units, pixel centres at
  integers (matplotlib's `imshow` convention): the image spans [-0.5, W - 0.5]."""
  theta = np.asarray(theta, np.float64)
  xyw = np.einsum("nij,kj->nki", theta, _CORNERS)
  xy = xyw[..., :2] / (xyw[..., 2:] if theta.shape[-2] == 3 else 1.0)
  h, w = image_hw
  return np.stack([((xy[..., 0] + 1) * w - 1) / 2, ((xy[..., 1] + 1) * h - 1) / 2], axis=-1)


def mosaic(patches: np.ndarray, gap: int = 1, fill: float = 1.0) -> np.ndarray:
  """patches (N, P, P, C) -> one (rows·(P+gap), cols·(P+gap), C) image, `fill` (white) between patches."""
  n, ph, pw, c = patches.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  out = np.full((rows * (ph + gap) - gap, cols * (pw + gap) - gap, c), fill, patches.dtype)
  for i, p in enumerate(patches):
    r, q = divmod(i, cols)
    out[r * (ph + gap):r * (ph + gap) + ph, q * (pw + gap):q * (pw + gap) + pw] = p
  return out


def patch_figure(image: np.ndarray, theta: np.ndarray, patches: np.ndarray, grid_theta: np.ndarray,
                 path, title: str = "") -> pathlib.Path:
  """image (H, W, C) in [0, 1]; theta (N, 2|3, 3); patches (N, P, P, C); grid_theta (M, 2, 3). -> path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  h, w, c = image.shape
  show = (lambda ax, im: ax.imshow(im[..., 0], cmap="gray", vmin=0, vmax=1)) if c == 1 else (
      lambda ax, im: ax.imshow(np.clip(im, 0, 1)))
  fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
  colours = plt.get_cmap("tab20")
  for ax, name in zip(axes, ["image", "regular grid (ViT)", "adaptive patches", "sampled patches"]):
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  show(axes[0], image)
  for ax, maps in ((axes[1], grid_theta), (axes[2], theta)):
    show(ax, image)
    for i, quad in enumerate(patch_corners(maps, (h, w))):
      ax.add_patch(plt.Polygon(quad, closed=True, fill=False, lw=1.0, color=colours(i % 20)))
      ax.plot(*quad[0], marker="o", ms=2, color=colours(i % 20))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
  show(axes[3], mosaic(np.asarray(patches)))
  if title:
    fig.suptitle(title, fontsize=10)
  return save_figure(fig, path)


def save_figure(fig, path) -> pathlib.Path:
  """Lays out, writes (creating folders) and closes a matplotlib figure. -> path."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def render_patch_figures(model, variables, images: np.ndarray, labels: np.ndarray, aug_cfg, out_dir,
                         prefix: str = "patches") -> list[pathlib.Path]:
  """One figure per image. images (K, H, W, C) uint8-range, labels (K,). Models without an adaptive
  front-end show their regular grid in both panels."""
  x = augment.preprocess(jnp.asarray(images), None, aug_cfg, train=False)
  logits, inter = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  h, w = images.shape[1:3]
  p = model.patch_size
  grid = np.asarray(sampler.regular_grid_theta((h, w), p)) if h % p == 0 and w % p == 0 else np.zeros((0, 2, 3))
  theta = inter.get("theta")
  if theta is None:
    theta = jnp.broadcast_to(jnp.asarray(grid), (len(images),) + grid.shape)
  pixels = jnp.asarray(images, jnp.float32) / 255.0
  patches = np.asarray(sampler.sample_patches(pixels, theta, p))
  preds = np.asarray(jnp.argmax(logits, -1))
  out_dir = pathlib.Path(out_dir)
  return [patch_figure(np.asarray(pixels[i]), np.asarray(theta[i]), patches[i], grid,
                       out_dir / f"{prefix}_{i}.png", f"label {int(labels[i])}, predicted {int(preds[i])}")
          for i in range(len(images))]
