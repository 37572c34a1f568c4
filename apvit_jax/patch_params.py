"""Patch transforms: raw localisation outputs -> bounded maps from patch coordinates to image coordinates.

Coordinates are the sampler's normalised (x, y) in [-1, 1] (align_corners=False). A patch is the image of
the square [-1, 1]^2 under its map; every kind below keeps that square inside the image.

Kinds (raw parameters per patch, in order):
  translate            t (2)                            DPS-ViT: scale fixed at P/W, P/H
  scale                t (2), s (1)                     + isotropic scale
  aniso_scale          t (2), s_x, s_y (2)              + anisotropic scale
  scale_rotate         t (2), s (1), angle (1)          APViT
  aniso_scale_rotate   t (2), s_x, s_y (2), angle (1)
  affine               t (2), a, b, c, d (4)            full linear part
  projective           t (2), a, b, c, d (4), g, h (2)  homography, bottom row (g, h, 1)

Bounds (the published semantics, generalised):
  s = sigmoid(raw) * max_scale;  angle = tanh(raw) * pi;  a..d = tanh(raw) * max_scale;
  g, h = tanh(raw) * max_perspective / 2, so the projective divisor stays >= 1 - max_perspective > 0.
  The linear part is L = R(angle) diag(s_x, s_y): the patch is an s_x-by-s_y rectangle, then rotated.
  Its half-extent along x is |L00| + |L01| = s_x|cos| + s_y|sin| (y: s_x|sin| + s_y|cos|), as published.
  (The published code builds diag(s) R instead, whose true extent differs from that formula when
  s_x != s_y, so its anisotropic patches can leave the image. We use the matrix the formula describes.)
  Translation: with [lo, hi] the x-range of the patch's corners before translating (-e, e for affine
  maps), t_x = -(lo + hi) / 2 + max(1 - (hi - lo) / 2, 0) * bound(raw), bound = tanh (published) or
  a triangle wave ("reflect", which reaches the image border with slope 1: see `BOUNDS`).
  translate_range="full" drops the room factor, t_x = -(lo + hi) / 2 + bound(raw): the patch centre ranges
  over the whole image and a patch may hang out of it by up to its half-extent (zero-padded). That is what
  the published DPS-ViT code did at the commit behind its 77.84 % (t = tanh(raw)); its document states the
  scaled bound, which is our default ("inside").
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax import separable_sampler

KINDS = {"translate": 2, "scale": 3, "aniso_scale": 4, "scale_rotate": 4, "aniso_scale_rotate": 5,
         "affine": 6, "projective": 8}
# Kinds whose maps have no rotation or shear (theta's off-diagonal entries are 0): their patches can be
# cut by the separable sampler (apvit_jax/separable_sampler.py).
AXIS_ALIGNED_KINDS = ("translate", "scale", "aniso_scale")
# "tanh": published; never reaches the border, so a patch touching it (the ViT grid's outer tiles)
# has no finite raw value. "reflect": a triangle wave of period 4, equal to x on [-1, 1], reaching
# +-1 with slope 1; needed for an exact identity-grid start.
BOUNDS = ("tanh", "reflect")
# "inside": t scaled by the room left, so every patch stays in the image (the DPS-ViT document);
# "full": t = bound(raw), the patch centre anywhere in the image (the published DPS-ViT code).
TRANSLATE_RANGES = ("inside", "full")
_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], np.float32)


def reflect(x: jax.Array) -> jax.Array:
  """Triangle wave: x on [-1, 1], mirrored beyond; slope +1 at both ends of [-1, 1]."""
  m = jnp.mod(x + 1.0, 4.0)
  return jnp.where(m <= 2.0, m - 1.0, 3.0 - m)


@dataclasses.dataclass(frozen=True)
class PatchTransform:
  """Maps raw parameters (B, N, K) to patch maps. Validates its bounds on construction."""
  kind: str = "translate"
  patch_size: int = 8
  image_size: tuple[int, int] = (32, 32)   # (H, W)
  max_scale: float = 0.5
  max_perspective: float = 0.25
  bound: str = "tanh"
  translate_range: str = "inside"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown patch transform {self.kind!r}; choose from {sorted(KINDS)}")
    if self.bound not in BOUNDS:
      raise ValueError(f"unknown translation bound {self.bound!r}; choose from {BOUNDS}")
    if self.translate_range not in TRANSLATE_RANGES:
      raise ValueError(f"unknown translate_range {self.translate_range!r}; choose from {TRANSLATE_RANGES}")
    h, w = self.image_size
    if not 0 < self.patch_size <= min(h, w):
      raise ValueError(f"patch size {self.patch_size} does not fit in the {h}x{w} image")
    if self.kind == "projective" and not 0.0 <= self.max_perspective < 1.0:
      raise ValueError(f"max_perspective must be in [0, 1), got {self.max_perspective}")
    if self.kind != "translate" and not self.max_scale > 0.0:
      raise ValueError(f"max_scale must be > 0, got {self.max_scale}")
    reach = self.max_reach()
    if reach > 1.0 + 1e-6:
      raise ValueError(
          f"patch transform {self.kind!r} with max_scale={self.max_scale}"
          + (f", max_perspective={self.max_perspective}" if self.kind == "projective" else "")
          + f" can reach {reach:.3f} > 1 of the half-image, so patches could leave the image; "
          f"use max_scale <= {self.max_scale / reach:.4f}")

  @property
  def num_params(self) -> int:
    return KINDS[self.kind]

  def max_reach(self) -> float:
    """Largest half-extent any patch can have (1 = the whole image)."""
    if self.kind == "translate":
      return self.patch_size / min(self.image_size)
    lin = {"affine": 2.0, "projective": 2.0}.get(self.kind, math.sqrt(2.0) if "rotate" in self.kind else 1.0)
    reach = lin * self.max_scale
    return reach / (1.0 - self.max_perspective) if self.kind == "projective" else reach

  @property
  def axis_aligned(self) -> bool:
    return self.kind in AXIS_ALIGNED_KINDS

  def sampling_window(self) -> tuple[int, int]:
    """(rows, columns) of pixels one patch can touch (axis-aligned kinds): the separable sampler's window.

    The diagonal of every map is at most P/H, P/W ("translate") or max_scale (the sigmoid's bound)."""
    if not self.axis_aligned:
      raise ValueError(f"patch transform {self.kind!r} rotates or shears patches: only "
                       f"{AXIS_ALIGNED_KINDS} can be sampled separably")
    h, w = self.image_size
    p = self.patch_size
    sy, sx = (p / h, p / w) if self.kind == "translate" else (self.max_scale, self.max_scale)
    return separable_sampler.footprint(sy, p, h), separable_sampler.footprint(sx, p, w)

  def _linear(self, raw: jax.Array):
    """raw (..., K) float32 -> L (..., 2, 2), perspective (g, h) (..., 2) or None."""
    h, w = self.image_size
    k = self.kind
    if k in ("affine", "projective"):
      lin = (jnp.tanh(raw[..., 2:6]) * self.max_scale).reshape(*raw.shape[:-1], 2, 2)
      persp = jnp.tanh(raw[..., 6:8]) * (self.max_perspective / 2.0) if k == "projective" else None
      return lin, persp
    if k == "translate":
      sx = jnp.full(raw.shape[:-1], self.patch_size / w, raw.dtype)
      sy = jnp.full(raw.shape[:-1], self.patch_size / h, raw.dtype)
    elif k.startswith("aniso"):
      sx, sy = jax.nn.sigmoid(raw[..., 2]) * self.max_scale, jax.nn.sigmoid(raw[..., 3]) * self.max_scale
    else:
      sx = sy = jax.nn.sigmoid(raw[..., 2]) * self.max_scale
    if k.endswith("rotate"):
      angle = jnp.tanh(raw[..., -1]) * jnp.pi
      cos, sin = jnp.cos(angle), jnp.sin(angle)
    else:
      cos, sin = jnp.ones_like(sx), jnp.zeros_like(sx)
    lin = jnp.stack([jnp.stack([sx * cos, -sy * sin], -1), jnp.stack([sx * sin, sy * cos], -1)], -2)
    return lin, None

  def __call__(self, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """raw (B, N, K) -> (theta (B, N, 2, 3), or (B, N, 3, 3) for projective; centres (B, N, 2)).

    Computed in float32 whatever the dtype of `raw` (bf16 would misplace patches by pixels).
    The centre is where the patch centre (0, 0) lands: the translation t.
    """
    if raw.shape[-1] != self.num_params:
      raise ValueError(f"patch transform {self.kind!r} takes {self.num_params} raw parameters per "
                       f"patch, got {raw.shape[-1]}")
    raw = raw.astype(jnp.float32)
    lin, persp = self._linear(raw)
    corners = jnp.einsum("...ij,kj->...ki", lin, _CORNERS)  # (..., 4, 2)
    if persp is not None:
      corners = corners / (1.0 + jnp.einsum("...j,kj->...k", persp, _CORNERS))[..., None]
    lo, hi = corners.min(axis=-2), corners.max(axis=-2)  # (..., 2)
    room = jnp.maximum(1.0 - (hi - lo) / 2.0, 0.0) if self.translate_range == "inside" else 1.0
    bounded = jnp.tanh(raw[..., :2]) if self.bound == "tanh" else reflect(raw[..., :2])
    t = -(lo + hi) / 2.0 + room * bounded
    if persp is None:
      return jnp.concatenate([lin, t[..., None]], axis=-1), t
    # Translate after the projective map: T @ [[L, 0], [g h 1]].
    top = jnp.concatenate([lin + t[..., :, None] * persp[..., None, :], t[..., None]], axis=-1)
    bottom = jnp.concatenate([persp, jnp.ones_like(persp[..., :1])], axis=-1)[..., None, :]
    return jnp.concatenate([top, bottom], axis=-2), t

  def identity_raw(self) -> np.ndarray:
    """Raw parameters (N, K) that give exactly the regular ViT grid of P×P tiles, row-major.

    Raises when no finite raw value does (tanh bound, or a scale the bounds exclude).
    """
    h, w = self.image_size
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"identity-grid init needs the patch size {p} to divide the image size {h}x{w}")
    if self.bound == "tanh":
      raise ValueError("identity-grid init needs bound='reflect': tanh never reaches +-1, and the "
                       "grid's outer tiles touch the image border")
    gh, gw = h // p, w // p
    ty, tx = np.meshgrid((2.0 * np.arange(gh) + 1.0) / gh - 1.0, (2.0 * np.arange(gw) + 1.0) / gw - 1.0,
                         indexing="ij")
    sx, sy = p / w, p / h
    # room = 1 - extent ("inside") or 1 ("full"); the reflect bound is the identity on [-1, 1].
    room_x, room_y = (1.0 - sx, 1.0 - sy) if self.translate_range == "inside" else (1.0, 1.0)
    raw_t = np.stack([tx / max(room_x, 1e-12), ty / max(room_y, 1e-12)], -1).reshape(gh * gw, 2)

    def inv_scale(s, squash="sigmoid"):
      if not s < self.max_scale:
        raise ValueError(f"identity-grid init needs max_scale > P/W = {s:.4f}, got {self.max_scale}")
      if squash == "tanh":
        return math.atanh(s / self.max_scale)
      return math.log(s / (self.max_scale - s))  # sigmoid^-1(s / max_scale)

    k = self.kind
    if k == "translate":
      rest = []
    elif k in ("affine", "projective"):
      rest = [inv_scale(sx, "tanh"), 0.0, 0.0, inv_scale(sy, "tanh")] + ([0.0, 0.0] if k == "projective" else [])
    elif k.startswith("aniso"):
      rest = [inv_scale(sx), inv_scale(sy)] + ([0.0] if k.endswith("rotate") else [])
    else:
      if sx != sy:
        raise ValueError(f"identity-grid init with isotropic scale needs a square image, got {h}x{w}")
      rest = [inv_scale(sx)] + ([0.0] if k.endswith("rotate") else [])
    rest = np.broadcast_to(np.asarray(rest, np.float64), (gh * gw, len(rest)))
    return np.concatenate([raw_t, rest], axis=-1).astype(np.float32)
