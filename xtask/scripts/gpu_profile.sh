#!/usr/bin/env bash
# The GPU profile of issues #16/#17 in one device call (about 8 minutes): the CUDA forward
# against PyTorch's fixture, the cold and warm first d12 step, the d12 step (tok/s, MFU,
# forward / backward / optimizer), bf16 matmuls and attention at the step's shapes beside
# torch.matmul and SDPA, upstream's d12 step on PyTorch, the step on WGPU, d20 if time allows.
# The measurements themselves are in gpu_profile.py; this script unpacks what it needs.
#
#   Here, once per build:
#     CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda,wgpu --bin nanochat
#     xtask/scripts/gpu_profile.sh --prepare --upstream ../nanochat
#       (.carry/: the stripped, gzipped binary, the smallest model fixture, upstream's package)
#   On the device (carry .carry, and .gl for Vulkan: see the device tool's README):
#     bash xtask/scripts/gpu_profile.sh
#       writes $OUT/{results.json, results.md, log.txt, mem.csv, kernel-cache.tar.gz};
#       copy kernel-cache.tar.gz into .carry/ for a rerun with warm caches.
#   A dry run of the same plumbing here, on toy sizes:
#     xtask/scripts/gpu_profile.sh --dry-run --upstream ../nanochat [--device wgpu]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CARRY=$ROOT/.carry
MODE=device
UPSTREAM=
DEVICE=cpu
while [ $# -gt 0 ]; do
  case $1 in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --upstream) UPSTREAM=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
FIXTURES=${NANOCHAT_FIXTURE_DIR:-$ROOT/../shared/fixtures/model}
smallest_fixture() { ls -S "$FIXTURES"/*.safetensors | tail -1; }

case $MODE in
prepare)
  mkdir -p "$CARRY/fixtures" "$CARRY/upstream"
  strip -o "$CARRY/nanochat" "$ROOT/target/release/nanochat"
  gzip -9 -f "$CARRY/nanochat"
  f=$(smallest_fixture)
  cp "$f" "${f%.safetensors}.json" "$CARRY/fixtures/"
  if [ -n "$UPSTREAM" ]; then
    rm -rf "$CARRY/upstream/nanochat"
    cp -r "$UPSTREAM/nanochat" "$CARRY/upstream/"
    rm -rf "$CARRY/upstream/nanochat/__pycache__"
  fi
  du -sh "$CARRY"/* ;;
dry)
  BIN=$ROOT/target/release/nanochat
  [ -x "$BIN" ] || BIN=$ROOT/target/debug/nanochat
  PY=${PYTHON:-python3}
  OUT=${OUT:-/tmp/gpu-profile-dry}
  WORK=$(mktemp -d)
  rm -rf "$OUT"
  ARGS=(--bin "$BIN" --out "$OUT" --work "$WORK" --fixtures "$FIXTURES" --python "$PY"
        --device "$DEVICE" --dry-run --budget 300)
  [ -n "$UPSTREAM" ] && ARGS+=(--upstream "$UPSTREAM")
  python3 "$ROOT/xtask/scripts/gpu_profile.py" "${ARGS[@]}" ;;
device)
  if [ -d "$ROOT/.gl" ]; then
    for f in "$ROOT"/.gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  gunzip -c "$CARRY/nanochat.gz" > /tmp/nanochat
  chmod +x /tmp/nanochat
  WORK=/tmp/gpu-work
  mkdir -p "$WORK"
  if [ -f "$CARRY/kernel-cache.tar.gz" ]; then tar -xzf "$CARRY/kernel-cache.tar.gz" -C "$WORK"; fi
  ARGS=(--bin /tmp/nanochat --out "${OUT:?OUT is set by the device tool}" --work "$WORK"
        --fixtures "$CARRY/fixtures" --device cuda --wgpu --d20 --budget 480)
  [ -d "$CARRY/upstream/nanochat" ] && ARGS+=(--upstream "$CARRY/upstream")
  python3 "$ROOT/xtask/scripts/gpu_profile.py" "${ARGS[@]}" ;;
esac
