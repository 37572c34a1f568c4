"""Float64 NumPy reference of the patch transforms, written per patch from the formulas in the
apvit_jax/patch_params.py docstring (and DESIGN.md's "Patch parameters")."""
import itertools

import numpy as np

NUM_PARAMS = {"translate": 2, "scale": 3, "aniso_scale": 4, "scale_rotate": 4, "aniso_scale_rotate": 5,
              "affine": 6, "projective": 8}


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def triangle(x):
  """Period-4 triangle wave equal to x on [-1, 1], via arcsin(sin) (a different formula from the code's)."""
  return 2.0 / np.pi * np.arcsin(np.sin(np.pi * x / 2.0))


def patch_map(r, kind, patch, image_hw, max_scale, max_persp, bound, translate_range="inside"):
  """r (K,) -> (H (3, 3) homography of the patch, centre (2,))."""
  h, w = image_hw
  g = hh = 0.0
  if kind in ("affine", "projective"):
    lin = np.tanh(r[2:6]).reshape(2, 2) * max_scale
    if kind == "projective":
      g, hh = np.tanh(r[6:8]) * max_persp / 2
  else:
    if kind == "translate":
      sx, sy = patch / w, patch / h
    elif kind.startswith("aniso"):
      sx, sy = sigmoid(r[2]) * max_scale, sigmoid(r[3]) * max_scale
    else:
      sx = sy = sigmoid(r[2]) * max_scale
    ang = np.tanh(r[-1]) * np.pi if kind.endswith("rotate") else 0.0
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lin = rot @ np.diag([sx, sy])
  corners = []
  for cx, cy in itertools.product((-1.0, 1.0), repeat=2):
    corners.append(lin @ [cx, cy] / (1.0 + g * cx + hh * cy))
  corners = np.array(corners)
  lo, hi = corners.min(0), corners.max(0)
  b = np.tanh(r[:2]) if bound == "tanh" else triangle(r[:2])
  room = np.maximum(1 - (hi - lo) / 2, 0) if translate_range == "inside" else 1.0  # "full": unscaled
  t = -(lo + hi) / 2 + room * b
  top = lin + np.outer(t, [g, hh])
  return np.block([[top, t[:, None]], [np.array([[g, hh, 1.0]])]]), t


def patch_maps(raw, kind, patch, image_hw, max_scale=0.5, max_persp=0.25, bound="tanh",
               translate_range="inside"):
  """raw (..., K) -> homographies (..., 3, 3), centres (..., 2)."""
  raw = np.asarray(raw, np.float64)
  hs = np.zeros(raw.shape[:-1] + (3, 3))
  ts = np.zeros(raw.shape[:-1] + (2,))
  for idx in np.ndindex(*raw.shape[:-1]):
    hs[idx], ts[idx] = patch_map(raw[idx], kind, patch, image_hw, max_scale, max_persp, bound,
                                 translate_range)
  return hs, ts


def lookup(table, grid_hw, centres, lookup_kind):
  """Bilinear lookup with border clamping. table (Gh*Gw, D), centres (..., 2) -> (..., D)."""
  gh, gw = grid_hw
  table = np.asarray(table, np.float64).reshape(gh, gw, -1)
  out = np.zeros(centres.shape[:-1] + (table.shape[-1],))
  for idx in np.ndindex(*centres.shape[:-1]):
    x, y = centres[idx]
    if lookup_kind == "seed":
      u, v = (x + 1) * (gw - 1) / 2, (y + 1) * (gh - 1) / 2
    else:
      u, v = ((x + 1) * gw - 1) / 2, ((y + 1) * gh - 1) / 2
    u, v = min(max(u, 0.0), gw - 1.0), min(max(v, 0.0), gh - 1.0)
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    u1, v1 = min(u0 + 1, gw - 1), min(v0 + 1, gh - 1)
    fu, fv = u - u0, v - v0
    out[idx] = ((1 - fu) * (1 - fv) * table[v0, u0] + fu * (1 - fv) * table[v0, u1]
                + (1 - fu) * fv * table[v1, u0] + fu * fv * table[v1, u1])
  return out
