#!/usr/bin/env bash
# The quickstart: build everything, write the default `metal` image with a META network
# configuration, and boot it in QEMU (TCG, OVMF) until node-runtime reports ready.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash hack/build.sh
"$BIN/imager" metal \
  --output _out \
  --extra-kernel-arg console=ttyS0 \
  --meta 0xa=@hack/examples/network.yaml
"$BIN/imager" boot _out/metal-amd64.raw.zst --until-ready
