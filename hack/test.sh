#!/usr/bin/env bash
# Runs every test: unit, golden, differential (sgdisk, fsck.fat, unsquashfs, cpio) and
# end-to-end boots in QEMU, then a short coverage-guided fuzzing pass over every parser of
# outside input (hack/fuzz.sh, FUZZ_SECONDS per target, default 10). Builds what the tests
# need first.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash hack/build.sh
status=0
cargo test --release --locked --workspace --no-fail-fast || status=$?
bash hack/fuzz.sh "${FUZZ_SECONDS:-10}" || status=1
exit "$status"
