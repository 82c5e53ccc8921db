#!/usr/bin/env bash
# UKI assembly and signing: `imager` (metal-uki unsigned; secureboot-metal-uki with
# Authenticode and the three-bank PCR policy) against the ukify-equivalent steps with Debian's
# tools on the same inputs (objcopy adding .osrel .cmdline .uname .splash .linux .initrd to
# the same stub at the same addresses, then sbsign), in the same run, best of 5 each. Needs
# hack/build.sh first (binaries and base assets) and sbsigntool, openssl.
#
#   bench/uki.sh
set -euo pipefail
source "$(dirname "$0")/../hack/env.sh"
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
for t in objcopy sbsign openssl; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 4; }; done
work=$(mktemp -d /tmp/bench-uki.XXXXXX)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=bench \
  -keyout "$work/db.key" -out "$work/db.pem" >/dev/null 2>&1
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/pcr.key" >/dev/null 2>&1
cat >"$work/sb.yaml" <<YAML
baseProfileName: secureboot-metal-uki
arch: amd64
input:
  secureboot:
    secureBootSigner:
      keyPath: $work/db.key
      certPath: $work/db.pem
    pcrSigner:
      keyPath: $work/pcr.key
YAML

ours_plain() { "$BIN/imager" metal-uki --output "$work/ours" >/dev/null 2>&1; }
ours_signed() { "$BIN/imager" - --output "$work/ours-sb" <"$work/sb.yaml" >/dev/null 2>&1; }

# the reference gets exactly our sections, at the addresses our UKI has them
ours_plain
uki="$work/ours/metal-amd64-uki.efi"
args=()
while read -r _ name size vma _; do
  case "$name" in
    .osrel|.cmdline|.uname|.splash|.linux|.initrd)
      objcopy -O binary --only-section="$name" "$uki" "$work/sec$name"
      args+=(--add-section "$name=$work/sec$name" --change-section-vma "$name=0x$vma")
      ;;
  esac
done < <(objdump -h "$uki" | awk '/^ *[0-9]+ \./ {print $1, $2, $3, $4}')
ref_plain() { objcopy "${args[@]}" "$ASSETS/amd64/systemd-stub.efi" "$work/ref.efi"; sync "$work/ref.efi"; }
ref_signed() {
  ref_plain
  sbsign --key "$work/db.key" --cert "$work/db.pem" --output "$work/ref.signed.efi" "$work/ref.efi" >/dev/null 2>&1
  sync "$work/ref.signed.efi"
}

op=$(best ours_plain)
rp=$(best ref_plain)
os=$(best ours_signed)
rs=$(best ref_signed)
printf 'UKI of %s bytes (kernel + initramfs)\n' "$(stat -c %s "$uki")"
printf '%-58s %8s\n' "pipeline" "seconds"
printf '%-58s %8.3f\n' "imager metal-uki (whole build, unsigned UKI)" "$op"
printf '%-58s %8.3f\n' "objcopy --add-section ×6 (assembly only)" "$rp"
printf '%-58s %8.3f\n' "imager secureboot-metal-uki (+ Authenticode, .pcrsig ×3)" "$os"
printf '%-58s %8.3f\n' "objcopy ×6 + sbsign (no PCR policy)" "$rs"
printf 'ratio unsigned (reference / imager): %.2fx\n' "$(echo "$rp / $op" | bc -l)"
printf 'ratio signed (reference / imager): %.2fx\n' "$(echo "$rs / $os" | bc -l)"
