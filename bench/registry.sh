#!/usr/bin/env bash
# Registry pull: `imager pull` (cold cache, then warm) vs `skopeo copy docker://… oci:` on the
# same image — one 512 MiB layer plus a small one — from Debian's docker-registry on 127.0.0.1.
# Reports wall time, throughput and peak RSS (memory must stay flat as layers grow).
#
# Usage: bench/registry.sh [LAYER_MIB]     (after hack/build.sh)
set -euo pipefail
source "$(dirname "$0")/../hack/env.sh"
MIB=${1:-512}
W=$(mktemp -d); trap 'kill $REG 2>/dev/null || true; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/reg.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/data}}
http: {addr: 127.0.0.1:$PORT, secret: bench}
YML
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 & REG=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# the image: an OCI layout with a big incompressible layer (content need not be a tar to pull)
L="$W/layout"; mkdir -p "$L/blobs/sha256"
put() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$L/blobs/sha256/$h"; echo "$h $(stat -c %s "$L/blobs/sha256/$h")"; }
head -c $((MIB << 20)) /dev/urandom > "$W/big"; read -r BH BS < <(put "$W/big")
echo small > "$W/small"; read -r SH SS < <(put "$W/small")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' > "$W/cfg"; read -r CH CS < <(put "$W/cfg")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$CH" "$CS" "$BH" "$BS" "$SH" "$SS" > "$W/m"; read -r MH MS < <(put "$W/m")
printf '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$MH" "$MS" > "$L/index.json"
skopeo copy -q --insecure-policy --preserve-digests --dest-tls-verify=false "oci:$L" "docker://127.0.0.1:$PORT/bench/img:v1"
REF="127.0.0.1:$PORT/bench/img:v1"

measure() { # label cmd...
  local t0 t1 rss label=$1; shift
  t0=$(date +%s.%N)
  /usr/bin/time -f %M -o "$W/rss" "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 1; }
  t1=$(date +%s.%N)
  rss=$(cat "$W/rss")
  printf '%-28s %6.2f s  %7.1f MB/s  peak RSS %6.1f MB\n' "$label" "$(echo "$t1 - $t0" | bc)" "$(echo "$MIB / ($t1 - $t0)" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
echo "layer: $MIB MiB"
for i in 1 2 3; do
  rm -rf "$W/cache" "$W/o1" "$W/o2" "$W/o3"
  measure "imager pull (cold) #$i" "$BIN/imager" pull "$REF" "$W/o1" --insecure --cache-dir "$W/cache"
  measure "imager pull (warm) #$i" "$BIN/imager" pull "$REF" "$W/o2" --insecure --cache-dir "$W/cache"
  measure "skopeo copy #$i" skopeo copy -q --insecure-policy --src-tls-verify=false "docker://$REF" "oci:$W/o3:v1"
done
