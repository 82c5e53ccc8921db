#!/usr/bin/env bash
# ISO build: `imager iso` against the reference pipeline Talos runs (mkfs.vfat + mcopy for
# efiboot.img, then xorrisofs for the hybrid ISO, docs/formats/iso.md) on the same staged tree, in
# the same run, best of 5 each. Needs hack/build.sh first (binaries and base assets).
#
#   bench/iso.sh
set -euo pipefail
source "$(dirname "$0")/../hack/env.sh"
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
for t in mkfs.vfat mcopy xorrisofs; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 4; }; done
work=$(mktemp -d /tmp/bench-iso.XXXXXX)
trap 'rm -rf "$work"' EXIT
A="$ASSETS/amd64"

# our build (its staging tree is the reference's input: extracted from our ISO below)
ours() { "$BIN/imager" iso --output "$work/ours" >/dev/null 2>&1; rm -rf "$work/ours"; }

# the reference: stage the same files, efiboot.img with mkfs.vfat + mcopy, then xorrisofs
"$BIN/imager" iso --output "$work/stage-src" >/dev/null 2>&1
mkdir -p "$work/stage"
xorriso -osirrox on -indev "$work/stage-src/metal-amd64.iso" -extract / "$work/stage" >/dev/null 2>&1
chmod -R u+w "$work/stage"
rm -f "$work/stage/boot.catalog" "$work/stage/EFI" "$work/stage/loader" 2>/dev/null || true
rm -rf "$work/stage/EFI" "$work/stage/loader"
# the ESP's files, taken from our ISO's appended partition 2
esp_line=$(sgdisk -i 2 "$work/stage-src/metal-amd64.iso" | grep -E "First sector|Last sector" | awk '{print $3}' | paste -sd' ')
read -r first last <<<"$esp_line"
dd if="$work/stage-src/metal-amd64.iso" of="$work/ours-esp.img" bs=512 skip="$first" count=$((last - first + 1)) status=none
mkdir -p "$work/esp"
mcopy -s -n -m -i "$work/ours-esp.img" ::/ "$work/esp"
# the ISO tree mirrors EFI/ and loader/ of the ESP, as the imager's does
cp -a "$work/esp/EFI" "$work/esp/loader" "$work/stage/"
esp_size=$((40 * 1024 * 1024))
ref() {
  rm -f "$work/efiboot.img" "$work/ref.iso"
  truncate -s $esp_size "$work/efiboot.img"
  mkfs.vfat -F 32 -n EFI --invariant "$work/efiboot.img" >/dev/null
  (cd "$work/esp" && mcopy -s -p -Q -m -i "$work/efiboot.img" ./* ::)
  xorrisofs -R -iso-level 3 -V TALOS_V1_14_0 -volset Talos-v1.14.0 \
    -b boot/grub/i386-pc/eltorito.img -no-emul-boot -boot-load-size 4 -boot-info-table \
    --grub2-boot-info --grub2-mbr "$A/grub/boot_hybrid.img" \
    -eltorito-alt-boot -e --interval:appended_partition_2:all:: \
    -append_partition 2 0xef "$work/efiboot.img" -appended_part_as_gpt \
    -partition_cyl_align all -partition_offset 16 -iso_mbr_part_type 0x83 -no-emul-boot \
    -o "$work/ref.iso" "$work/stage" >/dev/null 2>&1
  # the same durability as the imager, which fsyncs its artifact before renaming it
  sync "$work/ref.iso"
}

o=$(best ours)
r=$(best ref)
printf '%-40s %8s\n' "pipeline" "seconds"
printf '%-40s %8.3f\n' "imager iso (ISO + efiboot.img, Rust)" "$o"
printf '%-40s %8.3f\n' "mkfs.vfat + mcopy + xorrisofs" "$r"
printf 'ratio (reference / imager): %.1fx\n' "$(echo "$r / $o" | bc -l)"
