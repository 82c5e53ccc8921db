#!/usr/bin/env bash
# Installs, idempotently, what building and testing need on a Debian machine, and extracts the
# current Debian kernel (the dependency of linux-image-amd64) into a cache dir.
# Nothing is fetched from anywhere but Debian's package archive; nothing is installed into /boot.
#
# Usage: hack/deps.sh            (packages + kernel)
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
  ca-certificates
)

# an independent Sigstore client (sigstore-js) runs on Node.js; Debian's when none is there
if ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel: linux-image-amd64 depends on exactly one versioned image package.
CACHE="${KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-rs/kernel}"
mkdir -p "$CACHE"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  $SUDO apt-get update -q >/dev/null
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "deps: cannot resolve linux-image-amd64's kernel package" >&2; exit 4; }
kdir="$CACHE/$pkg"
if [ ! -f "$kdir/.complete" ]; then
  tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
  chmod 0755 "$tmp"  # apt drops to the _apt user for downloads
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
  rm -rf "$kdir.part" && mkdir -p "$kdir.part"
  dpkg-deb -x "$tmp"/*.deb "$kdir.part"
  # The package's postinst would run depmod; do the same on the extracted tree so modules.dep
  # and modules.alias exist (this stands in for the upstream release build).
  for kver in $(ls "$kdir.part/lib/modules"); do
    /sbin/depmod -b "$kdir.part" "$kver"
  done
  rm -rf "$tmp" "$kdir"
  mv "$kdir.part" "$kdir"
  touch "$kdir/.complete"
fi
ln -sfn "$pkg" "$CACHE/current"
echo "deps: kernel $pkg in $CACHE/current" >&2
