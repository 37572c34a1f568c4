"""IPS glue between the config, the train/eval steps and the host loop: patch extraction, selection
(on device for eager loading, on the host for lazy loading) and the gather of the selected patches."""
from __future__ import annotations

import jax
import numpy as np

from apvit_jax.data.augment import normalise
from apvit_jax.models import ips
from apvit_jax.training.step import fetch


def selection_key(key):
  """The patch order's key, from the step's key 0 (the same on every device and for lazy loading)."""
  return jax.random.fold_in(key, 2)


def _variables(state):
  return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


def training_inputs(config, state, data, batch, key):
  """-> ((patches (b, M, P, P, C) normalised, positions (b, M)), labels)."""
  c, aug = config.model.ips, config.augment
  if "patches" in batch:  # lazy loading: the host already selected them
    return (normalise(batch["patches"], aug.mean, aug.std), batch["positions"]), batch["labels"]
  images, labels = fetch(data, batch)
  patches = ips.extract_patches(normalise(images, aug.mean, aug.std), c.patch_size, c.patch_stride)
  positions = ips.select(c.loading, state.apply_fn, _variables(state), patches, selection_key(key),
                         memory=c.memory, chunk=c.chunk)
  return (ips.gather_patches(patches, positions), positions), labels


class HostSelection:
  """Lazy loading: selects on the host's first device with the current parameters, then replaces the
  batch's images by the selected patches, so only M patches per image are sent for the gradient step."""

  def __init__(self, config, model, device):
    c, aug = config.model.ips, config.augment
    self.config = config
    self.selector = ips.LazySelector(model.apply, memory=c.memory, chunk=c.chunk, device=device,
                                     prepare=lambda p: normalise(p, aug.mean, aug.std))

  def __call__(self, batch: dict, state_copy, key) -> dict:
    """batch with "images" (b, H, W, C) uint8 on the host -> with "patches" and "positions" instead."""
    c = self.config.model.ips
    patches = ips.extract_patches(batch.pop("images"), c.patch_size, c.patch_stride)
    positions = self.selector(_variables(state_copy), patches, selection_key(key))
    return {**batch, "patches": ips.gather_patches(patches, positions), "positions": positions}
