"""The PyTorch peers a user would pick instead, timed in the same process as ours.

- Sampler: `torch.nn.functional.affine_grid` + `grid_sample` (bilinear, zeros, align_corners=False), all
  N patches of an image as one (N·P, P) grid, NCHW: the published DPS-ViT/APViT code's way.
- ViT train step: timm's `VisionTransformer` where timm is installed, else `PlainViT` below (the same shape:
  conv patch embedding, cls token, learned positions, pre-LN blocks with MLP ×4, final LN, linear head).
  The step includes the same augmentation ours runs (random crop with padding + flip as one affine
  `grid_sample` per batch, on the device), cross-entropy, backward and AdamW. On GPU: `torch.compile`,
  bf16 autocast and fused AdamW, as a tuned timm user would run it; on CPU: float32, eager.

torch and timm are not project dependencies: they are imported lazily, and `torch_or_reason()` says why a
peer is missing, so the benchmark prints that instead of failing.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np


def torch_or_reason():
  """(torch module, None) or (None, why not)."""
  try:
    import torch
  except ImportError as e:  # not a dependency: the benchmark names the missing peer
    return None, f"torch not importable ({e}); pip install torch to compare"
  torch.set_num_threads(os.cpu_count() or 1)
  return torch, None


def _device(torch):
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _median_ms(torch, fn, *, warmup: int, repeats: int) -> float:
  sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
  for _ in range(warmup):
    fn()
  sync()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - t0)
  return statistics.median(times) * 1e3


def sampler_ms(images, theta, patch: int, *, backward: bool, warmup: int, repeats: int,
               image_grad: bool = True) -> float:
  """Median ms of torch affine_grid + grid_sample on images (B, H, W, C) and maps theta (B, N, 2, 3)
  (NumPy, float32), forward only or forward + backward to theta and (image_grad) the images."""
  torch, _ = torch_or_reason()
  dev = _device(torch)
  b, n = theta.shape[:2]
  c = images.shape[-1]
  x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().to(dev)
  t = torch.from_numpy(np.array(theta)).reshape(b * n, 2, 3).to(dev)
  cotangent = torch.randn(b, c, n * patch, patch, device=dev)
  f = torch.nn.functional

  def run():
    xx = x.detach().requires_grad_(backward and image_grad)
    tt = t.detach().requires_grad_(backward)
    grid = f.affine_grid(tt, (b * n, c, patch, patch), align_corners=False).reshape(b, n * patch, patch, 2)
    out = f.grid_sample(xx, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if backward:
      out.backward(cotangent)
    return out

  if backward:
    return _median_ms(torch, run, warmup=warmup, repeats=repeats)
  with torch.no_grad():
    return _median_ms(torch, run, warmup=warmup, repeats=repeats)


def plain_vit(torch, *, image: int, patch: int, width: int, depth: int, heads: int, classes: int,
              dropout: float):
  """A pre-LN ViT of the given shape from torch.nn alone (used where timm is absent)."""
  nn = torch.nn

  class PlainViT(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Conv2d(3, width, patch, patch)
      self.cls = nn.Parameter(torch.zeros(1, 1, width))
      self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.02)
      layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=dropout, activation="gelu",
                                         batch_first=True, norm_first=True)
      self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
      self.norm = nn.LayerNorm(width)
      self.head = nn.Linear(width, classes)

    def forward(self, x):
      tokens = self.embed(x).flatten(2).transpose(1, 2)
      tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
      return self.head(self.norm(self.encoder(tokens))[:, 0])

  return PlainViT()


def vit(torch, **shape):
  """(model, implementation name): timm's VisionTransformer where installed, else `plain_vit`."""
  try:
    from timm.models.vision_transformer import VisionTransformer
  except ImportError:
    return plain_vit(torch, **shape), "torch.nn pre-LN ViT (timm not installed)"
  model = VisionTransformer(img_size=shape["image"], patch_size=shape["patch"], embed_dim=shape["width"],
                            depth=shape["depth"], num_heads=shape["heads"], num_classes=shape["classes"],
                            drop_rate=shape["dropout"], proj_drop_rate=shape["dropout"])
  return model, "timm VisionTransformer"


def vit_step_ms(*, image: int, patch: int, width: int, depth: int, heads: int, classes: int, batch: int,
                dropout: float = 0.0, crop_padding: int = 4, warmup: int, repeats: int) -> tuple[float, str]:
  """Median ms of one ViT train step (augmentation, forward, cross-entropy, backward, AdamW) on a batch
  already on the device; and a description of what ran (implementation, compile, precision)."""
  torch, _ = torch_or_reason()
  dev = _device(torch)
  gpu = dev.type == "cuda"
  model, impl = vit(torch, image=image, patch=patch, width=width, depth=depth, heads=heads, classes=classes,
                    dropout=dropout)
  model = model.to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, **({"fused": True} if gpu else {}))
  f = torch.nn.functional
  x = torch.rand(batch, 3, image, image, device=dev)
  y = torch.randint(0, classes, (batch,), device=dev)
  shift = 2.0 * crop_padding / image

  def augment(x):
    flip = torch.where(torch.rand(batch, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = flip, 1.0
    theta[:, :, 2] = (torch.randint(-crop_padding, crop_padding + 1, (batch, 2), device=dev) * (shift / crop_padding)
                      if crop_padding else 0.0)
    return f.grid_sample(x, f.affine_grid(theta, x.shape, align_corners=False), align_corners=False)

  def loss_fn(x, y):
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
      return f.cross_entropy(model(augment(x)), y)

  loss_fn = torch.compile(loss_fn) if gpu else loss_fn

  def step():
    opt.zero_grad(set_to_none=True)
    loss_fn(x, y).backward()
    opt.step()

  ms = _median_ms(torch, step, warmup=warmup + (2 if gpu else 0), repeats=repeats)
  how = f"{impl}, " + ("torch.compile + bf16 autocast + fused AdamW" if gpu else
                       f"eager float32, {torch.get_num_threads()} threads")
  return ms, how
