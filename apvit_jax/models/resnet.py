"""Patch encoders for IPS: ResNet-18/50 trunks (BatchNorm, optionally truncated after 2 or 3 stages,
global average pool) and a projector for pre-extracted features. NHWC."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from apvit_jax.models import pooling

# name -> (block, blocks per stage); stage widths are 64, 128, 256, 512 (x4 outputs for bottlenecks).
RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _norm(train: bool, dtype, name=None, **parent):
  """BatchNorm as torchvision's (eps 1e-5, momentum 0.1 = flax 0.9), every scale starting at one
  (torchvision's default zero_init_residual=False, which the IPS authors' code keeps)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name,
                      **parent)


def _stem(trunk: nn.Module, x, train: bool):
  """7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max-pool: (B, H, W, C) -> (B, H/4, W/4, trunk.width). Its
  layers are the trunk's own ("stem", "stem_bn"), so the parameters are named alike with and without remat."""
  x = nn.Conv(trunk.width, (7, 7), (2, 2), padding=3, use_bias=False, dtype=trunk.dtype, name="stem",
              parent=trunk)(x)
  x = nn.relu(_norm(train, trunk.dtype, "stem_bn", parent=trunk)(x))
  return pooling.max_pool(x, 3, 2, 1)   # nn.max_pool's values; its gradient without index arrays


class ResidualBlock(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block; (B, H, W, C) -> (B, H/s, W/s, F)."""
  width: int
  stride: int
  kind: str = "basic"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=k // 2 if k > 1 else 0,
                                         use_bias=False, dtype=self.dtype, name=name)
    out_width = self.width * (4 if self.kind == "bottleneck" else 1)
    if self.kind == "basic":
      y = nn.relu(_norm(train, self.dtype, "bn1")(conv(self.width, 3, self.stride, "conv1")(x)))
      y = _norm(train, self.dtype, "bn2")(conv(self.width, 3, 1, "conv2")(y))
    else:
      y = nn.relu(_norm(train, self.dtype, "bn1")(conv(self.width, 1, 1, "conv1")(x)))
      y = nn.relu(_norm(train, self.dtype, "bn2")(conv(self.width, 3, self.stride, "conv2")(y)))
      y = _norm(train, self.dtype, "bn3")(conv(out_width, 1, 1, "conv3")(y))
    if x.shape[-1] != out_width or self.stride != 1:
      x = _norm(train, self.dtype, "proj_bn")(conv(out_width, 1, self.stride, "proj")(x))
    return nn.relu(x + y)


class ResNetTrunk(nn.Module):
  """ResNet stem + the first `num_stages` stages + global average pool: (B, H, W, C) -> (B, F) float32.

  Stage s has width·2^s channels (width 64 as published); F = width·2^(num_stages-1) for resnet18 (128
  after 2 stages) and 4x that for resnet50. A narrower width (e.g. 16; the FLOPs after the stem scale with
  width²) is for CPU-sized runs (configs/ips_quickstart.py). `remat` recomputes
  the stem's and each residual block's activations in the backward pass, keeping only their inputs: the
  same values and gradients for less memory (the Megapixel MNIST train step at batch 16, M = 100: 2.32 ->
  1.19 GiB in XLA's estimate on a CPU, ~6 % more time there; bench/RESULTS.md)."""
  name_: str = "resnet18"
  num_stages: int = 4
  dtype: Any = jnp.float32
  remat: bool = False
  width: int = 64

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.name_ not in RESNETS:
      raise ValueError(f"unknown ResNet {self.name_!r}; choose from {tuple(RESNETS)}")
    if not 1 <= self.num_stages <= 4:
      raise ValueError(f"num_stages={self.num_stages} must be in 1..4")
    kind, blocks = RESNETS[self.name_]
    # static_argnums=(2,): `train` (after the module and x) stays a Python bool under remat.
    stem = nn.remat(_stem, static_argnums=(2,)) if self.remat else _stem
    block = nn.remat(ResidualBlock, static_argnums=(2,)) if self.remat else ResidualBlock
    x = stem(self, x, train)
    for stage in range(self.num_stages):
      for b in range(blocks[stage]):
        x = block(self.width * 2 ** stage, 2 if b == 0 and stage > 0 else 1, kind, self.dtype,
                  name=f"stage{stage}_block{b}")(x, train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class FeatureProjector(nn.Module):
  """Pre-extracted features: LayerNorm (no affine, eps 1e-5 as PyTorch's) -> Linear -> BatchNorm -> ReLU;
  (B, F) -> (B, D)."""
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    x = nn.Dense(self.dim, dtype=self.dtype)(x)
    return nn.relu(_norm(train, self.dtype)(x)).astype(jnp.float32)


def trunk_width(name: str, num_stages: int, width: int = 64) -> int:
  """The trunk's output features F for a first-stage width."""
  kind, _ = RESNETS[name]
  return width * 2 ** (num_stages - 1) * (4 if kind == "bottleneck" else 1)


