"""Positional codes: learned grids and fixed 2-D sin-cos embeddings (1, N, D); for patches placed
anywhere, a bilinear lookup in such a grid at the patch centre (APViT) or a linear code of the centre
(DPS-ViT)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax import sampler

POSEMB_KINDS = ("learn", "sincos2d")
# Where a centre t in [-1, 1] lands in a G-cell grid: "cell_centres": u = ((t + 1) G - 1) / 2, so cell c
# is the image region of the ViT's tile c and the regular grid reads each cell exactly (the identity-grid
# start equals the ViT); "seed": u = (t + 1)(G - 1) / 2 (align corners, as the published APViT).
LOOKUPS = ("cell_centres", "seed")


def sincos2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos embedding (MoCo-v3 / big_vision layout), (1, h*w, width)."""
  if width % 4:
    raise ValueError(f"sincos2d: width must be divisible by 4, got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 if width > 4 else 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(np.float32)


class GridPosEmbed(nn.Module):
  """Position embedding for an h×w grid of tokens, (1, h*w, width)."""
  kind: str = "learn"
  std: float = 0.02

  @nn.compact
  def __call__(self, h: int, w: int, width: int):
    if self.kind == "learn":
      return self.param("pos_embedding", nn.initializers.normal(self.std), (1, h * w, width))
    if self.kind == "sincos2d":
      return jnp.asarray(sincos2d(h, w, width))
    raise ValueError(f"unknown posemb {self.kind!r}; choose from {POSEMB_KINDS}")


def lookup_posemb(table: jax.Array, grid_shape: tuple[int, int], centres: jax.Array,
                  lookup: str = "cell_centres") -> jax.Array:
  """Bilinear lookup of a (1, Gh*Gw, D) grid of embeddings at centres (B, N, 2) -> (B, N, D).

  Centres are normalised (x, y); outside the outer cell centres the border cell's value is used.
  """
  if lookup not in LOOKUPS:
    raise ValueError(f"unknown posemb lookup {lookup!r}; choose from {LOOKUPS}")
  gh, gw = grid_shape
  b, n, _ = centres.shape
  grid = table.reshape(1, gh, gw, table.shape[-1])
  out = sampler.grid_sample(grid, centres.reshape(1, b * n, 2).astype(jnp.float32),
                            padding_mode="border", align_corners=lookup == "seed")
  return out.reshape(b, n, -1)
