#!/usr/bin/env bash
# Stages what device calls carry to a lent GPU machine, each under the tool's 64 MiB with the git checkout
# (which travels with every call): the wheels (bench/gpu_wheels.sh: ~30 MiB, the first call) and the
# CIFAR-10 JPEG-75 copy from ../shared/data as one tar in three parts with its SHA256SUMS (~59 MiB each,
# one call each, only where a reproduction run follows: docs/gpu_session.md).
#   bash bench/gpu_stage.sh     # -> .gpu/wheels, .gpu/data1, .gpu/data2, .gpu/data3 (ignored by git)
# The first call carries [".gpu/wheels"] and installs them:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl;
# and every call that runs the project then: export PYTHONPATH=/tmp/site;
# the call that carries [".gpu/dataK"] (K = 1, 2, 3, in order; /tmp lives while the machine is warm):
#   cat .gpu/dataK/cifar.tar.part >> /tmp/cifar.tar;
# and the last of them unpacks and checks before training:
#   mkdir -p /tmp/data && tar -xf /tmp/cifar.tar -C /tmp/data && (cd /tmp/data && sha256sum -c SHA256SUMS)
# (the data is then in /tmp/data/cifar10_jpeg75: --config.data.data_dir=/tmp/data/cifar10_jpeg75).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared/data
[ -d "$SHARED/cifar10_jpeg75" ] || { echo "no $SHARED/cifar10_jpeg75 here" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
bash bench/gpu_wheels.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data1 .gpu/data2 .gpu/data3
cp .whl/*.whl .gpu/wheels/
tmp=$(mktemp -d)
grep ' cifar10_jpeg75/' "$SHARED/SHA256SUMS" > "$tmp/SHA256SUMS"
tar -cf "$tmp/cifar.tar" -C "$SHARED" cifar10_jpeg75 -C "$tmp" SHA256SUMS
total=$(stat -c %s "$tmp/cifar.tar")
split -b $(( total / 3 + 1 )) "$tmp/cifar.tar" "$tmp/part."
mv "$tmp/part.aa" .gpu/data1/cifar.tar.part && mv "$tmp/part.ab" .gpu/data2/cifar.tar.part
mv "$tmp/part.ac" .gpu/data3/cifar.tar.part
cat .gpu/data{1,2,3}/cifar.tar.part | cmp - "$tmp/cifar.tar"
rm -rf "$tmp"
repo=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for folder in wheels data1 data2 data3; do
  size=$(du -cb .gpu/$folder/* | tail -1 | cut -f1)
  printf '%s: %.1f MiB carried + %.1f MiB checkout\n' $folder "$(echo "$size/1048576" | bc -l)" "$(echo "$repo/1048576" | bc -l)"
  [ $((size + repo)) -lt $((64 * 1048576 - 262144)) ] || { echo ".gpu/$folder is over the 64 MiB a call may take" >&2; exit 1; }
done
