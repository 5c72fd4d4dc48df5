#!/usr/bin/env bash
# Single-GPU cost of the data-parallel path on the device machine: `nanochat bench train
# --compare-collective` runs, in one process (so both sides share the autotuned kernels),
# rounds of (no collective, then one rank through burn's collective all-reduce) and prints
# the step-time ratio. Peak memory is sampled with nvidia-smi.
#
# Autotuning dominates the first steps of a fresh machine (burn 0.21 / CubeCL compile and
# time every kernel shape): keep --warmup large enough, and CUBECL_AUTOTUNE_LEVEL=minimal
# shortens it.
#
#   BIN=./target/release/nanochat OUT=/tmp/out bash xtask/scripts/bench_collective_overhead.sh
set -u
BIN=${BIN:-./target/release/nanochat}
OUT=${OUT:-/tmp/bench-collective}
ARGS=${ARGS:---depth 12 --device-batch-size 8 --seq-len 2048 --steps 10 --warmup 4}
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/results.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$OUT/mem.txt" &
smi=$!
# shellcheck disable=SC2086
"$BIN" bench train --device cuda $ARGS --compare-collective 2 > "$OUT/log.txt" 2>&1
grep -a -E "collective|median" "$OUT/log.txt" | tee -a "$OUT/results.txt"
kill "$smi"
echo "peak memory $(sort -n "$OUT/mem.txt" | tail -1) MiB" | tee -a "$OUT/results.txt"
