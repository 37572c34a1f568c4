"""The one ViT: a front-end makes tokens + positional code, a pre-LN encoder mixes them, a head classifies.

ViT (Dosovitskiy et al.) with the grid front-end; patch size 1 is the pixel transformer (PiT).
Adaptive front-ends (DPS-ViT, APViT) plug into the same `ViT` through `front_end`.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from apvit_jax.models.dropout import Dropout
from apvit_jax.models.posembed import GridPosEmbed

# name -> (width, depth, heads); MLP width is 4x.
VARIANTS = {
    "mu": (64, 4, 4),  # tiny, for smoke tests and the CPU quickstart
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "M": (512, 12, 8),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}
POOLS = ("token", "gap")


def decode_variant(variant: str) -> dict[str, int]:
  """"S/16" -> dict(width=384, depth=12, num_heads=6, patch_size=16)."""
  m = re.fullmatch(r"(\w+?)/(\d+)", variant or "")
  if not m or m.group(1) not in VARIANTS:
    raise ValueError(f"unknown ViT variant {variant!r}: expected NAME/PATCH with NAME in "
                     f"{sorted(VARIANTS)}, e.g. 'S/16' or 'Ti/1' (pixel transformer)")
  width, depth, heads = VARIANTS[m.group(1)]
  return dict(width=width, depth=depth, num_heads=heads, patch_size=int(m.group(2)))


_FALLBACKS: dict[str, str] = {}   # shape and dtype -> why cuDNN was not used as it is, for this process


def attention_fallbacks() -> list[str]:
  """Where "auto" attention did not run cuDNN on the shape as it is in this process (fell back to XLA, or
  padded the tokens for cuDNN): ["(B, T, H, D) dtype: what and why"]."""
  return [f"{where}: {why}" for where, why in _FALLBACKS.items()]


# Token counts that cuDNN's fused kernel is offered, padded, when it refuses the true count ("auto").
PAD_MULTIPLES = (8, 64)


def padded_attention(q, k, v, multiple: int, implementation: str | None):
  """`jax.nn.dot_product_attention` over T tokens (B, T, heads, head_dim), computed on T rounded up to a
  multiple of `multiple`: the padding keys are masked out (key_value_seq_lengths = T) and the padding
  queries' rows dropped, so values and gradients are those of the unpadded attention. For kernels that
  take only some lengths (cuDNN refuses 64 patches + cls in some versions)."""
  b, t = q.shape[:2]
  padded = -(-t // multiple) * multiple
  pad = lambda x: jnp.pad(x, ((0, 0), (0, padded - t), (0, 0), (0, 0)))
  y = jax.nn.dot_product_attention(pad(q), pad(k), pad(v), key_value_seq_lengths=jnp.full((b,), t, jnp.int32),
                                   implementation=implementation)
  return y[:, :t]


def dot_product_attention(q, k, v, implementation: str | None):
  """`jax.nn.dot_product_attention` on (B, T, heads, head_dim).

  implementation "auto": cuDNN's fused kernel on GPU in half precision where it takes the shapes
  (its checks run at trace time and raise NotImplementedError, e.g. for odd sequence lengths such as
  64 patches + cls in some cuDNN versions); where it refuses T tokens, cuDNN on T padded to a multiple of
  8, then 64 (`padded_attention`, the same result); else XLA. What "auto" changed is logged once per
  shape and listed by `attention_fallbacks()`. "cudnn" or "xla" force one; "cudnn" then fails loudly on
  shapes it does not take.
  """
  if implementation == "auto":
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
      try:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
      except NotImplementedError as e:
        where, why = f"{tuple(q.shape)} {q.dtype}", (str(e).splitlines()[0] if str(e) else type(e).__name__)
      for multiple in PAD_MULTIPLES:
        if q.shape[1] % multiple:
          try:
            y = padded_attention(q, k, v, multiple, "cudnn")
          except NotImplementedError:
            continue
          _note(where, f"cuDNN on {-(-q.shape[1] // multiple) * multiple} tokens, the padding masked ({why})")
          return y
      _note(where, why, "using XLA's")
    implementation = "xla"
  return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def _note(where: str, what: str, action: str = "") -> None:
  if where not in _FALLBACKS:
    _FALLBACKS[where] = what
    logging.getLogger(__name__).warning("attention %s: cuDNN does not take it as it is: %s%s", where, what,
                                        f"; {action}" if action else "")


class MultiHeadAttention(nn.Module):
  """Self-attention through `jax.nn.dot_product_attention`. x (B, T, D) -> (B, T, D)."""
  num_heads: int
  dtype: Any = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"width {d} is not divisible by num_heads {self.num_heads}")
    dense = lambda name: nn.DenseGeneral((self.num_heads, d // self.num_heads), dtype=self.dtype,
                                         kernel_init=nn.initializers.xavier_uniform(), name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # (B, T, heads, head_dim)
    y = dot_product_attention(q, k, v, self.implementation)
    return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype,
                           kernel_init=nn.initializers.xavier_uniform(), name="out")(y)


class MlpBlock(nn.Module):
  """Dense(4D) -> GELU -> dropout -> Dense(D) -> dropout."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(1e-6))
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, **init)(x)
    x = Dropout(self.dropout)(nn.gelu(x), deterministic=not train)
    x = nn.Dense(d, dtype=self.dtype, **init)(x)
    return Dropout(self.dropout)(x, deterministic=not train)


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example, rescaling the kept ones.

  `rate` may be given per call (a traced value when layers are scanned)."""
  rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool, rate=None):
    rate = self.rate if rate is None else rate
    if not train or (isinstance(rate, float) and rate == 0.0):
      return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class EncoderBlock(nn.Module):
  """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x))."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool, drop_rate=None):
    """x (B, T, D) -> (B, T, D); `drop_rate` overrides `drop_path` (scanned layers pass theirs)."""
    y = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
    y = MultiHeadAttention(self.num_heads, self.dtype, self.attention_impl, name="attn")(y)
    y = Dropout(self.dropout)(y, deterministic=not train)
    x = x + DropPath(self.drop_path)(y, train=train, rate=drop_rate)
    y = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, train=train)
    return x + DropPath(self.drop_path)(y, train=train, rate=drop_rate)


class _ScanStep(nn.Module):
  """One scanned layer: (carry x, this layer's drop rate) -> (x, None)."""
  block: Callable[..., Any]
  train: bool

  @nn.compact
  def __call__(self, x, drop_rate):
    return self.block(name="block")(x, self.train, drop_rate), None


class Encoder(nn.Module):
  """`depth` pre-LN blocks and a final LayerNorm. (B, T, D) -> (B, T, D).

  Stochastic-depth rates grow linearly from 0 to `drop_path` over the blocks. `remat` recomputes each
  block's activations in the backward pass (memory for compute); `scan` runs the blocks as one
  `nn.scan` (compile time independent of depth), with parameters stacked on a leading depth axis
  under "blocks" (see `stack_blocks`) instead of "block0", "block1", ...
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: bool = False
  scan: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    rates = [self.drop_path * i / max(self.depth - 1, 1) for i in range(self.depth)]
    block = nn.remat(EncoderBlock, static_argnums=(2,), prevent_cse=not self.scan) if self.remat else EncoderBlock
    make = functools.partial(block, self.num_heads, self.mlp_dim, self.dropout, 0.0, self.dtype,
                             self.attention_impl)
    if self.scan:
      layers = nn.scan(_ScanStep, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                       length=self.depth)
      x, _ = layers(make, train, name="blocks")(x, jnp.asarray(rates, jnp.float32))
    else:
      for i, rate in enumerate(rates):
        x = make(name=f"block{i}")(x, train, rate)
    return nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)


def stack_blocks(encoder_params: dict, depth: int) -> dict:
  """{"block0": t0, ..., "encoder_norm": n} -> {"blocks": {"block": stack(t_i)}, "encoder_norm": n}."""
  blocks = [encoder_params[f"block{i}"] for i in range(depth)]
  rest = {k: v for k, v in encoder_params.items() if not k.startswith("block")}
  return {"blocks": {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}, **rest}


class GridPatchEmbed(nn.Module):
  """The ViT front-end: non-overlapping P×P patches by a strided conv, plus a grid position code.

  images (B, H, W, C) -> (tokens (B, N, D), positional code (1, N, D), {}).
  """
  width: int
  patch_size: int
  posemb: str = "learn"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool):
    del train
    _, h, w, _ = images.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"image size {h}x{w} is not divisible by patch size {p}")
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="embedding")(images)
    gh, gw = h // p, w // p
    pos = GridPosEmbed(self.posemb, name="posemb")(gh, gw, self.width)
    return x.reshape(x.shape[0], gh * gw, self.width), pos, {}


class ViT(nn.Module):
  """Vision Transformer. images (B, H, W, C) -> (logits (B, classes) float32, intermediates dict).

  `front_end` (optional) is a module factory (e.g. a `functools.partial` of a module class), called with
  name="patch_embed", whose module maps images to `(tokens (B, N, D), positional code broadcastable to
  tokens or None, extras dict)`; the extras (e.g. patch maps) are returned with the intermediates.
  The default is `GridPatchEmbed`. With pool="token" a cls token with its own learned position
  embedding is prepended (the original ViT layout); pool="gap" averages the tokens instead.
  """
  num_classes: int
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  patch_size: int = 16
  mlp_ratio: int = 4
  posemb: str = "learn"
  pool: str = "token"
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"
  remat: bool = False
  scan: bool = False
  front_end: Callable[..., Any] | None = None

  @nn.compact
  def __call__(self, images, *, train: bool):
    if self.pool not in POOLS:
      raise ValueError(f"unknown pool {self.pool!r}; choose from {POOLS}")
    make_front = self.front_end or functools.partial(GridPatchEmbed, self.width, self.patch_size,
                                                     self.posemb, self.dtype)
    tokens, pos, extras = make_front(name="patch_embed")(images.astype(self.dtype), train=train)
    x = tokens if pos is None else tokens + pos.astype(tokens.dtype)
    b, _, d = x.shape
    if self.pool == "token":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
      cls_pos = self.param("cls_pos_embedding", nn.initializers.normal(0.02), (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to((cls + cls_pos).astype(x.dtype), (b, 1, d)), x], axis=1)
    x = Dropout(self.dropout)(x, deterministic=not train)
    x = Encoder(self.depth, self.num_heads, self.mlp_ratio * d, self.dropout, self.drop_path,
                self.dtype, self.attention_impl, self.remat, self.scan, name="encoder")(x, train=train)
    pre_logits = x[:, 0] if self.pool == "token" else x.mean(axis=1)
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                      name="head")(pre_logits)
    return logits.astype(jnp.float32), {"tokens": x, "pre_logits": pre_logits, **extras}


def unstack_blocks(encoder_params: dict) -> dict:
  """The inverse of `stack_blocks`."""
  stacked = encoder_params["blocks"]["block"]
  depth = jax.tree.leaves(stacked)[0].shape[0]
  rest = {k: v for k, v in encoder_params.items() if k != "blocks"}
  return {**{f"block{i}": jax.tree.map(lambda x: x[i], stacked) for i in range(depth)}, **rest}
