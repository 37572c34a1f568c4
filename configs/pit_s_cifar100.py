"""PiT-S on CIFAR-100: a ViT-S on 1×1 patches (1,024 pixel tokens + cls), 21.7 M parameters.

  python train.py --config=configs/pit_s_cifar100.py --workdir=workdirs/pit_s_cifar100

Data and recipe: exactly those of configs/pit_t_cifar100.py (shared `recipes.pit_paper_cifar100`). About 4× the FLOPs
of PiT-T per image; consider --config.model.remat=True on GPUs with less memory.
Measured: not yet (no GPU was available to this task).
Smoke: --config=configs/pit_s_cifar100.py:smoke (tiny model on 16×16 built-in digits, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.pit_paper_cifar100(base_config(), "S/1"), arg, recipes.pit_smoke)
