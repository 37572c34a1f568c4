"""Figures of what IPS attends to: the image with its M selected patches outlined and coloured by their
attention score in the final forward pass, and the selected patches themselves, highest score first.

Used by `eval.py --visualize=K` for `model.name="ips"`; matplotlib's Agg backend, no display needed.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np

from apvit_jax.models import ips
from apvit_jax.visualize import mosaic, save_figure


def selected_boxes(positions: np.ndarray, image_hw, patch: int, stride: int) -> np.ndarray:
  """positions (M,) indices into the row-major patch grid -> top-left corners (M, 2) as (row, col)."""
  _, grid_w = ips.patch_grid(image_hw, patch, stride)
  positions = np.asarray(positions)
  return np.stack([positions // grid_w * stride, positions % grid_w * stride], axis=-1)


def ips_figure(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, patches: np.ndarray, patch: int,
               path, title: str = "", show_top: int = 16) -> pathlib.Path:
  """image (H, W, C) in [0, 1]; boxes (M, 2) top-left (row, col); scores (M,); patches (M, P, P, C)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  grey = lambda im: dict(X=im[..., 0], cmap="gray", vmin=0, vmax=1) if im.shape[-1] == 1 else dict(
      X=np.clip(im, 0, 1))
  order = np.argsort(-scores)
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
  left.imshow(**grey(image))
  colours = plt.get_cmap("viridis")
  norm = matplotlib.colors.Normalize(vmin=float(scores.min()), vmax=float(scores.max()))
  for i in order[::-1]:  # the highest scores drawn last, on top
    r, c = boxes[i]
    left.add_patch(plt.Rectangle((c - 0.5, r - 0.5), patch, patch, fill=False, lw=1.2,
                                 color=colours(norm(scores[i]))))
  fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), ax=left, fraction=0.046,
               label="attention score")
  left.set_title(f"{len(boxes)} selected patches", fontsize=9)
  top = order[:show_top]
  right.imshow(**grey(mosaic(np.asarray(patches)[top], gap=max(1, patch // 10), fill=0.5)))
  right.set_title(f"top {len(top)} by score: " + ", ".join(f"{s:.3f}" for s in scores[top[:4]]) + " …",
                  fontsize=9)
  for ax in (left, right):
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  return save_figure(fig, path)


def _describe(labels: dict, logits: dict, i: int) -> str:
  parts = []
  for task, z in logits.items():
    y, z = np.asarray(labels[task])[i], np.asarray(z)[i]
    if y.ndim:  # multi-label: the classes present vs those predicted (logit > 0)
      parts.append(f"{task} {np.flatnonzero(y).tolist()}→{np.flatnonzero(z > 0).tolist()}")
    else:
      parts.append(f"{task} {int(y)}→{int(z.argmax())}")
  return "label→predicted: " + ", ".join(parts)


def figure_selection(model, variables, images: np.ndarray, ips_cfg, prepare, key):
  """Selection as in evaluation (inference mode, selection key `key`), with the patches on the host
  (lazy), so images of any size fit. -> (positions (K, M), chosen patches (K, M, P, P, C) uint8,
  logits {task: (K, ...)}, scores (K, M) from the final forward pass)."""
  host_patches = ips.extract_patches(np.asarray(images), ips_cfg.patch_size, ips_cfg.patch_stride)
  selector = ips.LazySelector(model.apply, memory=ips_cfg.memory, chunk=ips_cfg.chunk, prepare=prepare)
  positions = selector(variables, host_patches, key)
  chosen = ips.gather_patches(host_patches, positions)
  logits, inter = jax.jit(lambda v, p, pos: model.apply(v, prepare(p), pos, train=False))(
      variables, chosen, positions)
  return positions, chosen, logits, np.asarray(inter["scores"])


def render_ips_figures(model, variables, images: np.ndarray, labels: dict, ips_cfg, prepare, out_dir,
                       prefix: str, key) -> list[pathlib.Path]:
  """One figure per image. images (K, H, W, C) uint8; labels {task: (K,) or (K, classes)}; `prepare`
  maps uint8 patches to model inputs; `key`: the selection key evaluation uses (models/families/ips.py)."""
  positions, chosen, logits, scores = figure_selection(model, variables, images, ips_cfg, prepare, key)
  out_dir = pathlib.Path(out_dir)
  return [ips_figure(np.asarray(images[i], np.float32) / 255.0,
                     selected_boxes(positions[i], images.shape[1:3], ips_cfg.patch_size, ips_cfg.patch_stride),
                     scores[i], chosen[i].astype(np.float32) / 255.0, ips_cfg.patch_size,
                     out_dir / f"{prefix}_{i}.png", _describe(labels, logits, i))
          for i in range(len(images))]
