"""Positional codes: learned grids and fixed 2-D sin-cos embeddings, shape (1, N, D)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

POSEMB_KINDS = ("learn", "sincos2d")


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
