"""Iterative Patch Selection (IPS, Bergner et al., ICLR 2023) for images too large to encode whole.

A scan without gradients keeps a memory of the M most attended patch embeddings: the memory starts with
the first M patches (after one shuffle per batch), then each chunk of I patches is appended and the top M
by attention score are kept. Only the M selected raw patches are re-encoded with gradients, aggregated by a
cross-attention transformer with one learned query per task, and classified by one head per task.

Shapes: images (B, H, W, C); patches (B, N, P, P, C); positions (B, M) int32 indices into the N patches
in row-major order of the patch grid.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apvit_jax.models.dropout import Dropout
from apvit_jax.models.resnet import FeatureProjector, RESNETS, ResNetTrunk, trunk_width

ENCODERS = (*RESNETS, "features")
LOADING = ("eager", "eager_sequential", "lazy")


def patch_grid(image_hw, patch: int, stride: int) -> tuple[int, int]:
  """Patches per column and row; raises when patch/stride do not tile the image."""
  h, w = image_hw
  if patch < 1 or stride < 1:
    raise ValueError(f"IPS patch_size={patch} and patch_stride={stride} must be >= 1")
  if patch > min(h, w) or (h - patch) % stride or (w - patch) % stride:
    raise ValueError(f"IPS patch_size={patch} with patch_stride={stride} does not tile the {h}x{w} image: "
                     f"need (size - patch) divisible by stride in both directions")
  return (h - patch) // stride + 1, (w - patch) // stride + 1


def extract_patches(images, patch: int, stride: int):
  """(B, H, W, C) -> (B, N, P, P, C), row-major over the grid; NumPy or JAX arrays (one gather)."""
  gh, gw = patch_grid(images.shape[1:3], patch, stride)
  xp = jnp if isinstance(images, jax.Array) else np
  b, c = images.shape[0], images.shape[-1]
  if stride == patch:
    x = images[:, :gh * patch, :gw * patch].reshape(b, gh, patch, gw, patch, c)
    return xp.swapaxes(x, 2, 3).reshape(b, gh * gw, patch, patch, c)
  rows = (np.arange(gh)[:, None] * stride + np.arange(patch)).reshape(-1)
  cols = (np.arange(gw)[:, None] * stride + np.arange(patch)).reshape(-1)
  x = images[:, rows][:, :, cols].reshape(b, gh, patch, gw, patch, c)
  return xp.swapaxes(x, 2, 3).reshape(b, gh * gw, patch, patch, c)


def sinusoidal_encoding(positions, dim: int):
  """1-D sin/cos code of integer positions (...,) -> (..., dim) float32 (Vaswani et al.)."""
  half = dim // 2
  freq = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) * 2 / dim)
  angle = positions[..., None].astype(jnp.float32) * freq
  code = jnp.stack([jnp.sin(angle), jnp.cos(angle)], -1).reshape(*positions.shape, 2 * half)
  return jnp.pad(code, [(0, 0)] * positions.ndim + [(0, dim - 2 * half)])


def symmetric_uniform(bound: float):
  """Initializer: uniform on [-bound, bound) (the IPS authors' query tokens: bound = sqrt(1 / d_k))."""
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class CrossAttentionAggregator(nn.Module):
  """`num_tokens` learned queries attend to the patch embeddings (no biases in Q/K/V/O), post-norm
  residuals (eps 1e-6), then a ReLU MLP with post-norm: (B, N, D) -> (B, num_tokens, D)."""
  dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_tokens: int = 1
  attn_dropout: float = 0.0
  dropout: float = 0.0

  def setup(self):
    self.queries = self.param("queries", symmetric_uniform(np.sqrt(1.0 / self.head_dim)),
                              (1, self.num_tokens, self.dim))
    proj = lambda name: nn.DenseGeneral((self.num_heads, self.head_dim), use_bias=False, name=name)
    self.q, self.k, self.v = proj("query"), proj("key"), proj("value")
    self.out = nn.DenseGeneral(self.dim, axis=(-2, -1), use_bias=False, name="out")
    self.norm1 = nn.LayerNorm(epsilon=1e-6)
    self.mlp1, self.mlp2 = nn.Dense(self.mlp_dim), nn.Dense(self.dim)
    self.norm2 = nn.LayerNorm(epsilon=1e-6)
    self.drop_attn, self.drop = Dropout(self.attn_dropout), Dropout(self.dropout)

  def attention_weights(self, x):
    """(B, N, D) -> softmax weights (B, heads, tokens, N). Written out (not jax.nn.dot_product_attention)
    because IPS needs the weights themselves, for scores and for attention dropout; T and N are small."""
    q = self.q(self.queries)                                    # (1, T, H, d)
    k = self.k(x)                                               # (B, N, H, d)
    logits = jnp.einsum("qthd,bnhd->bhtn", q, k) / np.sqrt(self.head_dim)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  def scores(self, x):
    """(B, N, D) -> (B, N): attention weights averaged over heads and query tokens."""
    return self.attention_weights(x).mean(axis=(1, 2))

  def __call__(self, x, *, train: bool):
    weights = self.drop_attn(self.attention_weights(x), deterministic=not train)
    attended = jnp.einsum("bhtn,bnhd->bthd", weights, self.v(x))
    q = self.norm1(self.drop(self.out(attended), deterministic=not train) + self.queries)
    y = self.mlp2(nn.relu(self.mlp1(q)))
    return self.norm2(self.drop(y, deterministic=not train) + q)


class IPSNet(nn.Module):
  """Patch encoder + cross-attention aggregator + one linear head per task.

  tasks: ((name, num_classes), ...); token t feeds head t (one token shared when num_tokens == 1).
  remat: the ResNet trunk recomputes its activations in the backward pass (ResNetTrunk).
  The selection methods `embed` and `scores` are called by `select_*` below in inference mode.
  """
  tasks: Sequence[tuple[str, int]]
  encoder: str = "resnet18"
  num_stages: int = 2
  width: int = 64              # the ResNet's first-stage width
  dim: int = 128
  num_heads: int = 8
  head_dim: int = 16
  mlp_dim: int = 512
  num_tokens: int = 0          # 0: one per task
  use_pos: bool = True
  attn_dropout: float = 0.1
  dropout: float = 0.1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    if self.encoder == "features":
      self.trunk = FeatureProjector(self.dim, self.dtype)
      self.project = None
    else:
      self.trunk = ResNetTrunk(self.encoder, self.num_stages, self.dtype, self.remat, self.width)
      self.project = (nn.Dense(self.dim) if trunk_width(self.encoder, self.num_stages, self.width) != self.dim
                      else None)
    tokens = self.num_tokens or len(self.tasks)
    if tokens not in (1, len(self.tasks)):
      raise ValueError(f"IPS num_tokens={tokens} must be 1 or the number of tasks ({len(self.tasks)})")
    self.aggregator = CrossAttentionAggregator(self.dim, self.num_heads, self.head_dim, self.mlp_dim, tokens,
                                               self.attn_dropout, self.dropout)
    self.heads = [nn.Dense(classes, name=f"head_{name}") for name, classes in self.tasks]

  def embed(self, patches, *, train: bool):
    """(B, n, P, P, C) -> (B, n, D) float32."""
    b, n = patches.shape[:2]
    z = self.trunk(patches.reshape(b * n, *patches.shape[2:]).astype(self.dtype), train=train)
    if self.project is not None:
      z = self.project(z)
    return z.reshape(b, n, -1).astype(jnp.float32)

  def _with_position(self, emb, positions):
    return emb + sinusoidal_encoding(positions, self.dim) if self.use_pos else emb

  def scores(self, emb, positions):
    """(B, n, D), (B, n) -> (B, n) attention scores of the patches."""
    return self.aggregator.scores(self._with_position(emb, positions))

  def __call__(self, patches, positions, *, train: bool):
    """Selected patches (B, M, P, P, C) and their positions (B, M) -> ({task: logits (B, classes)},
    {"scores": (B, M)})."""
    x = self._with_position(self.embed(patches, train=train), positions)
    tokens = self.aggregator(x, train=train)
    logits = {name: head(tokens[:, t if tokens.shape[1] > 1 else 0])
              for t, ((name, _), head) in enumerate(zip(self.tasks, self.heads))}
    return logits, {"scores": self.aggregator.scores(x)}


# --- iterative selection -----------------------------------------------------------------------------

def check_memory(num_patches: int, memory: int, chunk: int) -> None:
  if memory < 1 or chunk < 1:
    raise ValueError(f"IPS memory size M={memory} and chunk size I={chunk} must both be >= 1")
  del num_patches  # M >= N is allowed: selection is skipped and every patch is used


def shuffle_order(key, num_patches: int):
  """One random order of the N patches for the whole batch (breaks ties between equal scores)."""
  return jax.random.permutation(key, num_patches).astype(jnp.int32)


def _chunks(order, memory: int, chunk: int):
  """order (N,) -> initial memory positions (M,), full chunks (K, I), remainder (R,)."""
  rest = order[memory:]
  full = (rest.shape[0] // chunk) * chunk
  return order[:memory], rest[:full].reshape(-1, chunk), rest[full:]


def _keep_top(score_fn, memory_state, emb, pos, memory: int):
  """Appends a chunk (emb (B, I, D), pos (B, I)) to the memory (None: empty) and keeps the top-M by
  score; ties go to the earlier entry."""
  if memory_state is not None:
    emb = jnp.concatenate([memory_state[0], emb], axis=1)
    pos = jnp.concatenate([memory_state[1], pos], axis=1)
  _, top = jax.lax.top_k(score_fn(emb, pos), memory)
  return jnp.take_along_axis(emb, top[..., None], axis=1), jnp.take_along_axis(pos, top, axis=1)


def select_eager(apply_fn: Callable, variables, patches, key, *, memory: int, chunk: int):
  """Iterative top-M selection with every patch on device: patches (B, N, ...) -> positions (B, M').

  M' = min(M, N). No gradient flows (variables and patches are stop_gradient-ed); BatchNorm uses its
  running statistics and dropout is off. A lax.scan over the chunks: compile time does not grow with N.
  """
  b, n = patches.shape[:2]
  check_memory(n, memory, chunk)
  if memory >= n:
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
  variables, patches = jax.lax.stop_gradient((variables, patches))
  step = _selection_step(apply_fn, variables, patches, memory)
  first, chunks, remainder = _chunks(shuffle_order(key, n), memory, chunk)
  # The memory starts empty and takes the first M patches as a chunk: its arrays then have the same
  # (data-dependent) type as the scan's carry, under jit, pmap and shard_map alike.
  mem, _ = step(None, first)
  mem, _ = jax.lax.scan(step, mem, chunks)
  if remainder.shape[0]:
    mem, _ = step(mem, remainder)
  return mem[1]


def _selection_step(apply_fn: Callable, variables, patches, memory: int):
  """select_eager's scan body: (memory (embeddings (B, M, D), positions (B, M)) or None, chunk positions
  (I,)) -> (the new memory, None); the chunk's patches embedded in inference mode."""
  b = patches.shape[0]
  embed = lambda p: apply_fn(variables, p, train=False, method="embed")
  score = lambda e, pos: apply_fn(variables, e, pos, method="scores")

  def step(carry, pos):
    emb = embed(jnp.take(patches, pos, axis=1))
    return _keep_top(score, carry, emb, jnp.broadcast_to(pos, (b, pos.shape[0])), memory), None
  return step


def compiled_selection_body(apply_fn: Callable, variables, patches_shape, *, memory: int, chunk: int):
  """-> (iterations of select_eager's scan for patches of patches_shape (B, N, P, P, C), its body
  compiled alone), or (0, None) where nothing is scanned; nothing computed on data. A compiled step's
  cost analysis counts a loop body once, so it leaves out (iterations - 1) x this body's FLOPs."""
  n = patches_shape[1]
  if memory >= n or (n - memory) // chunk == 0:
    return 0, None
  patches = jax.ShapeDtypeStruct(tuple(patches_shape), jnp.float32)
  positions = lambda k: jax.ShapeDtypeStruct((k,), jnp.int32)
  carry = jax.eval_shape(lambda v, p, pos: _selection_step(apply_fn, v, p, memory)(None, pos)[0],
                         variables, patches, positions(memory))
  body = lambda v, p, c, pos: _selection_step(apply_fn, v, p, memory)(c, pos)[0]
  return (n - memory) // chunk, jax.jit(body).lower(variables, patches, carry, positions(chunk)).compile()


def select_eager_sequential(apply_fn: Callable, variables, patches, key, *, memory: int, chunk: int):
  """As select_eager, one image at a time (lax.map): the scan's activations are those of one image."""
  one = lambda p: select_eager(apply_fn, variables, p[None], key, memory=memory, chunk=chunk)[0]
  return jax.lax.map(one, patches)


class LazySelector:
  """Selection with the patches in host memory: each chunk of I patches is sent to the device when it is
  scored, so device memory does not grow with N. The same order and arithmetic as select_eager.

  `prepare` maps raw host patches (b, n, P, P, C) to model inputs on device (e.g. normalisation)."""

  def __init__(self, apply_fn: Callable, *, memory: int, chunk: int, prepare: Callable = lambda x: x,
               device=None):
    self.memory, self.chunk, self.device = memory, chunk, device
    embed = lambda v, p: apply_fn(v, prepare(p), train=False, method="embed")
    score = lambda v: lambda e, pos: apply_fn(v, e, pos, method="scores")
    self._first = jax.jit(lambda v, p, ppos: _keep_top(score(v), None, embed(v, p), ppos, memory))
    self._update = jax.jit(lambda v, mem, p, ppos: _keep_top(score(v), mem, embed(v, p), ppos, memory))

  def __call__(self, variables, patches: np.ndarray, key) -> np.ndarray:
    """patches (B, N, P, P, C) host array -> positions (B, M') host int32."""
    b, n = patches.shape[:2]
    check_memory(n, self.memory, self.chunk)
    if self.memory >= n:
      return np.broadcast_to(np.arange(n, dtype=np.int32), (b, n)).copy()
    put = lambda x: jax.device_put(x, self.device)
    first, chunks, remainder = (np.asarray(a) for a in _chunks(shuffle_order(key, n), self.memory, self.chunk))
    pos = lambda p: np.broadcast_to(p, (b, p.shape[0])).astype(np.int32)
    mem = self._first(variables, put(patches[:, first]), put(pos(first)))
    for p in [*chunks, *([remainder] if remainder.size else [])]:
      mem = self._update(variables, mem, put(patches[:, p]), put(pos(p)))
    mem_pos = mem[1]
    return np.asarray(mem_pos)


def select(loading: str, apply_fn: Callable, variables, patches, key, *, memory: int, chunk: int):
  """On-device selection for loading="eager" or "eager_sequential" (lazy runs on the host)."""
  if loading == "eager":
    return select_eager(apply_fn, variables, patches, key, memory=memory, chunk=chunk)
  if loading == "eager_sequential":
    return select_eager_sequential(apply_fn, variables, patches, key, memory=memory, chunk=chunk)
  raise ValueError(f"unknown IPS loading={loading!r} for on-device selection; choose from {LOADING[:2]}")


def gather_patches(patches, positions):
  """(B, N, P, P, C), (B, M) -> (B, M, P, P, C); NumPy or JAX."""
  xp = jnp if isinstance(patches, jax.Array) else np
  return xp.take_along_axis(patches, positions[:, :, None, None, None], axis=1)
