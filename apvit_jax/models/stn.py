"""Localisation networks: images -> one feature vector per patch, from which patch maps are predicted.

"dps" (DPS-ViT / APViT): 3×3 conv -> ReLU -> channel self-attention -> 2×2 max-pool -> 3×3 conv to one
channel per patch -> ReLU -> channel self-attention; patch n's features are channel n's map, flattened.
"cnn": the same without attention, with one more conv + pool stage (a cheap baseline).

Every operation acts within one image. The published code feeds (B, C, H·W) to a sequence-first
`nn.MultiheadAttention`, so it attends across the batch and a prediction depends on the other images
in the batch; here the C channels of each image are the tokens.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from apvit_jax.models import pooling
from apvit_jax.models.dropout import Dropout
from apvit_jax.models.vit import EncoderBlock

STNS = ("dps", "cnn")


class ChannelSelfAttention(nn.Module):
  """Each channel's flattened map is a token; a pre-LN block mixes the C tokens of each image.

  x (B, H, W, C) -> (B, H, W, C): x + dropout(GELU(decode(block(encode(tokens))))).
  """
  width: int = 256
  num_heads: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c).transpose(0, 2, 1)  # (B, C, H*W)
    init = dict(kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype)
    y = nn.Dense(self.width, name="encode", **init)(tokens)
    y = EncoderBlock(self.num_heads, 4 * self.width, dtype=self.dtype, attention_impl=self.attention_impl,
                     name="block")(y, train)
    y = nn.gelu(nn.Dense(h * w, name="decode", **init)(y))
    y = Dropout(self.dropout)(y, deterministic=not train)
    return x + y.transpose(0, 2, 1).reshape(b, h, w, c).astype(x.dtype)


class LocalisationNet(nn.Module):
  """images (B, H, W, C) -> per-patch features (B, num_patches, F), F = H·W/4 ("dps") or H·W/16 ("cnn")."""
  num_patches: int
  kind: str = "dps"
  hidden: int = 32
  attn_width: int = 256
  attn_heads: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, images, *, train: bool):
    if self.kind not in STNS:
      raise ValueError(f"unknown localisation network {self.kind!r}; choose from {STNS}")
    conv = lambda ch, name: nn.Conv(ch, (3, 3), padding=1, use_bias=False, dtype=self.dtype, name=name,
                                    kernel_init=nn.initializers.kaiming_normal())
    attend = lambda x, name: ChannelSelfAttention(self.attn_width, self.attn_heads, self.dropout,
                                                  self.dtype, self.attention_impl, name=name)(x, train=train)
    # nn.max_pool's values; a gradient without the index arrays XLA builds for a max-pool's gradient
    # (DPS-ViT's step ~2 % faster on a CPU, bench/RESULTS.md).
    pool = lambda x: pooling.max_pool(x, 2, 2)
    x = nn.relu(conv(self.hidden, "conv1")(images))
    if self.kind == "dps":
      x = pool(attend(x, "attn1"))
      x = attend(nn.relu(conv(self.num_patches, "conv2")(x)), "attn2")
    else:
      x = pool(nn.relu(conv(self.hidden, "conv2")(pool(x))))
      x = nn.relu(conv(self.num_patches, "conv3")(x))
    b, h, w, n = x.shape
    return x.reshape(b, h * w, n).transpose(0, 2, 1)
