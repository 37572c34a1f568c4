"""Every config field with its default. Config files start from `base_config()` and override fields,
so `--config.FIELD=VALUE` on a field that does not exist is an error naming it."""
from __future__ import annotations

import ml_collections

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.parallel = "pmap"          # "pmap" or "shard_map" (jit over a Mesh)
  c.distributed = "auto"       # jax.distributed.initialize(): True, False, or "auto" (cluster detected)
  c.batch_size = 128           # global, over all devices and hosts
  c.num_epochs = 10.0
  c.total_steps = 0            # > 0 overrides num_epochs
  c.num_classes = 0            # 0: from the dataset; otherwise checked against it
  c.label_smoothing = 0.0
  c.eval_every_epochs = 1
  c.log_every_steps = 50
  c.progress_bar = True

  c.data = ml_collections.ConfigDict()
  c.data.name = "cluttered_digits"  # see apvit_jax/data/sources.py
  c.data.data_dir = ""
  c.data.in_memory = True      # tfds only: False streams from disk (needs image_size)
  c.data.image_size = 0        # tfds streaming: resize + centre crop to this size
  c.data.seed = 0              # cluttered_digits only
  c.data.num_train = 10_000
  c.data.num_test = 2_000
  c.data.canvas = 40

  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 0   # random crop after zero padding by this many pixels
  c.augment.flip = False
  c.augment.rotate_degrees = 0.0
  c.augment.mean = (0.5,)
  c.augment.std = (0.5,)

  c.model = ml_collections.ConfigDict()
  c.model.name = "vit"
  c.model.variant = "Ti/16"    # NAME/PATCH, NAME in mu, Ti, S, M, B, L
  c.model.patch_size = 0       # > 0 overrides the variant's patch size
  c.model.posemb = "learn"     # or "sincos2d"
  c.model.pool = "token"       # or "gap"
  c.model.dropout = 0.0
  c.model.drop_path = 0.0
  c.model.dtype = "float32"    # compute dtype; parameters stay float32. "bfloat16" on GPU/TPU
  c.model.attention_impl = "auto"  # "auto": cuDNN on GPU in bf16 where it takes the shapes, else XLA

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"       # or "sgd" (momentum = b1)
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.05
  c.optim.warmup_epochs = 1.0
  c.optim.end_lr_ratio = 0.0   # cosine decays to lr * end_lr_ratio
  c.optim.grad_clip = 1.0      # global-norm clipping; 0 disables

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.async_save = True
  c.checkpoint.keep_latest = 1   # the best-by-test-accuracy step is kept as well
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A tiny model and a few steps on offline data: under a minute on CPU."""
  c.model.variant = "mu/" + c.model.variant.split("/")[1]
  c.model.dtype = "float32"
  c.total_steps = 6
  c.batch_size = 16
  c.log_every_steps = 2
  if c.data.name == "cluttered_digits":
    c.data.num_train, c.data.num_test = 64, 40
  c.optim.warmup_epochs = 0.0
  return c
