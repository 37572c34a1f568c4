#!/usr/bin/env bash
# Wheels for a lent GPU machine (no internet there; its image already has jax, flax, optax, orbax, chex,
# torch, timm, scikit-learn, tqdm, absl). Downloads, for its Python 3.12 on x86-64, what the project
# needs beyond that image: ml_collections (every command) and grain with its own needs (streamed data,
# data.workers, the host suite). About 4.5 MiB; carry the folder with the device call (carry: [".whl"]).
#   bash bench/gpu_wheels.sh            # -> .whl/ (ignored by git through .git/info/exclude)
# Then begin each device command with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
ls -la .whl
