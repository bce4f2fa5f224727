#!/usr/bin/env bash
# Engine benchmark: a synthetic checkpoint with real Qwen3-30B-A3B shapes (LAYERS decoder
# layers, default 24; random weights, so routing is near uniform: the caches' worst case),
# converted at BITS-bit experts and DENSE_BITS-bit dense weights, then `moerun bench` in
# three set-ups:
#   full   expert cache holding every expert (the reference workload of llama.cpp CPU-only)
#   warm   expert cache of 1/CACHE_DIVISOR of the experts, misses served by the page cache
#   cold   the same cache, misses read with O_DIRECT
# Usage: tools/bench-engine.sh [WORKDIR] (Release build in BUILD_DIR, default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/bench-engine}
layers=${LAYERS:-24}
bits=${BITS:-4}
dense_bits=${DENSE_BITS:-8}
divisor=${CACHE_DIVISOR:-4}
threads=${THREADS:-$(nproc)}
prompt=${PROMPT_LEN:-128}
gen=${GEN:-64}
build=${BUILD_DIR:-build}
sets=${SETS:-full warm cold}
mkdir -p "$work"
pack="$work/pack-$bits-$dense_bits"
if [ ! -f "$pack/manifest.json" ]; then
  if [ ! -f "$work/src/config.json" ]; then
    "$build/tests/make_synthetic_checkpoint" -o "$work/src" --layers "$layers"
  fi
  "$build/tools/moepack" convert "$work/src" -o "$pack" --bits "$bits" --dense-bits "$dense_bits" --threads "$threads"
fi
expert_bytes=$(du -cb "$pack"/experts/*.bin | tail -1 | cut -f1)
budget=$(awk "BEGIN { printf \"%.3f\", $expert_bytes / $divisor / 1e9 }")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "pack: $pack, experts $expert_bytes bytes; small cache $budget GB"
for set in $sets; do
  case $set in
    full) args=(--expert-cache-gb 1000) ;;
    warm) args=(--expert-cache-gb "$budget") ;;
    cold) args=(--expert-cache-gb "$budget" --direct-io) ;;
  esac
  echo "== $set: moerun bench --model $pack --threads $threads --prompt-len $prompt --gen $gen ${args[*]}"
  "$build/tools/moerun" bench --model "$pack" --threads "$threads" --prompt-len "$prompt" --gen "$gen" \
    --ctx $((prompt + gen + 64)) "${args[@]}"
done
