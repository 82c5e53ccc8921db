#!/usr/bin/env bash
# Writes the imager container image (docs/formats/imager-image.md) into _out/image/ from the
# static imager and the base assets that hack/build.sh made. Extra arguments go to
# `imager self-image` (e.g. --push REF --sign-key KEY).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$BIN/imager" self-image --output _out/image "$@"
