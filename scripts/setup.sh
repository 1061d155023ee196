#!/usr/bin/env bash
# Installs everything eecc needs on a fresh Debian machine: system toolchains, then a venv in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(dataset-fashion-mnist qemu-system-arm qemu-user gcc-arm-none-eabi libnewlib-arm-none-eabi
              gcc-aarch64-linux-gnu libc6-dev-arm64-cross pocl-opencl-icd ocl-icd-opencl-dev clinfo graphviz
              espeak-ng chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/eecc ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[train,tvm,dev,ray]'
fi
