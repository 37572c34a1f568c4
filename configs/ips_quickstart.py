"""IPS quickstart: the Megapixel MNIST task of configs/ips_megapixel_mnist.py at a size two CPU cores train.

  python train.py --config=configs/ips_quickstart.py --workdir=workdirs/ips_quickstart \
      --config.data.data_dir=PATH_TO_MNIST_IDX   # e.g. ../shared/data/mnist
  python eval.py --config=configs/ips_quickstart.py --workdir=workdirs/ips_quickstart \
      --config.data.data_dir=PATH_TO_MNIST_IDX --visualize=4

Data: 300x300 canvases (the published 1500x1500 in a 25th of the area) drawn on demand from MNIST: 5 digits
(3 of the target class), 2 noise scribbles (the published density: 50 per 1500²), 5,000 train / 1,000 test;
tasks majority / max / top / multi. Model: the published IPS (patches 50x50 with stride 50, so N = 36
instead of 900; memory M = 5, iteration size I = 100, so all 36 in one iteration; cross-attention with 8
heads of d_k = 16, D = 128) with its ResNet-18 trunk of 2 stages at a quarter of the width
(model.ips.width=16; 250,904 parameters in all). The published recipe (AdamW lr 1e-3, weight decay 0.1,
batch 16, cosine to 0.001·lr) for 15 epochs with one of warm-up (recipes.ips_megapixel_on_a_cpu).
Measured (jax 0.12.1, 2 cores of an AMD EPYC, 2026-12-07; docs/RESULTS.md, "IPS on a CPU-sized Megapixel
MNIST"): final test accuracy over seeds 0, 1, 2 run one after another, 851-892 s each (~100 train images/s):
majority 74.03 ± 9.10 % (81.20, 77.10, 63.80), max 80.47 ± 7.37 %, top 79.50 ± 5.69 %, multi-label 86.89 ±
3.83 % (71 % for "absent" everywhere); still rising at epoch 15. The seeds leave chance level (majority
~10 %) after about 2, 4 and 7 epochs, and the latest to start ends lowest. Without selection
(--config.model.ips.memory=36, every patch with gradients; seeds 0, 1, 2): majority 96.87 ± 0.49 % (97.20,
96.30, 97.10), max 88.63 ± 1.04 %, top 85.20 ± 0.46 %, multi 94.18 ± 0.47 %, at ~37 train images/s. M = 5 for 45 epochs (--config.num_epochs=45 --config.optim.warmup_epochs=3;
seeds 0 and 1, 2,545 and 2,786 s, about M = 36's wall time): majority 90.15 ± 0.21 % (90.00, 90.30), max
90.85 ± 0.21 %, top 88.25 ± 1.34 %, multi 93.65 ± 0.12 %.
--config.num_seeds=3 trains three seeds in one program at three runs' speed on a CPU (the replicas
unrolled there; vmapped they ran at 0.65 of it: bench/RESULTS.md).
Smoke: --config=configs/ips_quickstart.py:smoke (builtin digits on a 200x200 canvas, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.ips_megapixel_on_a_cpu(recipes.ips_megapixel_paper(base_config())), arg,
                   lambda c: recipes.ips_smoke(c, canvas=200, patch=25))
