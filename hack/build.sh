#!/usr/bin/env bash
# Builds everything: Debian dependencies and kernel (hack/deps.sh), the workspace binaries
# (release, glibc linked statically), and the base assets in _out/assets/amd64/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

if ! command -v cargo >/dev/null; then
  echo "build: cargo not found; install a current Rust toolchain (https://rustup.rs), e.g." >&2
  echo "       apt-get install -y rustup && rustup default stable" >&2
  exit 4
fi

bash hack/deps.sh
cargo build --release --locked --workspace --bins
"$BIN/base-assets" \
  --kernel-root "$KERNEL_CACHE/current" \
  --node-runtime "$BIN/node-runtime" \
  --modules kernel-config/modules-amd64.txt \
  --out "$ASSETS/amd64"
