"""The standard ViT of the DPS-ViT comparison on CIFAR-10: 16 patches of 8×8 by a conv embedding, width
288, 6 pre-LN layers, 4 heads, MLP ×4, dropout 0.1, cls token, learned position embeddings.

  python train.py --config=configs/std_vit_cifar10.py --workdir=workdirs/std_vit_cifar10

Data: tfds `cifar10` (prepare once with internet and TensorFlow: `tfds build cifar10`), or the official
python batches offline:
  --config.data.name=cifar10_raw --config.data.data_dir=/path/containing/cifar-10-batches-py
Recipe (published, identical for configs/dps_vit_cifar10.py): 150 epochs, batch 256, AdamW lr 1e-4,
weight decay 1e-3 (here on kernels only), 5 warm-up epochs then cosine warm restarts (T0 = 40 epochs,
Tmult = 2, stepped per step rather than per epoch), label smoothing 0.1, random crop (pad 4) + flip +
rotation ±15°, CIFAR mean/std normalisation, no gradient clipping; compute dtype "auto": bf16 on GPU/TPU,
float32 on CPU (the published runs used fp16 AMP).
Published (clean CIFAR-10, best epoch): 72.85 %; the published PyTorch code on the JPEG-75 copy: 72.36 %
best / 71.30 % final. Ours: not measured yet (no GPU was available to this task).
Smoke: --config=configs/std_vit_cifar10.py:smoke (tiny model, a few steps on the built-in digits, offline).
"""
from apvit_jax.base_config import CIFAR10_MEAN, CIFAR10_STD, base_config, smoke


def published_recipe(c):
  """The DPS-ViT paper's CIFAR-10 recipe, shared by the standard ViT and DPS-ViT."""
  c.data.name = "tfds:cifar10"
  c.batch_size = 256
  c.num_epochs = 150
  c.label_smoothing = 0.1
  c.optim.name = "adamw"
  c.optim.lr = 1e-4
  c.optim.weight_decay = 1e-3
  c.optim.warmup_epochs = 5.0
  c.optim.schedule = "cosine_restarts"
  c.optim.restart_epochs = 40.0
  c.optim.restart_mult = 2.0
  c.optim.end_lr_ratio = 0.0
  c.optim.grad_clip = 0.0
  c.augment.crop_padding = 4
  c.augment.flip = True
  c.augment.rotate_degrees = 15.0
  c.augment.mean, c.augment.std = CIFAR10_MEAN, CIFAR10_STD
  c.model.variant = "S/8"  # patch 8; width, depth and heads below
  c.model.width, c.model.depth, c.model.num_heads = 288, 6, 4
  c.model.dropout = 0.1
  c.log_every_steps = 100
  return c


def smoke_offline(c):
  """Offline smoke: the built-in digits stand in for CIFAR-10 (40×40 grey; patch 8 divides it)."""
  c.data.name = "cluttered_digits"
  c.augment.mean, c.augment.std = (0.5,), (0.5,)
  return smoke(c)


def get_config(arg: str | None = None):
  c = published_recipe(base_config())
  if arg == "smoke":
    smoke_offline(c)
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; use 'smoke' or nothing")
  return c
