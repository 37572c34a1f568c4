"""APViT quickstart: configs/quickstart.py with an adaptive front-end. Offline, no files, no download.

  python train.py --config=configs/apvit_quickstart.py --workdir=workdirs/apvit_quickstart
  python eval.py --config=configs/apvit_quickstart.py --workdir=workdirs/apvit_quickstart --visualize=8

Data: built in (scikit-learn's 8×8 digits on a 40×40 cluttered canvas), 10,000 train / 2,000 test.
Model: the ViT-mu/8 of the quickstart (25 patches + cls) behind a small CNN localisation network that
gives each patch a translation, scale and rotation, starting exactly on the 5×5 grid; 0.23 M parameters
(the ViT alone: 0.21 M). Same recipe as the quickstart (12 epochs, AdamW lr 2e-3), except that the
localisation network learns at a tenth of that rate (optim.stn_lr_ratio=0.1, recipes.small_adaptive_front_end).
Three seeds (--config.num_seeds=3, jax 0.12.1, 2 Xeon cores, 2026-12-07): 88.53 ± 1.29 % final test accuracy
(87.55, 90.00, 88.05 %) in 683 s for the three, against the quickstart's 84.53 ± 0.93 % the same day.
At the full rate (--config.optim.stn_lr_ratio=1.0, this config before 2026-12-07) runs succeed or fail by
seed and by float rounding: 72.02 ± 20.09 % (91.30, 73.55, 51.20 %) here, where the same three seeds had
given 91.18 ± 0.74 % on another CPU on 2026-11-25 (docs/RESULTS.md, the ablation).
Smoke: --config=configs/apvit_quickstart.py:smoke (a few steps, seconds).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.small_adaptive_front_end(recipes.quickstart(base_config())), arg)
