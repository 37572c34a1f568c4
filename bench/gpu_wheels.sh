#!/usr/bin/env bash
# Wheels for a lent GPU machine (no internet there). Its image has jax 0.11.2 with the CUDA plugin (kept:
# the plugin must match it), torch, timm and its own flax, optax, orbax, chex; not ml_collections or grain.
# Downloads, for its Python 3.12 on x86-64: ml_collections and grain with its needs (every command;
# streamed data, data.workers, the host suite), and the flax, optax, orbax-checkpoint and chex pinned in
# requirements.txt with the tensorstore they were tested with, so that the device runs the combination
# tested here on CPU (jax 0.11.2 with these pins: the quick lane and the slow tests, 2026-12-06), not
# whatever versions the image holds. About 30 MiB.
#   bash bench/gpu_wheels.sh            # -> .whl/ (ignored by git through .git/info/exclude)
# Then begin each device command with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() {  # $1: a package name -> NAME==VERSION as requirements.txt pins it for Python 3.12
  grep -E "^$1==" requirements.txt | grep -v 'python_version < "3.12"' | head -1 | sed 's/[;#].*//; s/ *$//'
}
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "$(pin ml_collections)" "$(pin grain)" array_record==0.8.6 portpicker==1.6.0 \
  "$(pin flax)" "$(pin optax)" "$(pin orbax-checkpoint)" "$(pin chex)" tensorstore==0.1.86
ls -la .whl
