#!/usr/bin/env bash
# SquashFS: our writer (crates/squashfs, example `mksqfs`) against mksquashfs on the same tree,
# in the same run: zstd level 18, 128 KiB blocks, 2 threads / 2 processors, everything owned
# by root (-all-root), best of 3 wall-clock seconds each, runs interleaved so that a busy
# machine hurts both alike (warm page cache for both). Prints times, image sizes, the time
# ratio mksquashfs/ours (≥ 1.0: the goal "no slower than mksquashfs" is met) and the size
# difference.
#
#   bench/squashfs.sh [SRC_DIR] [RUNS]
#
# Without SRC_DIR the corpus is the Debian kernel's kernel/drivers module tree (~276 MB of .ko
# files) from the kernel cache hack/deps.sh fills.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v mksquashfs >/dev/null || { echo "mksquashfs is required (apt-get install squashfs-tools)" >&2; exit 4; }
command -v bc >/dev/null || { echo "bc is required (apt-get install bc)" >&2; exit 4; }

# the one kernel hack/deps.sh extracted (its version is never named here: Debian moves it)
mods=${KERNEL_CACHE:-$HOME/.cache/talos-rs/kernel}/current/lib/modules
kver=$(ls "$mods" 2>/dev/null | head -n1)
src=${1:-$mods/$kver/kernel/drivers}
runs=${2:-3}
[ -d "$src" ] || { echo "no corpus at $src (run hack/deps.sh, or pass SRC_DIR)" >&2; exit 4; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-squashfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "building squashfs's mksqfs example..." >&2
mksqfs=$(cargo build --release -p squashfs --example mksqfs --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*examples/mksqfs"' | tail -n1 | cut -d'"' -f4)
[ -x "$mksqfs" ] || { echo "could not build the mksqfs example" >&2; exit 1; }

ours() { "$mksqfs" "$src" "$work/ours.sqsh" --comp zstd --level 18 --threads 2 >/dev/null; }
ref() {
  mksquashfs "$src" "$work/ref.sqsh" -comp zstd -Xcompression-level 18 -b 131072 \
    -processors 2 -all-root -noappend -no-progress -quiet >/dev/null
}
secs() { # wall-clock seconds of "$@"
  local t0 t1
  t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
min() { echo "$1 $2" | awk '{print ($1 < $2) ? $1 : $2}'; }

find "$src" -type f -exec cat {} + >/dev/null # warm the page cache
o=999999 r=999999
for i in $(seq 1 "$runs"); do
  a=$(secs ours); o=$(min "$o" "$a")
  b=$(secs ref); r=$(min "$r" "$b")
  printf 'run %d: ours %.3f s, mksquashfs %.3f s\n' "$i" "$a" "$b" >&2
done
os=$(stat -c %s "$work/ours.sqsh")
rs=$(stat -c %s "$work/ref.sqsh")
# both images must hold the same tree
# (mode, owner, file size or symlink target, path; a directory's size is its listing's, which
# depends on inode numbering, so it is left out)
listing() {
  unsquashfs -lln "$1" | awk '/squashfs-root/ { s = ($1 ~ /^d/) ? "-" : $3; print $1, $2, s, $6, $7, $8 }' | sort
}
listing "$work/ours.sqsh" >"$work/ours.ls"
listing "$work/ref.sqsh" >"$work/ref.ls"
if ! cmp -s "$work/ours.ls" "$work/ref.ls"; then
  echo "the images list different trees:" >&2
  diff "$work/ours.ls" "$work/ref.ls" | head -20 >&2
  exit 1
fi

printf 'corpus: %s, %s in %d files, %s cores, load average %s\n\n' "$src" \
  "$(du -sh --apparent-size "$src" | cut -f1)" "$(find "$src" -type f | wc -l)" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %10s %14s\n' writer seconds bytes
printf '%-34s %10.3f %14d\n' "squashfs crate (mksqfs, 2 threads)" "$o" "$os"
printf '%-34s %10.3f %14d\n' "mksquashfs -processors 2" "$r" "$rs"
printf 'time ratio (mksquashfs / ours): %.3f  (>= 1.0: goal met)\n' "$(echo "$r / $o" | bc -l)"
printf 'size difference (ours vs mksquashfs): %+.2f %%  (goal: within 2 %%)\n' \
  "$(echo "($os - $rs) * 100 / $rs" | bc -l)"
