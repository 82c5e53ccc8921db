# Sourced by the hack scripts: shared paths and the reproducible build epoch.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KERNEL_CACHE="${KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-rs/kernel}"
# arm64 kernel and boot loaders unpacked by hack/deps.sh
export ARM64_CACHE="${ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-rs/arm64}"
# One epoch for every artifact: the last commit's time (0 outside a git checkout).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
# Our binaries are built for the explicit host triple (see .cargo/config.toml).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release"
# node-runtime for arm64 (hack/build.sh cross-builds it into its own target dir)
BIN_ARM64="$TARGET_DIR/aarch64/aarch64-unknown-linux-gnu/release"
ASSETS="$ROOT/_out/assets"
export IMAGER_INSTALL_DIR="$ASSETS"
# The commit `imager --version` names (read at compile time).
if [ -z "${IMAGER_GIT_COMMIT:-}" ]; then
  IMAGER_GIT_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
fi
export IMAGER_GIT_COMMIT
