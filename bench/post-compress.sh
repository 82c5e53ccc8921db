#!/usr/bin/env bash
# Post-processing benchmark (docs/formats/outputs.md): crates/postfmt (examples/post.rs) with 1 and
# 2 threads against the reference CLIs Talos runs, on the same inputs in the same run.
#
#   bench/post-compress.sh [SPARSE_IMAGE] [DENSE_FILE]
#
# Without arguments it builds
#   - a 2.2 GiB sparse raw image with ~50 MB of real data: the base assets of
#     _out/assets/amd64/* (kernel, initramfs, EFI binaries) concatenated, written at 5 offsets;
#   - a 200 MB non-sparse file of mixed compressible data (ELF binaries and libraries), where
#     zeros do not dominate and the parallel speedup of the codec itself shows.
# For every format it checks that 1 and 2 threads give byte-identical output, and prints a
# table: seconds, input MB/s, output bytes, speedup of 2 threads over 1.
# References: `xz -0 -T0`, `pigz -6 -n` (or `gzip -6 -n` without pigz), `zstd -T0 -18`,
# `tar --sparse … | pigz -6 -n`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/post-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p postfmt --example post
post=$( (ls -t target/*/release/examples/post target/release/examples/post 2>/dev/null || true) | head -1)
[ -x "$post" ] || { echo "post example not built" >&2; exit 1; }

sparse=${1:-}
if [ -z "$sparse" ]; then
  sparse=$work/sparse.raw
  assets=(_out/assets/amd64/*)
  [ -e "${assets[0]}" ] || { echo "no _out/assets/amd64/*: run hack/build.sh or pass an image" >&2; exit 1; }
  cat "${assets[@]}" >"$work/blob"
  truncate -s 2200M "$sparse"
  for mib in 1 300 900 1500 2100; do
    dd if="$work/blob" of="$sparse" bs=1M seek="$mib" conv=notrunc status=none
  done
  rm "$work/blob"
fi
dense=${2:-}
if [ -z "$dense" ]; then
  dense=$work/dense.bin
  # shellcheck disable=SC2046
  find /usr/bin /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -size +16k -print0 2>/dev/null |
    sort -z | xargs -0 cat 2>/dev/null | head -c 200M >"$dense" || true
fi

if command -v pigz >/dev/null; then gz_ref="pigz -6 -n"; else gz_ref="gzip -6 -n"; fi

# secs CMD... : runs CMD (a shell string), prints elapsed seconds
secs() {
  local t0 t1
  t0=$(date +%s.%N)
  bash -c "$1"
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
}

row() { # input fmt impl seconds outfile insize [base_seconds]
  local mbs size speed=""
  mbs=$(awk -v s="$4" -v n="$6" 'BEGIN{ if (s > 0) printf "%.0f", n / 1e6 / s; else print "-" }')
  size=$(stat -c %s "$5")
  [ -n "${7:-}" ] && speed=$(awk -v a="$7" -v b="$4" 'BEGIN{ if (b > 0) printf "%.2fx", a / b }')
  printf '%-7s %-7s %-22s %8s %8s %14s %8s\n' "$1" "$2" "$3" "$4" "$mbs" "$size" "$speed"
}

printf '%-7s %-7s %-22s %8s %8s %14s %8s\n' input format impl seconds "MB/s" "out bytes" "2T/1T"
for input in sparse dense; do
  in=${!input}
  insize=$(stat -c %s "$in")
  dir=$(dirname "$in")
  base=$(basename "$in")
  for fmt in zst xz gz tar.gz; do
    s1=$(secs "'$post' $fmt '$in' '$work/o1' 1 2>/dev/null")
    s2=$(secs "'$post' $fmt '$in' '$work/o2' 2 2>/dev/null")
    cmp -s "$work/o1" "$work/o2" || { echo "$fmt: 1 and 2 threads differ" >&2; exit 1; }
    row "$input" "$fmt" "postfmt 1 thread" "$s1" "$work/o1" "$insize"
    row "$input" "$fmt" "postfmt 2 threads" "$s2" "$work/o2" "$insize" "$s1"
    case $fmt in
      zst) ref="zstd -q -T0 -18 -c '$in'"; name="zstd -T0 -18" ;;
      xz) ref="xz -0 -T0 -c '$in'"; name="xz -0 -T0" ;;
      gz) ref="$gz_ref -c '$in'"; name="${gz_ref% -n}" ;;
      tar.gz)
        ref="tar -cf - --sparse --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0"
        ref+=" -C '$dir' --transform='s|^$base\$|disk.raw|' '$base' | $gz_ref"
        name="tar --sparse|${gz_ref%% *}" ;;
    esac
    sr=$(secs "$ref >'$work/or'")
    row "$input" "$fmt" "$name" "$sr" "$work/or" "$insize"
    rm -f "$work/o1" "$work/o2" "$work/or"
  done
done
