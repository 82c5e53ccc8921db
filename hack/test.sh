#!/usr/bin/env bash
# Runs every test: unit, golden, differential (sgdisk, fsck.fat, unsquashfs, cpio) and
# end-to-end boots in QEMU. Builds what the tests need first.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash hack/build.sh
cargo test --release --locked --workspace --no-fail-fast
