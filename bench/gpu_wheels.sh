#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py installs on a GPU image that lacks them and has no network:
# bitsandbytes 0.50.2 (manylinux_2_24 x86_64, CUDA kernels included, about 43 MB) and trl 1.16.0 (about 1 MB).
# They land in wheels/ (git-ignored), small enough to carry along with the checkout (64 MiB in all):
#   bash bench/gpu_wheels.sh && python bench/gpu_check.py --wheels wheels/ --out gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-wheels}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
"$python" -m pip download --no-deps --only-binary=:all: --platform manylinux_2_24_x86_64 --dest "$dest" bitsandbytes==0.50.2
"$python" -m pip download --no-deps --only-binary=:all: --dest "$dest" trl==1.16.0
ls -l "$dest"
total=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
echo "$((total / 1024 / 1024)) MiB of wheels in $dest"
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
  echo "more than 60 MiB: too much to carry beside the checkout" >&2
  exit 1
fi
