#!/usr/bin/env bash
# Stages what three back-to-back device calls carry to a lent GPU machine, each under the tool's 64 MiB
# (the git checkout travels with every call): the wheels the machine's image lacks (bench/gpu_wheels.sh)
# and the CIFAR-10 JPEG-75 copy from ../shared/data as one tar cut in three parts, with its SHA256SUMS.
#   bash bench/gpu_stage.sh     # -> .gpu/wheels, .gpu/call1 (part 1), .gpu/call2, .gpu/call3 (ignored by git)
# Call 1 carries [".gpu/wheels"] (and ".gpu/call1" where the data is wanted) and installs the wheels:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl;
# device call k that carries the data (k = 1, 2, 3; /tmp lives while the machine is warm) starts with
#   cat .gpu/callK/cifar.tar.part* >> /tmp/cifar.tar;
# and every call that runs the project then: export PYTHONPATH=/tmp/site;
# call 3 unpacks and checks before training:
#   mkdir -p /tmp/data && tar -xf /tmp/cifar.tar -C /tmp/data && (cd /tmp/data && sha256sum -c SHA256SUMS)
# (the data is then in /tmp/data/cifar10_jpeg75: --config.data.data_dir=/tmp/data/cifar10_jpeg75).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared/data
[ -d "$SHARED/cifar10_jpeg75" ] || { echo "no $SHARED/cifar10_jpeg75 here" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
bash bench/gpu_wheels.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/call1 .gpu/call2 .gpu/call3
cp .whl/*.whl .gpu/wheels/
tmp=$(mktemp -d)
grep ' cifar10_jpeg75/' "$SHARED/SHA256SUMS" > "$tmp/SHA256SUMS"
tar -cf "$tmp/cifar.tar" -C "$SHARED" cifar10_jpeg75 -C "$tmp" SHA256SUMS
# Part 1 rides with the wheels: split the tar so that every call carries about the same.
total=$(stat -c %s "$tmp/cifar.tar"); wheels=$(du -cb .gpu/wheels/*.whl | tail -1 | cut -f1)
first=$(( (total + 2 * wheels) / 3 - wheels ))
head -c "$first" "$tmp/cifar.tar" > .gpu/call1/cifar.tar.part1
tail -c +$((first + 1)) "$tmp/cifar.tar" | split -b $(( (total - first + 1) / 2 + 1 )) - "$tmp/rest."
mv "$tmp/rest.aa" .gpu/call2/cifar.tar.part2 && mv "$tmp/rest.ab" .gpu/call3/cifar.tar.part3
cat .gpu/call1/cifar.tar.part1 .gpu/call2/cifar.tar.part2 .gpu/call3/cifar.tar.part3 | cmp - "$tmp/cifar.tar"
rm -rf "$tmp"
repo=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for k in 1 2 3; do
  size=$(du -cb .gpu/call$k/* $([ $k = 1 ] && echo .gpu/wheels/*) | tail -1 | cut -f1)
  printf 'call %d: %.1f MiB carried + %.1f MiB checkout\n' $k "$(echo "$size/1048576" | bc -l)" "$(echo "$repo/1048576" | bc -l)"
  [ $((size + repo)) -lt $((64 * 1048576 - 262144)) ] || { echo "call $k is over the 64 MiB a call may take" >&2; exit 1; }
done
