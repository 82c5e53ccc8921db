#!/usr/bin/env bash
# Installs, idempotently, what building and testing need on a Debian machine, and extracts the
# current Debian kernels (the dependencies of linux-image-amd64 and linux-image-arm64:arm64) and
# the arm64 boot loaders (systemd-boot, GRUB's arm64-efi modules) into cache dirs, unpacked and
# never installed. Nothing is fetched from anywhere but Debian's package archive; nothing is
# installed into /boot.
#
# Usage: hack/deps.sh            (packages, kernels, arm64 boot loaders)
#        KERNEL_CACHE=DIR hack/deps.sh
set -euo pipefail

PKGS=(
  qemu-system-x86 qemu-utils ovmf            # boot tests (TCG, OVMF), qemu-img as validator
  seabios ipxe-qemu                          # BIOS boots and iPXE network boots
  systemd-boot-efi                           # systemd-boot + systemd-stub (base assets)
  grub-common grub-pc-bin grub-efi-amd64-bin # GRUB images via grub-mkimage (base assets)
  gdisk dosfstools squashfs-tools            # independent validators: sgdisk, fsck.fat, unsquashfs
  mtools xorriso genisoimage                 # validators: mcopy (FAT), xorriso/isoinfo (ISO)
  xz-utils zstd kmod cpio                    # validators (xz -t, zstd -d, depmod, cpio -t)
  python3                                    # validators (OVF XML, tarfile sparse reads)
  bc                                         # bench/ scripts
  g++                                        # libFuzzer, built by libfuzzer-sys (hack/fuzz.sh)
  podman runc buildah                        # the imager container image, run as users do
  docker-registry skopeo                     # a real OCI registry + its reference client (tests)
  openssl                                    # validators (signatures, test CAs)
  sbsigntool                                 # validator: sbverify (Authenticode signatures)
  swtpm libtss2-dev                          # a software TPM; the TSS libraries systemd-measure loads
  chromium chromium-driver                   # the factory's web wizard in a real browser (tests)
  wrk curl                                   # bench/factory.sh: load generator, time to first byte
  ca-certificates
  # arm64 (docs/arm64.md): node-runtime cross-built with Debian's rustc and the arm64 std,
  # booted with qemu-system-aarch64 on AAVMF (UEFI) and u-boot (qemu_arm64)
  qemu-system-arm qemu-efi-aarch64 u-boot-qemu
  rustc-web gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstd-rust-web-dev:arm64
)

# an independent Sigstore client (sigstore-js) runs on Node.js; Debian's when none is there
if ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# the arm64 std and the arm64 packages unpacked below come from the arm64 architecture
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "deps: adding the arm64 architecture" >&2
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -q >/dev/null
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# unpack PKG (apt's name, e.g. foo:arm64) into DIR once; DIR/.complete marks a finished unpack
unpack() {
  local pkg="$1" dir="$2"
  [ -f "$dir/.complete" ] && return 0
  local tmp
  tmp=$(mktemp -d "$(dirname "$dir")/.dl.XXXXXX")
  chmod 0755 "$tmp"  # apt drops to the _apt user for downloads
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
  rm -rf "$dir.part" && mkdir -p "$dir.part"
  dpkg-deb -x "$tmp"/*.deb "$dir.part"
  rm -rf "$tmp" "$dir"
  mv "$dir.part" "$dir"
  touch "$dir/.complete"
}

# The kernel of ARCH: linux-image-ARCH depends on exactly one versioned image package, whose
# tree lands in CACHE/<package> with CACHE/current pointing at it.
kernel() {
  local meta="$1" cache="$2" pkg
  mkdir -p "$cache"
  pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    $SUDO apt-get update -q >/dev/null
    pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "deps: cannot resolve $meta's kernel package" >&2; exit 4; }
  pkg="${pkg%%:*}"
  local arch="${meta#*:}"
  [ "$arch" = "$meta" ] && arch=""
  local kdir="$cache/$pkg"
  if [ ! -f "$kdir/.complete" ]; then
    unpack "$pkg${arch:+:$arch}" "$kdir"
    rm "$kdir/.complete"
    # The package's postinst would run depmod; do the same on the extracted tree so
    # modules.dep and modules.alias exist (this stands in for the upstream release build).
    for kver in $(ls "$kdir/lib/modules"); do
      /sbin/depmod -b "$kdir" "$kver"
    done
    touch "$kdir/.complete"
  fi
  ln -sfn "$pkg" "$cache/current"
  echo "deps: kernel $pkg in $cache/current" >&2
}

CACHE="${KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-rs/kernel}"
kernel linux-image-amd64 "$CACHE"
ARM64_CACHE="${ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-rs/arm64}"
kernel linux-image-arm64:arm64 "$ARM64_CACHE/kernel"
# arm64 boot loaders, unpacked by package version (a new Debian version unpacks anew)
for p in systemd-boot-efi grub-efi-arm64-bin u-boot-rpi u-boot-rockchip; do
  v=$(apt-cache policy "$p:arm64" | awk '/Candidate:/ {print $2; exit}')
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "deps: no candidate for $p:arm64" >&2; exit 4; }
  d="$ARM64_CACHE/$p/${v//[:~]/_}"
  mkdir -p "$(dirname "$d")"
  unpack "$p:arm64" "$d"
  ln -sfn "$(basename "$d")" "$ARM64_CACHE/$p/current"
done
echo "deps: arm64 boot loaders in $ARM64_CACHE" >&2
