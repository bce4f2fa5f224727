#!/usr/bin/env bash
# Runs every test: installs dependencies, builds with warnings as errors and with
# AddressSanitizer + UndefinedBehaviorSanitizer, runs ctest, then runs each libFuzzer
# target for a short fixed time (FUZZ_SECONDS, default 30) seeded from the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-30}

tools/install-deps.sh

cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOEPACK_WERROR=ON -DMOEPACK_SANITIZE=ON -DMOEPACK_BUILD_TESTS=ON
cmake --build build-test -j "$jobs"
ctest --test-dir build-test --output-on-failure -j "$jobs" -LE gpu 2>&1 | tee build-test/ctest.log

if [ "$fuzz_seconds" -gt 0 ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DMOEPACK_FUZZ=ON -DMOEPACK_BUILD_TESTS=OFF -DMOEPACK_WERROR=ON
  cmake --build build-fuzz -j "$jobs" --target fuzz_safetensors_header fuzz_model_config fuzz_pack_manifest \
    fuzz_tokenizer_file fuzz_state_file
  corpus=build-fuzz/corpus
  rm -rf "$corpus" && mkdir -p "$corpus/safetensors" "$corpus/config" "$corpus/manifest" "$corpus/tokenizer"
  for model in tests/fixtures/models/*/; do
    name=$(basename "$model")
    cp "$model/config.json" "$corpus/config/$name.json"
    for f in "$model"*.safetensors; do head -c 16384 "$f" > "$corpus/safetensors/$name-$(basename "$f")"; done
  done
  # manifests of real packs of two fixtures, made by the sanitized build
  for model in qwen3_moe gpt_oss; do
    build-test/tools/moepack convert "tests/fixtures/models/$model" -o "build-fuzz/pack-$model" --force >/dev/null 2>&1
    cp "build-fuzz/pack-$model/manifest.json" "$corpus/manifest/$model.json"
    cp "build-fuzz/pack-$model/manifest.json" "$corpus/config/manifest-$model.json"   # its "model" too
  done
  # tokenizer.bin seeds: the small fixture tokenizers, whole and as bare payloads
  for tok in tests/fixtures/tokenizers/*/; do
    name=$(basename "$tok")
    build-test/tools/moepack export-tokenizer "$tok" -o "$corpus/tokenizer/$name.bin" >/dev/null
    tail -c +33 "$corpus/tokenizer/$name.bin" > "$corpus/tokenizer/$name.payload"
  done
  # state files: a pack of the qwen3_next fixture (keys and values, and recurrent states)
  # and a state it saved
  mkdir -p "$corpus/state"
  build-test/tools/moepack convert tests/fixtures/models/qwen3_next -o build-fuzz/pack-qwen3_next --bits 4 --force \
    >/dev/null 2>&1
  build-test/tools/moerun generate -m build-fuzz/pack-qwen3_next -t 1 --ctx 64 --tokens 1,2,3,4 -n 3 --temp 0 \
    --save-state "$corpus/state/seed.state" >/dev/null 2>&1
  export MOEPACK_FUZZ_PACK="$PWD/build-fuzz/pack-qwen3_next"
  for target in safetensors_header:safetensors model_config:config pack_manifest:manifest \
      tokenizer_file:tokenizer state_file:state; do
    fuzzer=${target%%:*}; seeds=${target##*:}
    echo "fuzzing $fuzzer for ${fuzz_seconds}s"
    log="build-fuzz/fuzz_$fuzzer.log"
    max_len=16384
    [ "$fuzzer" = state_file ] && max_len=65536   # the seed state is ~30 KB
    if ! (cd build-fuzz && "./tests/fuzz/fuzz_$fuzzer" -max_total_time="$fuzz_seconds" -max_len="$max_len" \
          "corpus/$seeds" >"fuzz_$fuzzer.log" 2>&1); then
      tail -n 40 "$log"
      echo "fuzz_$fuzzer found a failure (reproducer in build-fuzz/crash-*)"
      exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log"
  done
fi
# the unit-test summary last, so that it closes the output
grep -E "tests passed" build-test/ctest.log
