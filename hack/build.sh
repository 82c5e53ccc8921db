#!/usr/bin/env bash
# Builds everything: Debian dependencies and kernels (hack/deps.sh), the workspace binaries
# (release, glibc linked statically), node-runtime and the installer cross-built for arm64
# (Debian's rustc-web with its arm64 std, linked by aarch64-linux-gnu-gcc), and the base assets in
# _out/assets/{amd64,arm64}/ and the reference board overlays in _out/overlays/.
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

# arm64: rustup ships no aarch64 std here, Debian's rustc-web (the same release line) does
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$TARGET_DIR/aarch64" \
  cargo build --release --locked -p node-runtime -p installer-cli --target aarch64-unknown-linux-gnu
"$BIN/base-assets" \
  --arch arm64 \
  --kernel-root "$ARM64_CACHE/kernel/current" \
  --node-runtime "$BIN_ARM64/node-runtime" \
  --modules kernel-config/modules-arm64.txt \
  --sd-boot "$ARM64_CACHE/systemd-boot-efi/current/usr/lib/systemd/boot/efi/systemd-bootaa64.efi" \
  --sd-stub "$ARM64_CACHE/systemd-boot-efi/current/usr/lib/systemd/boot/efi/linuxaa64.efi.stub" \
  --grub-dir "$ARM64_CACHE/grub-efi-arm64-bin/current/usr/lib/grub" \
  --out "$ASSETS/arm64"

# reference board overlays (overlays/*/), packed with Debian's arm64 boot loaders
for src in overlays/*/; do
  [ -f "$src/overlay.yaml" ] || continue   # overlays/test-installer is a program, not an overlay
  name=$(basename "$src")
  "$BIN/base-assets" overlay --src "$src" \
    --package kernel="$ARM64_CACHE/kernel/current" \
    --package u-boot-rpi="$ARM64_CACHE/u-boot-rpi/current" \
    --package u-boot-rockchip="$ARM64_CACHE/u-boot-rockchip/current" \
    --out "$ROOT/_out/overlays/$name.tar.gz"
done
