"""Adaptive patching: a front-end that decides where each patch is cut, in front of the one ViT.

DPS-ViT = AdaptivePatching(transform="translate", posemb="translation") + ViT;
APViT   = AdaptivePatching(transform="scale_rotate", posemb="interpolate", identity_init=True) + ViT.

The parameter names match the ViT's grid front-end (`embedding` kernel (P, P, C, D), `posemb`), so the
weights of a ViT load into an APViT unchanged, and with the identity-grid start the two compute the same
function until the localisation network learns to move patches.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from apvit_jax import sampler, separable_sampler
from apvit_jax.models.posembed import GridPosEmbed, lookup_posemb
from apvit_jax.models.stn import LocalisationNet
from apvit_jax.models.vit import ViT
from apvit_jax.patch_params import PatchTransform

# "interpolate": bilinear lookup in a learned grid (one cell per ViT tile) at the patch centre (APViT);
# "translation": Linear(2 -> pos_dim) of the centre, concatenated to a (width - pos_dim) patch
# embedding (DPS-ViT); "learn": one learned vector per patch slot; "none".
ADAPTIVE_POSEMBS = ("interpolate", "translation", "learn", "none")
# Parameters of the localisation network and its head (under "patch_embed"): they may take their own
# learning rate (config.optim.stn_lr_ratio).
LOCALISATION_PARAMS = ("stn", "loc_hidden", "loc_head", "patch_bias")
# How patches are cut: "gather" (sampler.sample_patches, every transform) or "separable" (two small matmuls
# per patch, axis-aligned transforms only: separable_sampler.py). Same patches, same gradients.
PATCH_SAMPLERS = ("gather", "separable")


class AdaptivePatching(nn.Module):
  """images (B, H, W, C) -> (tokens (B, N, D), positional code (B, N, D) or None,
  {"theta": (B, N, 2, 3) or (B, N, 3, 3), "centres": (B, N, 2)}).

  localisation net -> per-patch head -> bounded patch maps -> `sample_patches` -> each P×P×C patch
  embedded on its own by one linear map.
  """
  width: int
  patch_size: int
  num_patches: int = 0            # 0: as many as the ViT grid has tiles
  transform: str = "translate"    # see apvit_jax/patch_params.py
  bound: str = "tanh"
  translate_range: str = "inside"  # or "full": the published DPS-ViT code's unscaled t (patch_params.py)
  max_scale: float = 0.5
  max_perspective: float = 0.25
  stn: str = "dps"
  stn_hidden: int = 32
  stn_attn_width: int = 256
  stn_attn_heads: int = 4
  stn_dropout: float = 0.0
  head_hidden: int = 0            # > 0: a ReLU hidden layer in the per-patch head (published APViT)
  identity_init: bool = False     # start exactly on the regular ViT grid
  posemb: str = "interpolate"
  pos_dim: int = 32               # posemb="translation" only
  posemb_lookup: str = "cell_centres"
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  patch_sampler: str = "gather"   # or "separable" (PATCH_SAMPLERS)

  def patch_transform(self, image_shape) -> PatchTransform:
    return PatchTransform(self.transform, self.patch_size, tuple(image_shape[:2]), self.max_scale,
                          self.max_perspective, self.bound, self.translate_range)

  @nn.compact
  def __call__(self, images, *, train: bool):
    if self.posemb not in ADAPTIVE_POSEMBS:
      raise ValueError(f"unknown adaptive posemb {self.posemb!r}; choose from {ADAPTIVE_POSEMBS}")
    if self.patch_sampler not in PATCH_SAMPLERS:
      raise ValueError(f"unknown patch sampler {self.patch_sampler!r}; choose from {PATCH_SAMPLERS}")
    b, h, w, _ = images.shape
    p = self.patch_size
    pt = self.patch_transform((h, w))
    gh, gw = h // p, w // p
    n = self.num_patches or gh * gw
    if self.identity_init and n != gh * gw:
      raise ValueError(f"identity-grid init needs num_patches = {gh}x{gw} = {gh * gw}, got {n}")

    feats = LocalisationNet(n, self.stn, self.stn_hidden, self.stn_attn_width, self.stn_attn_heads,
                            self.stn_dropout, self.dtype, self.attention_impl, name="stn")(images, train=train)
    if self.head_hidden:
      feats = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype, name="loc_hidden")(feats))
    # The last layer runs in float32: bf16 raw outputs would misplace patches by whole pixels.
    zero_or_xavier = nn.initializers.zeros if self.identity_init else nn.initializers.xavier_uniform()
    raw = nn.Dense(pt.num_params, use_bias=False, kernel_init=zero_or_xavier, name="loc_head")(
        feats.astype(jnp.float32))
    bias_init = (lambda *_: jnp.asarray(pt.identity_raw())) if self.identity_init else nn.initializers.zeros
    raw = raw + self.param("patch_bias", bias_init, (n, pt.num_params))
    theta, centres = pt(raw)

    if self.patch_sampler == "separable":
      patches = separable_sampler.sample_patches_axis_aligned(images, theta, p, pt.sampling_window())
    else:
      patches = sampler.sample_patches(images, theta, p)  # (B, N, P, P, C)
    embed_width = self.width - self.pos_dim if self.posemb == "translation" else self.width
    if embed_width <= 0:
      raise ValueError(f"pos_dim={self.pos_dim} leaves no room in width {self.width}")
    tokens = nn.DenseGeneral(embed_width, axis=(-3, -2, -1), dtype=self.dtype, name="embedding")(patches)

    pos = None
    if self.posemb == "interpolate":
      table = GridPosEmbed("learn", name="posemb")(gh, gw, self.width)
      pos = lookup_posemb(table, (gh, gw), centres, self.posemb_lookup)
    elif self.posemb == "learn":
      pos = GridPosEmbed("learn", name="posemb")(1, n, self.width)
    elif self.posemb == "translation":
      code = nn.Dense(self.pos_dim, kernel_init=nn.initializers.xavier_uniform(), name="translation_embed")(
          centres)
      tokens = jnp.concatenate([tokens, code.astype(tokens.dtype)], axis=-1)
    return tokens, pos, {"theta": theta, "centres": centres}


def adaptive_vit(num_classes: int, vit_kwargs: dict, front_kwargs: dict) -> ViT:
  """The one ViT with an AdaptivePatching front-end (width and patch size shared with the encoder)."""
  front = functools.partial(AdaptivePatching, width=vit_kwargs["width"],
                            patch_size=vit_kwargs["patch_size"], dtype=vit_kwargs.get("dtype", jnp.float32),
                            attention_impl=vit_kwargs.get("attention_impl", "auto"), **front_kwargs)
  return ViT(num_classes=num_classes, front_end=front, **vit_kwargs)
