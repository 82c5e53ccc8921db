#!/usr/bin/env python3
"""Writes the --dump-profile goldens: every built-in profile x {amd64, arm64} at the
imager's default version (v1.14.0), derived independently of the imager's code from
docs/formats/profile.md (the table of built-in profiles; input defaults, SecureBoot signers,
bootloader selection) and docs/formats/disk-layout.md (disk size adjustment). Run it from this
directory; the test tests/tests/profiles.rs compares the imager's dump with these files byte
for byte."""

MIB = 1024 * 1024
MIN, DEF = 1246 * MIB, 8192 * MIB
VERSION = "v1.14.0"
BOOT = 2000 * MIB  # Talos >= 1.11

# name, platform, kind, outFormat, diskFormat, options, size, secureboot
# (docs/formats/profile.md, "Built-in profiles")
TABLE = [
    ("iso", "metal", "iso", "raw", None, None, None, False),
    ("secureboot-iso", "metal", "iso", "raw", None, None, None, True),
    ("metal", "metal", "image", ".zst", "raw", None, MIN, False),
    ("metal-4k", "metal", "image", ".zst", "raw", None, MIN, False),
    ("metal-uki", "metal", "uki", "raw", None, None, None, False),
    ("secureboot-metal-uki", "metal", "uki", "raw", None, None, None, True),
    ("secureboot-metal", "metal", "image", ".zst", "raw", None, MIN, True),
    ("installer", "metal", "installer", "raw", None, None, None, False),
    ("secureboot-installer", "metal", "installer", "raw", None, None, None, True),
    ("akamai", "akamai", "image", ".gz", "raw", None, MIN, False),
    ("alibabacloud", "alibabacloud", "image", "raw", "qcow2", "cluster_size=8k", MIN, False),
    ("aws", "aws", "image", ".zst", "raw", None, DEF, False),
    ("azure", "azure", "image", ".zst", "vhd", "subformat=fixed,force_size", DEF, False),
    ("secureboot-azure", "azure", "image", ".zst", "vhd", "subformat=fixed,force_size", DEF, True),
    ("cloudstack", "cloudstack", "image", ".zst", "raw", None, DEF, False),
    ("secureboot-cloudstack", "cloudstack", "image", ".zst", "raw", None, DEF, True),
    ("digital-ocean", "digital-ocean", "image", ".gz", "raw", None, DEF, False),
    ("exoscale", "exoscale", "image", ".zst", "qcow2", "cluster_size=8k", 10240 * MIB, False),
    ("gcp", "gcp", "image", ".tar.gz", "raw", None, DEF, False),
    ("hcloud", "hcloud", "image", ".zst", "raw", None, MIN, False),
    ("nocloud", "nocloud", "image", ".zst", "raw", None, MIN, False),
    ("secureboot-nocloud", "nocloud", "image", ".zst", "raw", None, MIN, True),
    ("opennebula", "opennebula", "image", ".zst", "raw", None, MIN, False),
    ("secureboot-opennebula", "opennebula", "image", ".zst", "raw", None, MIN, True),
    ("openstack", "openstack", "image", ".zst", "raw", None, MIN, False),
    ("secureboot-openstack", "openstack", "image", ".zst", "raw", None, MIN, True),
    ("oracle", "oracle", "image", ".zst", "qcow2", "cluster_size=8k", DEF, False),
    ("scaleway", "scaleway", "image", ".zst", "raw", None, MIN, False),
    ("upcloud", "upcloud", "image", ".zst", "raw", None, DEF, False),
    ("vmware", "vmware", "image", "raw", "ova", None, DEF, False),
    ("secureboot-vmware", "vmware", "image", "raw", "ova", None, DEF, True),
    ("vultr", "vultr", "image", ".zst", "raw", None, DEF, False),
]


def bootloader(arch, sb):
    # Output.selectBootloader: SB -> sd-boot; >= 1.10: arm64 sd-boot, amd64 dual-boot
    if sb:
        return "sd-boot"
    return "sd-boot" if arch == "arm64" else "dual-boot"


def render(name, platform, kind, fmt, dfmt, opts, size, sb, arch):
    inst = "/usr/install/" + arch
    out = [
        f"arch: {arch}",
        f"platform: {platform}",
        f"secureboot: {'true' if sb else 'false'}",
        f"version: {VERSION}",
        "input:",
        "  kernel:",
        f"    path: {inst}/vmlinuz",
        "  initramfs:",
        f"    path: {inst}/initramfs.xz",
        "  sdStub:",
        f"    path: {inst}/systemd-stub.efi",
        "  sdBoot:",
        f"    path: {inst}/systemd-boot.efi",
        "  baseInstaller:",
        f"    imageRef: ghcr.io/siderolabs/installer-base:{VERSION}",
    ]
    if sb:
        out += [
            "  secureboot:",
            "    secureBootSigner:",
            "      keyPath: /secureboot/uki-signing-key.pem",
            "      certPath: /secureboot/uki-signing-cert.pem",
            "    pcrSigner:",
            "      keyPath: /secureboot/pcr-signing-key.pem",
        ]
    out += ["output:", f"  kind: {kind}"]
    if kind == "image":
        bl = bootloader(arch, sb)
        disk = size + BOOT - 1000 * MIB  # docs/formats/disk-layout.md, disk size
        if bl == "dual-boot":
            disk += MIB + BOOT
        out += ["  imageOptions:", f"    diskSize: {disk}", f"    diskFormat: {dfmt}"]
        if opts:
            out.append(f"    diskFormatOptions: {opts}")
        if name == "metal-4k":
            out.append("    diskSectorSize: 4096")
        out.append(f"    bootloader: {bl}")
    if kind == "iso":
        # isoOptions.sdBootEnrollKeys has no omitempty; the bootloader is selectable from 1.12
        out += ["  isoOptions:", "    sdBootEnrollKeys: if-safe", f"    bootloader: {bootloader(arch, sb)}"]
    out.append(f"  outFormat: {fmt}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for row in TABLE:
        for arch in ("amd64", "arm64"):
            with open(f"profiles/{row[0]}-{arch}.yaml", "w") as f:
                f.write(render(*row, arch))
