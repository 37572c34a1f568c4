"""Pretrained ViT weights: the google-research/vision_transformer `.npz` layout or a workdir of ours, and
resizing of learned position-embedding grids for another resolution or patch size (applied whenever the
grid shapes differ).

Names in the `.npz` (flat, "/"-separated) and ours:
  embedding/{kernel,bias}                                   patch_embed/embedding/{kernel,bias}
  cls                                                       cls
  Transformer/posembed_input/pos_embedding (1, 1+N, D)      cls_pos_embedding (1, 1, D) and
                                                            patch_embed/posemb/pos_embedding (1, N, D)
  Transformer/encoderblock_I/LayerNorm_0                    encoder/blockI/norm1
  Transformer/encoderblock_I/MultiHeadDotProductAttention_1 encoder/blockI/attn  (query/key/value/out)
  Transformer/encoderblock_I/LayerNorm_2                    encoder/blockI/norm2
  Transformer/encoderblock_I/MlpBlock_3/Dense_{0,1}         encoder/blockI/mlp/Dense_{0,1}
  Transformer/encoder_norm                                  encoder/encoder_norm
  head/{kernel,bias}                                        head/{kernel,bias}
Parameters the checkpoint does not have (an adaptive front-end's localisation network, a head for a new
class count) keep their fresh initialisation.
"""
from __future__ import annotations

import math
import pathlib
import re

import flax
import jax.numpy as jnp
import numpy as np

from apvit_jax import sampler
from apvit_jax.models import vit

_BLOCK_PARTS = {"LayerNorm_0": "norm1", "MultiHeadDotProductAttention_1": "attn", "LayerNorm_2": "norm2",
                "MlpBlock_3": "mlp"}
POSEMB = ("patch_embed", "posemb", "pos_embedding")


def resize_posemb(posemb: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> np.ndarray:
  """Bilinear resampling of a learned (1, gh*gw, D) grid to (1, GH*GW, D), corners aligned: the outer
  cells stay the outer cells, and for GH - 1 = k (gh - 1) the old values are kept exactly."""
  posemb = np.asarray(posemb)
  (gh, gw), (nh, nw) = old_grid, new_grid
  if posemb.shape[:2] != (1, gh * gw):
    raise ValueError(f"resize_posemb: expected (1, {gh}*{gw}, D), got {posemb.shape}")
  if (gh, gw) == (nh, nw):
    return posemb
  ys, xs = np.linspace(-1.0, 1.0, nh), np.linspace(-1.0, 1.0, nw)
  grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(1, nh * nw, 2)
  table = jnp.asarray(posemb.reshape(1, gh, gw, -1), jnp.float32)
  out = sampler.grid_sample(table, jnp.asarray(grid, jnp.float32), padding_mode="border", align_corners=True)
  return np.asarray(out, posemb.dtype).reshape(1, nh * nw, -1)


def load_npz(path) -> dict[str, np.ndarray]:
  """A vision_transformer-style `.npz` -> {"/"-separated name: array}."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"no pretrained checkpoint at {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: np.asarray(f[k]) for k in f.files}
  except (ValueError, OSError) as e:
    raise ValueError(f"{path} is not a readable .npz checkpoint: {e}") from e


def _our_path(name: str) -> tuple[str, ...] | None:
  """vision_transformer name -> our parameter path (None for the position embedding, handled apart)."""
  parts = name.split("/")
  if parts[0] == "embedding":
    return ("patch_embed", "embedding", *parts[1:])
  if parts[0] in ("cls", "head"):
    return tuple(parts)
  if parts[0] == "Transformer":
    if parts[1] == "posembed_input":
      return None
    if parts[1] == "encoder_norm":
      return ("encoder", "encoder_norm", *parts[2:])
    m = re.fullmatch(r"encoderblock_(\d+)", parts[1])
    if m and parts[2] in _BLOCK_PARTS:
      return ("encoder", f"block{m.group(1)}", _BLOCK_PARTS[parts[2]], *parts[3:])
  return ("?", name)


def grid_shape(n: int, like: tuple[int, int] | None = None) -> tuple[int, int]:
  if like and like[0] * like[1] == n:
    return like
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f"cannot tell the grid shape of {n} position embeddings (not square)")
  return g, g


def vit_params_from_npz(flat: dict[str, np.ndarray], target: dict, target_grid: tuple[int, int]) -> dict:
  """Loads a vision_transformer `.npz` into our parameter tree `target` (fresh init of the model to train).

  The head is taken only if its shape fits (same class count); otherwise, and for any parameter the
  checkpoint lacks, the fresh value stays. Position embeddings are resized to `target_grid`. A checkpoint
  parameter with no place in the model, or of the wrong shape, is an error naming it ("pre_logits" is
  dropped with a re-initialised head, as when fine-tuning).
  """
  target = flax.core.unfreeze(target)
  scanned = "blocks" in target.get("encoder", {})  # nn.scan layers: load per layer, then restack
  if scanned:
    target = {**target, "encoder": vit.unstack_blocks(target["encoder"])}
  params = flax.traverse_util.flatten_dict(target)
  loaded, problems = set(), []
  head_fits = all(("head", k) in params and params[("head", k)].shape == flat[f"head/{k}"].shape
                  for k in ("kernel", "bias") if f"head/{k}" in flat)
  for name, value in flat.items():
    path = _our_path(name)
    if path is None:  # position embeddings
      continue
    if path[0] == "head" and not head_fits:
      continue
    if name.startswith("pre_logits/") and not head_fits:
      continue
    if path not in params:
      problems.append(f"{name} {value.shape} has no place in the model")
    elif params[path].shape != value.shape:
      problems.append(f"{name}: checkpoint {value.shape} vs model {params[path].shape}")
    else:
      params[path] = jnp.asarray(value, params[path].dtype)
      loaded.add(path)
  pe = flat.get("Transformer/posembed_input/pos_embedding")
  if pe is not None and POSEMB in params:
    d = params[POSEMB].shape[-1]
    has_cls = "cls" in flat  # a cls-token model stores the cls position first
    if pe.shape[-1] != d:
      problems.append(f"Transformer/posembed_input/pos_embedding: width {pe.shape[-1]} vs model {d}")
    else:
      if has_cls and ("cls_pos_embedding",) in params:
        params[("cls_pos_embedding",)] = jnp.asarray(pe[:, :1], params[("cls_pos_embedding",)].dtype)
        loaded.add(("cls_pos_embedding",))
      cells = pe[:, 1:] if has_cls else pe
      grid = resize_posemb(cells, grid_shape(cells.shape[1]), target_grid)
      params[POSEMB] = jnp.asarray(grid, params[POSEMB].dtype)
      loaded.add(POSEMB)
  if problems:
    raise ValueError("pretrained checkpoint does not fit the model: " + "; ".join(problems[:5])
                     + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
  if not any(p[0] == "encoder" for p in loaded):
    raise ValueError("pretrained checkpoint holds no encoder weights in the vision_transformer layout "
                     "(expected names like Transformer/encoderblock_0/...)")
  params = flax.traverse_util.unflatten_dict(params)
  if scanned:
    depth = sum(k.startswith("block") for k in params["encoder"])
    params["encoder"] = vit.stack_blocks(params["encoder"], depth)
  return params


def _unstacked(tree: dict) -> tuple[dict, bool]:
  if "blocks" in tree.get("encoder", {}):
    return {**tree, "encoder": vit.unstack_blocks(tree["encoder"])}, True
  return tree, False


def params_from_checkpoint(saved: dict, target: dict, target_grid: tuple[int, int]) -> dict:
  """Our own saved parameters -> the tree `target` of the model to train.

  Equal shapes are copied; the position grid is resized when its shape differs; a head of another class
  count stays fresh, as does anything the checkpoint lacks (e.g. an adaptive front-end added to a ViT).
  A saved parameter with no place in the model, or another mismatched shape, is an error naming it.
  Scanned and unscanned layers convert both ways.
  """
  saved, _ = _unstacked(flax.core.unfreeze(saved))
  target, scanned = _unstacked(flax.core.unfreeze(target))
  have = flax.traverse_util.flatten_dict(saved)
  params = flax.traverse_util.flatten_dict(target)
  problems = []
  for path, value in have.items():
    name = "/".join(path)
    if path not in params:
      problems.append(f"{name} {np.shape(value)} has no place in the model")
    elif params[path].shape == np.shape(value):
      params[path] = jnp.asarray(value, params[path].dtype)
    elif path == POSEMB and np.shape(value)[-1] == params[path].shape[-1]:
      grid = resize_posemb(np.asarray(value), grid_shape(np.shape(value)[1]), target_grid)
      params[path] = jnp.asarray(grid, params[path].dtype)
    elif path[0] != "head":
      problems.append(f"{name}: checkpoint {np.shape(value)} vs model {params[path].shape}")
  if problems:
    raise ValueError("checkpoint does not fit the model: " + "; ".join(problems[:5])
                     + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
  params = flax.traverse_util.unflatten_dict(params)
  if scanned:
    depth = sum(k.startswith("block") for k in params["encoder"])
    params["encoder"] = vit.stack_blocks(params["encoder"], depth)
  return params
