#!/usr/bin/env bash
# Disk format conversion: diskfmt (crates/diskfmt, example `convert`) against qemu-img on the
# same sparse raw image, in the same run, best of 3 (warm page cache for both).
#
#   bench/disk-formats.sh [IMAGE.raw]
#
# Without an argument a realistic image is made: 2.2 GiB sparse with ~40 MB of data spread
# over it (incompressible "kernel/initramfs" data in an ESP-like region, compressible text,
# filesystem-metadata-like small blocks, a GPT-like tail). Prints a table of seconds, the
# qemu-img/diskfmt time ratio (> 1: diskfmt is faster) and output sizes.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v qemu-img >/dev/null || { echo "qemu-img is required (apt-get install qemu-utils)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/disk-formats.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "building diskfmt's convert example..." >&2
convert=$(cargo build --release -p diskfmt --example convert --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*examples/convert"' | tail -n1 | cut -d'"' -f4)
[ -x "$convert" ] || { echo "could not build the convert example" >&2; exit 1; }

if [ $# -ge 1 ]; then
  raw=$1
else
  raw=$work/disk.raw
  truncate -s 2200M "$raw"
  put() { dd of="$raw" bs=1M seek="$1" conv=notrunc iflag=fullblock status=none; }
  head -c 20M /dev/urandom | put 1                      # ESP: kernel + initramfs (compressed data)
  put 105 < <(yes 'Talos Linux: an OS for Kubernetes, secure, immutable and minimal.' | head -c 6M || true)
  put 120 < <(base64 -w 76 /dev/urandom | head -c 6M || true)   # text-like, partly compressible
  head -c 4M /dev/urandom | put 300                     # squashfs-like
  for i in $(seq 0 63); do                               # scattered fs metadata blocks
    head -c 64K /dev/urandom |
      dd of="$raw" bs=64K seek=$((8192 + i * 400)) conv=notrunc iflag=fullblock status=none
  done
  head -c 1M /dev/urandom | put 2199                    # backup GPT region
fi
size=$(stat -c %s "$raw")
alloc=$(( $(stat -c %b "$raw") * 512 ))

best() { # best-of-3 wall time of "$@" in seconds
  local best= t0 t1 t
  for _ in 1 2 3; do
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%.3f' "$best"
}

printf 'input: %s, %d bytes, %d allocated, %s cores, load average %s\n\n' \
  "$raw" "$size" "$alloc" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %10s %10s %8s %14s %14s\n' format diskfmt_s qemu-img_s ratio diskfmt_bytes qemu-img_bytes
row() { # name ours_out ref_out ours_cmd... -- ref_cmd...
  local name=$1 o=$2 r=$3; shift 3
  local ours=() ref=()
  while [ "$1" != -- ]; do ours+=("$1"); shift; done; shift
  ref=("$@")
  local to tr
  to=$(best "${ours[@]}")
  if [ ${#ref[@]} -gt 0 ]; then
    tr=$(best "${ref[@]}")
    printf '%-26s %10s %10s %8.2f %14d %14d\n' "$name" "$to" "$tr" "$(echo "$tr / $to" | bc -l)" \
      "$(stat -c %s "$o")" "$(stat -c %s "$r")"
  else
    printf '%-26s %10s %10s %8s %14d %14s\n' "$name" "$to" - - "$(stat -c %s "$o")" -
  fi
}

row "qcow2 cluster_size=8k" "$work/o.qcow2" "$work/r.qcow2" \
  "$convert" qcow2 "$raw" "$work/o.qcow2" 8k -- \
  qemu-img convert -f raw -O qcow2 -o cluster_size=8k "$raw" "$work/r.qcow2"
row "qcow2 cluster_size=64k" "$work/o64.qcow2" "$work/r64.qcow2" \
  "$convert" qcow2 "$raw" "$work/o64.qcow2" 64k -- \
  qemu-img convert -f raw -O qcow2 -o cluster_size=64k "$raw" "$work/r64.qcow2"
row "vhd fixed,force_size" "$work/o.vhd" "$work/r.vhd" \
  "$convert" vhd "$raw" "$work/o.vhd" -- \
  qemu-img convert -f raw -O vpc -o subformat=fixed,force_size "$raw" "$work/r.vhd"
row "vmdk streamOptimized" "$work/o.vmdk" "$work/r.vmdk" \
  "$convert" vmdk "$raw" "$work/o.vmdk" -- \
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$work/r.vmdk"
row "ova (vmdk + ovf + mf)" "$work/o.ova" "" \
  "$convert" ova "$raw" "$work/o.ova" --

# Sanity: the outputs are what they claim to be.
for f in "qcow2 o.qcow2" "vpc o.vhd" "vmdk o.vmdk"; do
  set -- $f
  qemu-img compare -q -f raw -F "$1" "$raw" "$work/$2" || { echo "MISMATCH: $2" >&2; exit 1; }
done
echo
echo "vhd allocated: diskfmt $(( $(stat -c %b "$work/o.vhd") * 512 )) bytes," \
  "qemu-img $(( $(stat -c %b "$work/r.vhd") * 512 )) bytes"
