"""IPS on Megapixel MNIST (Bergner et al., ICLR 2023, Table/Sec. 4.1 setting).

  python train.py --config=configs/ips_megapixel_mnist.py --workdir=workdirs/ips_megapixel_mnist \
      --config.data.data_dir=PATH_TO_MNIST_IDX   # e.g. ../shared/data/mnist

Data: 1500x1500 canvases drawn on demand from MNIST (apvit_jax/data/megapixel.py), 5,000 train / 1,000
test, tasks majority / max / top / multi. Model: ResNet-18 trunk with 2 stages from scratch (D = 128),
patches 50x50 with stride 50 (N = 900), memory M = 5 and iteration size I = 100 (the authors' released
Megapixel MNIST config; this file used M = 100 before, still one flag away: --config.model.ips.memory=100),
cross-attention with 8 heads of d_k = 16, MLP 512, one query token per task, sinusoidal positions. AdamW
lr 1e-3, weight decay 0.1, batch 16, 10 warm-up epochs then cosine to 0.001·lr, 150 epochs (46,875 steps).
Initialisation as the authors' code: query tokens uniform on ±sqrt(1/d_k), BatchNorm scales at one.
Published: the IPS paper's reproduction reaches 99.1 % on the majority task at 150 epochs. Accuracy not
yet measured here (no GPU has been lent to this project's IPS work). Measured speed (at M = 100): 20.7 and 23.2 s
per step (two runs) at batch 8 on 2 CPU cores (`python -m bench.run --suite=steps --workloads=ips_megapixel_mnist --batch_size=8`).
Memory of the train step at batch 16, XLA's estimate on a CPU with the state donated as on a GPU (GPU runtime
peaks not measured yet): 0.70 GiB
at M = 5 (the selection pass's forward over 16·(M + I) patches bounds it), 2.32 GiB at M = 100, 1.19 GiB at
M = 100 with --config.model.remat=True (the ResNet's activations recomputed: ~6 % slower on CPU). The authors'
code at M = I = 100 peaks at 1.87 GiB on an H100 (the speed issue's figure).
--config.model.ips.loading=lazy keeps the patches on the host; eager_sequential selects image by image.
Smoke: --config=configs/ips_megapixel_mnist.py:smoke (builtin digits on a 200x200 canvas, offline).
"""
from apvit_jax.base_config import apply_arg, base_config
from apvit_jax import recipes


def get_config(arg: str | None = None):
  return apply_arg(recipes.ips_megapixel_paper(base_config()), arg,
                   lambda c: recipes.ips_smoke(c, canvas=200, patch=25))
