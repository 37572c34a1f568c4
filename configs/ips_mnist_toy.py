"""IPS toy: MNIST upscaled to 500x500, 25 patches of 100x100, memory M = chunk I = 5.

  python train.py --config=configs/ips_mnist_toy.py --workdir=workdirs/ips_mnist_toy \
      --config.data.data_dir=PATH_TO_MNIST_IDX   # e.g. ../shared/data/mnist

One task (the digit), ResNet-18 with 4 stages from scratch (512 features, D = 512), batch 128, AdamW
lr 1e-3, 10 epochs. Not yet measured here (no GPU in the session that wrote this).
Smoke: --config=configs/ips_mnist_toy.py:smoke (builtin digits at 100x100, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = "mnist_resized"
  c.data.digits = "mnist_raw"
  c.data.image_size = 500
  c.model.name = "ips"
  i = c.model.ips
  i.encoder, i.num_stages = "resnet18", 4
  i.patch_size = i.patch_stride = 100
  i.memory, i.chunk = 5, 5
  i.dim, i.num_heads, i.head_dim, i.mlp_dim = 512, 8, 64, 1024
  c.augment.mean, c.augment.std = (0.0,), (1.0,)
  c.batch_size = 128
  c.num_epochs = 10
  c.label_smoothing = 0.0
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.1
  c.optim.warmup_epochs = 1.0
  c.log_every_steps = 50
  return apply_arg(c, arg, smoke)


def smoke(c):
  """Builtin digits at 100x100: 25 patches of 20x20, M = I = 5."""
  recipes.ips_smoke(c, canvas=0, patch=20)
  c.data.image_size = 100
  c.model.ips.memory = c.model.ips.chunk = 5
  return c
