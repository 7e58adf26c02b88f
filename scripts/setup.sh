#!/usr/bin/env bash
# Installs the Debian packages sluice needs to build, test and benchmark, if any are missing.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libucx-dev ucx-utils
  libflatbuffers-dev flatbuffers-compiler
  libhwloc-dev libtbb-dev
  libbenchmark-dev libgtest-dev
  libpmix-dev openmpi-bin libopenmpi-dev
)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
