"""IPS (iterative patch selection): a no-gradient scan keeps the top-M of N patches by cross-attention
score; only those are re-encoded with gradients. Inputs are (patches (b, M, P, P, C), positions (b, M)),
selected on device (eager, eager_sequential) or on the host (lazy: only M patches per image are sent).
One head per task of the dataset (model.ips.tasks picks a subset)."""
from __future__ import annotations

import jax
import numpy as np

from apvit_jax.data.augment import normalise
from apvit_jax.models.families.base import Family, fetch
from apvit_jax.models import ips
from apvit_jax.models.options import choice, jnp_dtype


def selection_key(inputs_key):
  """The patch order's key, from the step's inputs key: the one source for training, evaluation, lazy
  (host) selection and figures."""
  return jax.random.fold_in(inputs_key, 2)


class IPSFamily(Family):
  name = "ips"

  def check(self, image_shape) -> None:
    c = self.model_cfg.ips
    jnp_dtype(self.model_cfg)
    choice(c.encoder, ips.ENCODERS, "model.ips.encoder")
    choice(c.loading, ips.LOADING, "model.ips.loading")
    gh, gw = ips.patch_grid(image_shape[:2], c.patch_size, c.patch_stride)
    n = gh * gw
    ips.check_memory(n, c.memory, c.chunk)
    if c.memory > n:
      raise ValueError(f"model.ips.memory M={c.memory} is larger than the number of patches N={n} "
                       f"({gh}x{gw} of {c.patch_size}px, stride {c.patch_stride}); use M <= N (M = N uses all)")
    if c.encoder != "features" and not 1 <= c.num_stages <= 4:
      raise ValueError(f"model.ips.num_stages={c.num_stages} must be in 1..4")
    if c.dim % 2 and c.use_pos:
      raise ValueError(f"model.ips.dim={c.dim} must be even for the sinusoidal position code")

  def check_replicas(self, num_seeds: int) -> None:
    if self.model_cfg.ips.loading == "lazy":
      raise ValueError(f"config.num_seeds={num_seeds} trains the replicas in one compiled step, but "
                       f"model.ips.loading='lazy' selects each replica's patches on the host outside it: use "
                       f"loading 'eager' or 'eager_sequential', or one seed per run")

  def tasks(self, task_spec: dict, dataset_name: str) -> tuple:
    wanted = [t.strip() for t in self.model_cfg.ips.tasks.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in task_spec]
    if unknown:
      raise ValueError(f"model.ips.tasks names {unknown}, which dataset {dataset_name!r} has no labels (and "
                       f"the model no heads) for; its tasks are {list(task_spec)}")
    return tuple((name, *task_spec[name]) for name in (wanted or task_spec))

  def build(self, num_classes: int, tasks=None):
    c = self.model_cfg.ips
    tasks = tasks or (("label", num_classes, "softmax"),)
    return ips.IPSNet(tasks=tuple((name, classes) for name, classes, _ in tasks), encoder=c.encoder,
                      num_stages=c.num_stages, width=c.width, dim=c.dim, num_heads=c.num_heads, head_dim=c.head_dim,
                      mlp_dim=c.mlp_dim, num_tokens=c.num_tokens, use_pos=c.use_pos,
                      attn_dropout=c.attn_dropout, dropout=c.dropout, dtype=jnp_dtype(self.model_cfg),
                      remat=self.model_cfg.remat)

  def init_inputs(self, image_shape):
    c = self.model_cfg.ips
    gh, gw = ips.patch_grid(image_shape[:2], c.patch_size, c.patch_stride)
    m = min(c.memory, gh * gw)
    return (np.zeros((1, m, c.patch_size, c.patch_size, image_shape[-1]), np.float32),
            np.zeros((1, m), np.int32))

  def _normalise(self, x):
    return normalise(x, self.augment.mean, self.augment.std)

  def model_inputs(self, state, data, batch, key, *, train: bool):
    """-> ((patches (b, M, P, P, C) normalised, positions (b, M)), labels). No augmentation: the
    selection (the same in training and evaluation) uses selection_key(key)."""
    c = self.model_cfg.ips
    if "patches" in batch:  # lazy loading: the host already selected them
      return (self._normalise(batch["patches"]), batch["positions"]), batch["labels"]
    images, labels = fetch(data, batch)
    patches = ips.extract_patches(self._normalise(images), c.patch_size, c.patch_stride)
    positions = ips.select(c.loading, state.apply_fn, state.variables(), patches, selection_key(key),
                           memory=c.memory, chunk=c.chunk)
    return (ips.gather_patches(patches, positions), positions), labels

  def host_inputs(self, model, device):
    return HostSelection(self, model, device) if self.model_cfg.ips.loading == "lazy" else None

  def uncounted_loops(self, apply_fn, variables, batch: int, image_shape) -> list | None:
    """The eager selection's scan over chunks; lazy loading selects outside the step (no loop in it);
    eager_sequential's scans inside a map over images are not counted here."""
    c = self.model_cfg.ips
    if c.loading == "lazy":
      return []
    if c.loading != "eager":
      return None
    gh, gw = ips.patch_grid(image_shape[:2], c.patch_size, c.patch_stride)
    iterations, body = ips.compiled_selection_body(
        apply_fn, variables, (batch, gh * gw, c.patch_size, c.patch_size, image_shape[-1]),
        memory=c.memory, chunk=c.chunk)
    return [(iterations - 1, body)] if iterations > 1 else []

  def description(self) -> str:
    i = self.model_cfg.ips
    return (f"ips {i.encoder}x{i.num_stages} D={i.dim}, M={i.memory} I={i.chunk} of {i.patch_size}px patches, "
            f"{i.loading} loading")

  def figures(self, model, variables, images, labels, tasks, out_dir, prefix: str, inputs_key) -> list:
    """The image with its selected patches coloured by attention score (visualize_ips.py), selected as
    evaluation selects them: the same patch order (key) and scores. The figure's host-side (lazy) programs
    round differently from the compiled eager scan, so patches whose scores tie to within float rounding
    (e.g. blank ones) may be swapped."""
    from apvit_jax import visualize_ips   # matplotlib only when drawing
    labels = labels if isinstance(labels, dict) else {tasks[0][0]: labels}
    return visualize_ips.render_ips_figures(model, variables, images, labels, self.model_cfg.ips,
                                            self._normalise, out_dir, f"ips_{prefix}",
                                            selection_key(inputs_key))


class HostSelection:
  """Lazy loading: selects on the host's first device with the current parameters, then replaces the
  batch's images by the selected patches, so only M patches per image are sent for the gradient step.
  One per run: its compiled scan is reused by every training step and evaluation."""

  def __init__(self, family: IPSFamily, model, device):
    c = family.model_cfg.ips
    self.patch_size, self.patch_stride = c.patch_size, c.patch_stride
    self.selector = ips.LazySelector(model.apply, memory=c.memory, chunk=c.chunk, device=device,
                                     prepare=family._normalise)

  def __call__(self, batch: dict, state_copy, inputs_key) -> dict:
    """batch with "images" (b, H, W, C) uint8 on the host -> with "patches" and "positions" instead."""
    patches = ips.extract_patches(batch.pop("images"), self.patch_size, self.patch_stride)
    positions = self.selector(state_copy.variables(), patches, selection_key(inputs_key))
    return {**batch, "patches": ips.gather_patches(patches, positions), "positions": positions}
