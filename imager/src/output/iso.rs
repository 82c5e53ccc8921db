//! The ISO output (docs/formats/iso.md): a hybrid image that boots from CD and USB disk, BIOS and UEFI.
//!
//! In: a resolved profile, the kernel cmdline (META already on it as INSTALLER_META_BASE64),
//! the boot files and GRUB's `eltorito.img` / `boot_hybrid.img`. Out: `<base>.iso` written by
//! the `iso9660` crate: an ISO 9660 + Rock Ridge tree (`boot/` for GRUB, `EFI/`, `loader/` and
//! the boot entry's files), El Torito entries for BIOS (GRUB, boot info table) and UEFI (an
//! `efiboot.img` FAT ESP written with the `fat` crate and appended as partition 2), GRUB's
//! hybrid MBR code and a GPT (`-appended_part_as_gpt`). Volume id and set id per docs/formats/iso.md.
//!
//! Generator choice (docs/formats/iso.md): amd64 → hybrid (GRUB BIOS + systemd-boot UEFI), arm64 → UEFI only.
//! As on disk images, systemd-boot boots the UKI from `EFI/Linux/` when the profile boots one
//! (Talos ≥ 1.10, SecureBoot: [`super::efi`]), else a type #1 entry whose kernel and initramfs
//! sit on the ESP. SecureBoot ISOs are UEFI-only, with signed systemd-boot and UKI, the key
//! databases in `loader/keys/auto/` and the certificate in `EFI/keys/`.

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::Profile;
use crate::profile::quirks::Quirk;
use std::fs::File;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// Smallest ESP image that is FAT32 by cluster count (EDK2 decides the FAT type that way).
const MIN_ESP: u64 = 40 * MIB;

/// A file's contents, for either tree.
enum Src {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// The ISO's `boot/grub/grub.cfg` (docs/formats/iso.md, exact).
pub fn grub_cfg(cmdline: &str, reset: bool) -> String {
    let cmdline = installer::grub_quote(cmdline);
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n\tset gfxmode=auto\n\tset gfxpayload=text\n\tlinux /boot/vmlinuz {cmdline}{extra}\n\tinitrd /boot/initramfs.xz\n}}\n"
        )
    };
    let mut cfg = String::from(
        "set default=0\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n",
    );
    cfg.push_str(&entry("Talos ISO", ""));
    if reset {
        cfg.push('\n');
        cfg.push_str(&entry(
            "Reset Talos installation",
            " talos.experimental.wipe=system",
        ));
    }
    cfg
}

fn ceil_mib(p: &Path) -> Result<u64> {
    let len = std::fs::metadata(p)
        .code(ExitCode::Io, || format!("stat {}", p.display()))?
        .len();
    Ok(len.div_ceil(MIB) * MIB)
}

/// Files of the UEFI side, as (path, source, read-only): the ESP image's contents, of which
/// `EFI/` and `loader/` are mirrored in the ISO 9660 tree. With a UKI, systemd-boot finds it in
/// `EFI/Linux/`; without one, a type #1 entry points at the kernel and initramfs on the ESP.
fn uefi_files(
    p: &Profile,
    kernel: &Path,
    initramfs: &Path,
    efi: &super::efi::BootSet,
    cmdline: &str,
) -> Result<Vec<(String, Src, bool)>> {
    let value = |what: &str, v: &str| {
        installer::entry_value(what, v)
            .map(str::to_string)
            .map_err(crate::error::Error::from_install)
    };
    let os = if p.name.is_empty() {
        "Talos"
    } else {
        p.name.as_str()
    };
    let entry = format!("{os}-{}", p.version);
    let efi_name = if p.arch == "arm64" {
        "BOOTAA64.EFI"
    } else {
        "BOOTX64.EFI"
    };
    let conf = installer::loader_conf(efi.enroll).map_err(Error::from_install)?;
    let mut files = vec![
        (
            format!("EFI/BOOT/{efi_name}"),
            Src::Path(efi.sd_boot.clone()),
            false,
        ),
        (
            "loader/loader.conf".into(),
            Src::Bytes(conf.into_bytes()),
            false,
        ),
        // a zeroed, read-only seed: systemd-boot must not try to write to the medium
        ("loader/random-seed".into(), Src::Bytes(vec![0; 32]), true),
    ];
    for (name, data) in &efi.keys {
        files.push((
            format!("loader/keys/auto/{name}"),
            Src::Bytes(data.clone()),
            false,
        ));
    }
    if let Some(cert) = &efi.cert_der {
        files.push((
            "EFI/keys/uki-signing-cert.der".into(),
            Src::Bytes(cert.clone()),
            false,
        ));
    }
    if let Some(uki) = &efi.uki {
        files.push((
            format!("EFI/Linux/{entry}.efi"),
            Src::Path(uki.clone()),
            false,
        ));
        return Ok(files);
    }
    let conf = format!(
        "title {os} ({ver})\nversion {ver}\nlinux /{entry}/vmlinuz\ninitrd /{entry}/initramfs.xz\noptions {cmdline}\n",
        os = value("the OS name", os)?,
        ver = value("the version", &p.version)?,
        cmdline = value("the kernel command line", cmdline)?,
    );
    files.extend([
        (
            format!("loader/entries/{entry}.conf"),
            Src::Bytes(conf.into_bytes()),
            false,
        ),
        (
            format!("{entry}/vmlinuz"),
            Src::Path(kernel.to_path_buf()),
            false,
        ),
        (
            format!("{entry}/initramfs.xz"),
            Src::Path(initramfs.to_path_buf()),
            false,
        ),
    ]);
    Ok(files)
}

/// Inputs of an ISO build.
#[derive(Debug)]
pub struct IsoInputs<'a> {
    /// Kernel.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initramfs: &'a Path,
    /// The UEFI side: systemd-boot, the UKI, SecureBoot files.
    pub efi: &'a super::efi::BootSet,
    /// GRUB's images (`eltorito.img` and `boot_hybrid.img` are read).
    pub grub: &'a crate::inputs::GrubImages,
}

/// Writes the ISO into `out` (a new, empty file).
pub fn write_iso(
    p: &Profile,
    cmdline: &str,
    inp: &IsoInputs<'_>,
    epoch: i64,
    out: &mut File,
) -> Result<()> {
    let bootloader = p
        .output
        .iso_options
        .as_ref()
        .map(|o| o.bootloader.as_str())
        .filter(|b| !b.is_empty())
        .unwrap_or(if p.arch == "amd64" {
            "dual-boot"
        } else {
            "sd-boot"
        });
    let hybrid = match bootloader {
        // SecureBoot ISOs are UEFI-only (docs/formats/iso.md)
        _ if p.is_secureboot() => false,
        "dual-boot" => true,
        "sd-boot" => false,
        other => {
            return Err(Error::unsupported(format!(
                "field output.isoOptions.bootloader: {other} ISOs are not implemented yet (dual-boot and sd-boot are)"
            )));
        }
    };
    if hybrid && p.arch != "amd64" {
        return Err(Error::invalid(
            "field output.isoOptions.bootloader: dual-boot ISOs are amd64 only",
        ));
    }
    let files = uefi_files(p, inp.kernel, inp.initramfs, inp.efi, cmdline)?;

    // efiboot.img: 10 MiB + the rounded-up sizes of what it holds (docs/formats/iso.md), but at least
    // 40 MiB: EDK2 takes the FAT type from the cluster count, so the image must have 65525+
    // clusters to be read as FAT32 (Talos's UKIs always make it that large; our kernel and
    // initramfs are smaller). spc: the largest of 8, 4, 2, 1 keeping 65525 + 2048 clusters.
    let payload = match &inp.efi.uki {
        Some(uki) => ceil_mib(uki)?,
        None => ceil_mib(inp.kernel)? + ceil_mib(inp.initramfs)?,
    };
    let size = (10 * MIB + ceil_mib(&inp.efi.sd_boot)? + payload).max(MIN_ESP);
    let spc = [8u8, 4, 2, 1]
        .into_iter()
        .find(|spc| size / 512 / u64::from(*spc) >= 65525 + 2048)
        .unwrap_or(1);
    let mut tree = fat::Tree::new();
    for (path, src, ro) in &files {
        let s = match src {
            Src::Path(p) => fat::Source::Path(p.clone()),
            Src::Bytes(b) => fat::Source::Bytes(b.clone()),
        };
        tree.add_file(path, s, *ro)
            .code(ExitCode::Assembly, || format!("efiboot.img: {path}"))?;
    }
    let mut opts = fat::FatOptions::new("EFI", 0x1234_ABCD, epoch);
    opts.sectors_per_cluster = Some(spc);
    // the ESP is small (10 MiB + boot files, at least 40 MiB) and mostly zero: it is built in
    // memory (pages stay untouched until written) and streamed into the ISO without a temp file
    let mut esp = std::io::Cursor::new(vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)]);
    fat::write_fat32(&mut esp, 0, size, &opts, &tree)
        .code(ExitCode::Assembly, || "writing efiboot.img".into())?;
    let label = format!("Talos-{}", p.version);
    let q = p.quirks();
    let (volid, volset) = if q.has(Quirk::IsoVolumeId) {
        (iso9660::volume_id(&label), label.clone())
    } else {
        (String::from("CDROM"), String::new())
    };
    let mut b = iso9660::IsoBuilder::new(iso9660::IsoOptions::new(&volid, &volset, epoch));
    let iso_err = |what: &str| {
        let what = what.to_string();
        move |e: iso9660::IsoError| Error::new(ExitCode::Assembly, e).context(what)
    };
    // the ISO 9660 tree mirrors EFI/ and loader/; the entry's kernel and initramfs stay on the
    // ESP only (systemd-boot reads nothing else), GRUB has its own copies under boot/
    for (path, src, ro) in files {
        if !(path.starts_with("EFI/") || path.starts_with("loader/")) {
            continue;
        }
        let s = match src {
            Src::Path(p) => iso9660::Source::Path(p),
            Src::Bytes(b) => iso9660::Source::Bytes(b),
        };
        let mode = if ro { 0o444 } else { 0o644 };
        b.add_file_mode(&path, s, mode).map_err(iso_err(&path))?;
    }
    if hybrid {
        let grub = |n: &str| {
            let path = inp.grub.iso_file(n);
            std::fs::read(&path).code(ExitCode::Io, || format!("GRUB assets: {}", path.display()))
        };
        b.add_file(
            "boot/vmlinuz",
            iso9660::Source::Path(inp.kernel.to_path_buf()),
        )
        .map_err(iso_err("boot/vmlinuz"))?;
        b.add_file(
            "boot/initramfs.xz",
            iso9660::Source::Path(inp.initramfs.to_path_buf()),
        )
        .map_err(iso_err("boot/initramfs.xz"))?;
        let cfg = grub_cfg(cmdline, q.has(Quirk::ResetOption));
        b.add_file(
            "boot/grub/grub.cfg",
            iso9660::Source::Bytes(cfg.into_bytes()),
        )
        .map_err(iso_err("boot/grub/grub.cfg"))?;
        b.add_file(
            "boot/grub/i386-pc/eltorito.img",
            iso9660::Source::Bytes(grub("eltorito.img")?),
        )
        .map_err(iso_err("boot/grub/i386-pc/eltorito.img"))?;
        b.bios_boot(iso9660::BiosBoot::grub("boot/grub/i386-pc/eltorito.img"));
        let hyb = grub("boot_hybrid.img")?;
        let code: [u8; 446] = hyb
            .get(..446)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Error::new(
                    ExitCode::Io,
                    anyhow::anyhow!("GRUB assets: boot_hybrid.img is too short"),
                )
            })?;
        b.hybrid_mbr(Some(code));
        b.partition_table(iso9660::PartitionTable::Gpt);
    } else {
        b.partition_table(iso9660::PartitionTable::Mbr);
    }
    b.efi_image(iso9660::Source::Bytes(esp.into_inner()))
        .map_err(iso_err("efiboot.img"))?;
    b.write(out).map_err(iso_err("writing the ISO"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_grub_cfg_matches_spec() {
        let want = "set default=0\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n\
menuentry \"Talos ISO\" {\n\tset gfxmode=auto\n\tset gfxpayload=text\n\tlinux /boot/vmlinuz a=1 b\\;c\n\tinitrd /boot/initramfs.xz\n}\n\n\
menuentry \"Reset Talos installation\" {\n\tset gfxmode=auto\n\tset gfxpayload=text\n\tlinux /boot/vmlinuz a=1 b\\;c talos.experimental.wipe=system\n\tinitrd /boot/initramfs.xz\n}\n";
        assert_eq!(grub_cfg("a=1 b;c", true), want);
        assert!(!grub_cfg("a", false).contains("Reset"));
    }
}
