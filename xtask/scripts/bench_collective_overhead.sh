#!/usr/bin/env bash
# Single-GPU cost of the data-parallel path: `nanochat bench train` without the collective and
# with `--devices 1` (one rank through burn's collective all-reduce), alternated twice so that
# autotuning and clocks do not favour one side. Peak memory is sampled with nvidia-smi.
#
#   BIN=./target/release/nanochat OUT=/tmp/out bash xtask/scripts/bench_collective_overhead.sh
set -u
BIN=${BIN:-./target/release/nanochat}
OUT=${OUT:-/tmp/bench-collective}
ARGS=${ARGS:---depth 12 --device-batch-size 8 --seq-len 2048 --steps 15 --warmup 5}
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/results.txt"
for round in 1 2; do
  for mode in plain collective; do
    extra=""
    if [ "$mode" = collective ]; then extra="--devices 1"; fi
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$OUT/mem_${mode}_${round}.txt" &
    smi=$!
    # shellcheck disable=SC2086
    limit=150; if [ "$round$mode" = 1plain ]; then limit=330; fi
    timeout "$limit" "$BIN" bench train --device cuda $ARGS $extra 2> "$OUT/log_${mode}_${round}.txt" | tee -a "$OUT/results.txt"
    kill "$smi"
    echo "$mode round $round: peak memory $(sort -n "$OUT/mem_${mode}_${round}.txt" | tail -1) MiB" | tee -a "$OUT/results.txt"
  done
done
