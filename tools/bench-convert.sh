#!/usr/bin/env bash
# Conversion benchmark: writes a synthetic checkpoint with real Qwen3-30B-A3B shapes
# (LAYERS decoder layers, default 2, plus embeddings and head), then measures
#   - the plain cost of the same I/O: reading the source (cat) and writing a copy of the
#     4-bit pack (cp), both from the page cache like the conversion itself;
#   - moepack convert at 4 and 2 bits: time, source GB/s, peak RSS;
# and prints the ratio of each conversion's time to the plain read + write time.
# Usage: tools/bench-convert.sh [WORKDIR] (needs a Release build in BUILD_DIR, default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/bench-convert}
layers=${LAYERS:-2}
threads=${THREADS:-$(nproc)}
build=${BUILD_DIR:-build}
bin=$build/tools/moepack
gen=$build/tests/make_synthetic_checkpoint
mkdir -p "$work"
if [ ! -f "$work/src/config.json" ]; then
  "$gen" -o "$work/src" --layers "$layers"
fi
src_bytes=$(du -sb "$work/src" | cut -f1)
now() { date +%s.%N; }
cat "$work"/src/*.safetensors > /dev/null   # warm the page cache
t0=$(now); cat "$work"/src/*.safetensors > /dev/null; t1=$(now)
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
read_s=$(calc "$t1 - $t0")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "source: $layers layers, $src_bytes bytes; plain read (cat) $read_s s"
for bits in 4 2; do
  rm -rf "$work/pack$bits" "$work/copy$bits"
  t0=$(now)
  "$bin" convert "$work/src" -o "$work/pack$bits" --bits "$bits" --threads "$threads" 2>/dev/null | tee "$work/convert$bits.log"
  t1=$(now)
  sync
  convert_s=$(calc "$t1 - $t0")
  t0=$(now); cp -r "$work/pack$bits" "$work/copy$bits"; sync; t1=$(now)
  write_s=$(calc "$t1 - $t0")
  rm -rf "$work/copy$bits" "$work/pack$bits"
  rss=$(grep -o 'peak RSS [0-9.]* [KMG]iB' "$work/convert$bits.log")
  echo "bits $bits: convert $convert_s s, $(calc "$src_bytes / $convert_s / 1e9") GB/s of source, $rss;" \
       "plain read + write of the same bytes $(calc "$read_s + $write_s") s;" \
       "ratio $(calc "$convert_s / ($read_s + $write_s)")"
done
