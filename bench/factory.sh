#!/usr/bin/env bash
# The factory under load on loopback (docs/formats/factory.md): Debian's docker-registry as its
# cache and input registry, one factory instance, wrk as the load generator.
#
#   - requests/s and p50/p99 latency of a cached ~20 MB asset (the metal UKI), through the
#     factory, and the same blob straight from docker-registry (the reference: the factory
#     streams it from there);
#   - requests/s and p50/p99 of POST /schematics;
#   - peak RSS of the factory while it serves 50 concurrent downloads of a large image (the
#     metal qcow2), against its RSS before;
#   - time to first byte of a cold build against a cache hit of the same asset.
#
# Usage: bench/factory.sh [SECONDS]     (after hack/build.sh; needs wrk and curl)
set -euo pipefail
source "$(dirname "$0")/../hack/env.sh"
SECS=${1:-10}
W=$(mktemp -d)
cleanup() { kill "$FAC" "$REG" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
FAC=""; REG=""
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(port)
cat > "$W/reg.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/data}}
http: {addr: 127.0.0.1:$RPORT, secret: bench}
YML
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 & REG=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$RPORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
HOST=127.0.0.1:$RPORT
V=v1.14.0
"$BIN/base-assets" publish --arch amd64 --assets "$ASSETS" --insecure \
  --push "$HOST/siderolabs/installer-base:$V" >/dev/null 2>&1
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/cache.pem" 2>/dev/null

FPORT=$(port)
IF_HTTP_HTTPLISTENADDR=127.0.0.1:$FPORT IF_CACHE_SIGNINGKEYPATH="$W/cache.pem" \
IF_CACHE_OCI_REGISTRY=$HOST IF_CACHE_OCI_INSECURE=true \
IF_ARTIFACTS_CORE_REGISTRY=$HOST IF_ARTIFACTS_CORE_INSECURE=true \
IF_ARTIFACTS_SCHEMATIC_REGISTRY=$HOST IF_ARTIFACTS_SCHEMATIC_INSECURE=true \
IF_CONTAINERSIGNATURE_DISABLED=true IF_BUILD_WORKDIR="$W/work" \
  "$BIN/factory" 2>"$W/factory.log" & FAC=$!
F=http://127.0.0.1:$FPORT
for _ in $(seq 100); do curl -sf "$F/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
schematic() { curl -sf -X POST --data-binary "$1" "$F/schematics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
ID=$(schematic $'customization:\n  extraKernelArgs: [console=ttyS0]\n')
ttfb() { curl -s -o /dev/null -w '%{time_starttransfer} %{size_download}\n' "$1"; }
metric() { curl -s "$F/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "== time to first byte: cold build vs cache hit (metal UKI, ~20 MB)"
read -r COLD SIZE < <(ttfb "$F/image/$ID/$V/metal-amd64-uki.efi")
read -r HIT _ < <(ttfb "$F/image/$ID/$V/metal-amd64-uki.efi")
printf 'cold build  %6.3f s   cache hit %6.4f s   (%s bytes; builds so far: %s)\n' "$COLD" "$HIT" "$SIZE" "$(metric factory_builds_total)"

echo "== cached asset, ${SECS}s of wrk -t2 -c8 (factory vs the registry serving the same blob)"
DIGEST=$(curl -sf "$F/image/$ID/$V/metal-amd64-uki.efi.sha256" | cut -d' ' -f1)
wrk_line() { # label url [script]
  local label=$1 url=$2; shift 2
  wrk -t2 -c8 -d"${SECS}s" --latency "$@" "$url" > "$W/wrk.out"
  local rps p50 p99 tr
  rps=$(awk '/^Requests\/sec/ {print $2}' "$W/wrk.out")
  tr=$(awk '/^Transfer\/sec/ {print $2}' "$W/wrk.out")
  p50=$(awk '$1 == "50%" {print $2}' "$W/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$W/wrk.out")
  printf '%-34s %9s req/s  p50 %8s  p99 %8s  %s/s\n' "$label" "$rps" "$p50" "$p99" "$tr"
}
wrk_line "factory /image (cache hit)" "$F/image/$ID/$V/metal-amd64-uki.efi"
wrk_line "docker-registry blob (reference)" "http://$HOST/v2/siderolabs/image-factory/cache/blobs/sha256:$DIGEST"
cat > "$W/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "customization:\n  extraKernelArgs: [console=ttyS0]\n"
wrk.headers["Content-Type"] = "application/yaml"
LUA
wrk_line "factory POST /schematics" "$F/schematics" -s "$W/post.lua"

echo "== peak RSS while serving 50 concurrent downloads (metal qcow2)"
curl -sf -o /dev/null "$F/image/$ID/$V/metal-amd64.qcow2"
BIG=$(curl -sfI "$F/image/$ID/$V/metal-amd64.qcow2" | awk 'tolower($1) == "content-length:" {print $2+0}')
BEFORE=$(awk '/^VmRSS/ {print $2}' "/proc/$FAC/status")
HWM0=$(awk '/^VmHWM/ {print $2}' "/proc/$FAC/status")
S=$(date +%s.%N)
for _ in $(seq 50); do curl -s -o /dev/null "$F/image/$ID/$V/metal-amd64.qcow2" & done
wait $(jobs -p | grep -v -e "^$FAC\$" -e "^$REG\$") 2>/dev/null || true
E=$(date +%s.%N)
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$FAC/status")
printf 'qcow2 %s bytes x 50 in %.2f s; factory RSS before %.1f MB, peak before the downloads %.1f MB, peak after %.1f MB\n' \
  "$BIG" "$(echo "$E - $S" | bc)" "$(echo "$BEFORE/1024" | bc -l)" "$(echo "$HWM0/1024" | bc -l)" "$(echo "$HWM/1024" | bc -l)"
echo "builds: $(metric factory_builds_total), cache hits: $(metric factory_cache_hits_total), bytes served: $(metric factory_bytes_served_total)"
