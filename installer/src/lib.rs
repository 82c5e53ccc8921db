//! The installer library: what goes on a disk and where.
//!
//! In: an [`ImageSpec`] (size, sector size, bootloader, boot files, cmdline, META values).
//! Out: a disk image written by offset into a sparse file: protective MBR + GPT in the Talos
//! layout (docs/formats/disk-layout.md), the EFI system partition as FAT32 built in Rust, and
//! META in the Talos ADV format (docs/formats/meta.md). No root, no loop device, no external tool.
//!
//! GRUB (grub and dual-boot layouts): `boot.img` in the MBR and `core.img` in the BIOS boot
//! partition, patched as docs/formats/disk-layout.md describes, and a BOOT partition holding
//! `A/vmlinuz`, `A/initramfs.xz` and `grub/grub.cfg`. BOOT is FAT32 (Talos uses XFS): GRUB reads
//! both and FAT32 is written in Rust here.
//!
//! Boot entries: with a UKI (Talos ≥ 1.10, or SecureBoot), the sd-boot layout puts it at
//! `EFI/Linux/<os>-<version>.efi`, where systemd-boot finds it by itself (a Boot Loader
//! Specification type #2 entry); without one, a type #1 entry (`loader/entries/<name>.conf`)
//! points at the kernel and initramfs on the ESP, as for the Talos versions before UKIs.

pub mod ab;

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub use gpt::Layout;

const MIB: u64 = 1024 * 1024;

/// Errors of the installer library.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Partition table problem.
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    /// ESP filesystem problem.
    #[error("EFI partition: {0}")]
    Fat(#[from] fat::FatError),
    /// Unsupported request.
    #[error("{0}")]
    Unsupported(String),
    /// A value that cannot be written into a boot configuration as it is.
    #[error("{0}")]
    Value(String),
    /// I/O on the image.
    #[error("writing {what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// Cause.
        source: io::Error,
    },
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        what: what.to_string(),
        source,
    }
}

/// Bootloader layouts (docs/formats/disk-layout.md, "Partitions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    /// systemd-boot on a large ESP, then META.
    SdBoot,
    /// GRUB: EFI, BIOS, BOOT, META.
    Grub,
    /// Both: large ESP, BIOS, BOOT, META (amd64 only).
    DualBoot,
}

impl Bootloader {
    /// Parses the profile spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sd-boot" => Self::SdBoot,
            "grub" => Self::Grub,
            "dual-boot" => Self::DualBoot,
            _ => return None,
        })
    }
}

/// Boot files taken from the input assets.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// systemd-boot EFI binary.
    pub sd_boot: PathBuf,
    /// GRUB images (grub and dual-boot layouts).
    pub grub: Option<GrubFiles>,
    /// The UKI systemd-boot boots (`EFI/Linux/<os>-<version>.efi`); `None`: a type #1 entry.
    pub uki: Option<PathBuf>,
    /// SecureBoot key databases for `loader/keys/auto/` (`PK.auth`, `KEK.auth`, `db.auth`).
    pub enroll_keys: Vec<(String, Vec<u8>)>,
    /// `loader.conf`'s `secure-boot-enroll` value, when it has one.
    pub secure_boot_enroll: Option<String>,
}

/// GRUB images made by grub-mkimage with the prefix `(hd0,gpt3)/grub`
/// (docs/formats/disk-layout.md).
#[derive(Debug, Clone)]
pub struct GrubFiles {
    /// i386-pc `boot.img` (the MBR boot code; amd64 only).
    pub boot_img: Option<PathBuf>,
    /// i386-pc `core.img` (goes into the BIOS boot partition; amd64 only).
    pub core_img: Option<PathBuf>,
    /// x86_64-efi GRUB (`EFI/boot/BOOTX64.efi` of the grub layout).
    pub efi_img: PathBuf,
}

/// Everything needed to write a disk image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `amd64` or `arm64`.
    pub arch: String,
    /// Total size in bytes.
    pub disk_size: u64,
    /// Logical sector size (512 or 4096).
    pub sector_size: u64,
    /// Layout.
    pub bootloader: Bootloader,
    /// BOOT partition size in MiB (2000 from 1.11, else 1000).
    pub boot_size_mib: u64,
    /// OS name, e.g. `Talos`.
    pub os_name: String,
    /// Version, e.g. `v1.14.0`.
    pub version: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Boot files.
    pub files: BootFiles,
    /// META values (written only when non-empty).
    pub meta: adv::Adv,
    /// SOURCE_DATE_EPOCH for filesystem timestamps.
    pub epoch: i64,
    /// GRUB's "Reset" menu entry (Talos ≥ 1.4).
    pub grub_reset_entry: bool,
    /// STATE (100 MiB) and EPHEMERAL (the rest) after META, both left empty: Talos images
    /// before 1.8 carry them; from 1.8 the node creates them on first boot.
    pub data_partitions: bool,
    /// A board's room for firmware: LBAs between the GPT header and its entry array (so the
    /// first partition moves down by as much).
    pub skip_lbas: u64,
    /// A board's files for the ESP root (docs/formats/overlays.md).
    pub esp_extra: Vec<(String, fat::Source)>,
    /// A board's firmware blobs: `(byte offset, file, size)`, written last, each checked
    /// against the disk, the GPT and every partition ([`check_blobs`]).
    pub blobs: Vec<(u64, PathBuf, u64)>,
}

/// The partitions of a layout, in order (docs/formats/disk-layout.md), with label-derived GUIDs.
pub fn partitions(spec: &ImageSpec) -> Vec<gpt::PartitionSpec> {
    let part = |name: &str, type_guid, mib: u64, attributes| gpt::PartitionSpec {
        name: name.into(),
        type_guid,
        guid: gpt::guid_from_label(name),
        size: mib * MIB,
        attributes,
    };
    let big_esp = 100 + 1 + spec.boot_size_mib;
    let bios = || part("BIOS", gpt::types::BIOS_BOOT, 1, 1 << 2);
    let boot = || part("BOOT", gpt::types::LINUX_DATA, spec.boot_size_mib, 0);
    let meta = || part("META", gpt::types::LINUX_DATA, 1, 0);
    let mut parts = match spec.bootloader {
        Bootloader::SdBoot => vec![part("EFI", gpt::types::ESP, big_esp, 0), meta()],
        Bootloader::Grub => vec![part("EFI", gpt::types::ESP, 100, 0), bios(), boot(), meta()],
        Bootloader::DualBoot => {
            vec![
                part("EFI", gpt::types::ESP, big_esp, 0),
                bios(),
                boot(),
                meta(),
            ]
        }
    };
    if spec.data_partitions {
        parts.push(part("STATE", gpt::types::LINUX_DATA, 100, 0));
        let mut ephemeral = part("EPHEMERAL", gpt::types::LINUX_DATA, 1, 0);
        ephemeral.size = gpt::REST;
        parts.push(ephemeral);
    }
    parts
}

/// Plans the partition table for a spec.
pub fn plan(spec: &ImageSpec) -> Result<Layout, InstallError> {
    let layout = table(spec)?;
    check_blobs(spec, &layout)?;
    Ok(layout)
}

/// The partition table of a spec, without the blob checks of [`plan`].
pub fn table(spec: &ImageSpec) -> Result<Layout, InstallError> {
    Ok(gpt::plan(
        spec.disk_size,
        spec.sector_size,
        spec.skip_lbas,
        gpt::guid_from_label("talos-image-disk"),
        &partitions(spec),
    )?)
}

/// Refuses a blob that reaches past the disk or into the MBR, the GPT headers and entry
/// arrays, or a partition.
pub fn check_blobs(spec: &ImageSpec, layout: &Layout) -> Result<(), InstallError> {
    let s = spec.sector_size;
    let array = layout
        .first_usable
        .saturating_sub(layout.entries_lba)
        .max(1);
    let mut taken: Vec<(u64, u64, String)> = vec![
        (0, 2 * s, "the MBR and the GPT header".into()),
        (
            layout.entries_lba * s,
            (layout.entries_lba + array) * s,
            "the GPT entry array".into(),
        ),
        (
            spec.disk_size.saturating_sub((array + 1) * s),
            spec.disk_size,
            "the backup GPT".into(),
        ),
    ];
    for p in &layout.partitions {
        taken.push((
            p.offset(s),
            p.offset(s) + p.size(s),
            format!("partition {} ({})", p.number, p.name),
        ));
    }
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for (off, path, size) in &spec.blobs {
        let end = off.checked_add(*size).unwrap_or(u64::MAX);
        let name = path.display();
        if end > spec.disk_size {
            return Err(InstallError::Value(format!(
                "blob {name} ({size} bytes at byte {off}) ends past the disk ({} bytes)",
                spec.disk_size
            )));
        }
        if let Some((_, _, what)) = taken.iter().find(|(a, b, _)| *off < *b && end > *a) {
            return Err(InstallError::Value(format!(
                "blob {name} ({size} bytes at byte {off}) overlaps {what}"
            )));
        }
        if placed.iter().any(|(a, b)| *off < *b && end > *a) {
            return Err(InstallError::Value(format!(
                "blob {name} ({size} bytes at byte {off}) overlaps another blob"
            )));
        }
        placed.push((*off, end));
    }
    Ok(())
}

pub fn efi_arch_name(arch: &str) -> Result<&'static str, InstallError> {
    match arch {
        "amd64" => Ok("BOOTX64.efi"),
        "arm64" => Ok("BOOTAA64.efi"),
        other => Err(InstallError::Unsupported(format!("architecture {other:?}"))),
    }
}

/// `loader/loader.conf` of an ESP: the menu timeout, and the key enrollment mode when there is
/// one (docs/formats/disk-layout.md).
pub fn loader_conf(secure_boot_enroll: Option<&str>) -> Result<String, InstallError> {
    let mut s = String::from("# systemd-boot configuration\n\ntimeout 10\n");
    if let Some(e) = secure_boot_enroll {
        s.push_str(&format!(
            "\nsecure-boot-enroll {}\n",
            entry_value("the secure-boot-enroll mode", e)?
        ));
    }
    Ok(s)
}

/// The sd-boot ESP tree (docs/formats/disk-layout.md): systemd-boot, `loader.conf`, the key
/// databases, and the UKI in `EFI/Linux/` or a type #1 entry with its kernel and initramfs.
pub fn sdboot_tree(spec: &ImageSpec) -> Result<fat::Tree, InstallError> {
    let mut t = fat::Tree::new();
    let f = &spec.files;
    let entry = format!("{}-{}", spec.os_name, spec.version);
    if entry.contains('/') {
        return Err(InstallError::Value(format!(
            "the boot entry name {entry:?} holds a '/'"
        )));
    }
    t.add_file(
        &format!("EFI/boot/{}", efi_arch_name(&spec.arch)?),
        fat::Source::Path(f.sd_boot.clone()),
        false,
    )?;
    t.add_dir("EFI/Linux")?;
    t.add_file(
        "loader/loader.conf",
        fat::Source::Bytes(loader_conf(f.secure_boot_enroll.as_deref())?.into_bytes()),
        false,
    )?;
    for (name, data) in &f.enroll_keys {
        t.add_file(
            &format!("loader/keys/auto/{name}"),
            fat::Source::Bytes(data.clone()),
            false,
        )?;
    }
    if let Some(uki) = &f.uki {
        t.add_file(
            &format!("EFI/Linux/{entry}.efi"),
            fat::Source::Path(uki.clone()),
            false,
        )?;
        return Ok(t);
    }
    let conf = format!(
        "title {name} ({ver})\nversion {ver}\nlinux /{entry}/vmlinuz\ninitrd /{entry}/initramfs.xz\noptions {cmdline}\n",
        name = entry_value("the OS name", &spec.os_name)?,
        ver = entry_value("the version", &spec.version)?,
        cmdline = entry_value("the kernel command line", &spec.cmdline)?,
    );
    t.add_file(
        &format!("loader/entries/{entry}.conf"),
        fat::Source::Bytes(conf.into_bytes()),
        false,
    )?;
    t.add_file(
        &format!("{entry}/vmlinuz"),
        fat::Source::Path(f.kernel.clone()),
        false,
    )?;
    t.add_file(
        &format!("{entry}/initramfs.xz"),
        fat::Source::Path(f.initramfs.clone()),
        false,
    )?;
    Ok(t)
}

/// A value for a Boot Loader Specification entry line (`key value` to the end of the line):
/// a control character (a newline above all) would end the line or start another, so it is
/// refused.
pub fn entry_value<'a>(what: &str, v: &'a str) -> Result<&'a str, InstallError> {
    if v.chars().any(char::is_control) {
        return Err(InstallError::Value(format!(
            "{what} holds a control character, which a loader entry cannot carry: {v:?}"
        )));
    }
    Ok(v)
}

/// GRUB quoting: each of `\{}&$|;<>"` gets a backslash (Talos `grub/encode.go`).
pub fn grub_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\{}&$|;<>\"".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// The BOOT partition's `grub/grub.cfg` (docs/formats/disk-layout.md).
pub fn grub_cfg(spec: &ImageSpec) -> String {
    // every value goes through GRUB's quoting, the title inside its double quotes too
    let name = grub_quote(&format!("A - {} {}", spec.os_name, spec.version));
    let cmdline = grub_quote(&spec.cmdline);
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /A/vmlinuz {cmdline}{extra}\n  initrd /A/initramfs.xz\n}}\n"
        )
    };
    let mut cfg = format!(
        "set default=\"{name}\"\n\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n"
    );
    cfg.push_str(&entry(&name, ""));
    if spec.grub_reset_entry {
        cfg.push_str(&entry(
            &grub_quote(&format!(
                "Reset {} installation and return to maintenance mode",
                spec.os_name
            )),
            " talos.experimental.wipe=system:EPHEMERAL,STATE",
        ));
    }
    cfg
}

/// The BOOT partition tree of the grub and dual-boot layouts.
pub fn grub_boot_tree(spec: &ImageSpec) -> Result<fat::Tree, InstallError> {
    let mut t = fat::Tree::new();
    t.add_file(
        "A/vmlinuz",
        fat::Source::Path(spec.files.kernel.clone()),
        false,
    )?;
    t.add_file(
        "A/initramfs.xz",
        fat::Source::Path(spec.files.initramfs.clone()),
        false,
    )?;
    t.add_file(
        "grub/grub.cfg",
        fat::Source::Bytes(grub_cfg(spec).into_bytes()),
        false,
    )?;
    Ok(t)
}

/// GRUB's BIOS blocklist patches (docs/formats/disk-layout.md): `boot.img` gets the BIOS
/// partition's first LBA at 0x5C and its drive check NOPed at 0x66; `core.img` gets LBA + 1 at
/// 0x1F4.
pub fn patch_grub_bios(
    boot_img: &mut [u8],
    core_img: &mut [u8],
    bios_lba: u64,
) -> Result<(), InstallError> {
    if boot_img.len() != 512 || core_img.len() < 512 {
        return Err(InstallError::Unsupported(format!(
            "GRUB images have unexpected sizes (boot.img {}, core.img {})",
            boot_img.len(),
            core_img.len()
        )));
    }
    boot_img[0x5C..0x64].copy_from_slice(&bios_lba.to_le_bytes());
    boot_img[0x66] = 0x90;
    boot_img[0x67] = 0x90;
    core_img[0x1F4..0x1FC].copy_from_slice(&(bios_lba + 1).to_le_bytes());
    Ok(())
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, InstallError> {
    std::fs::read(p).map_err(|source| InstallError::Io {
        what: p.display().to_string(),
        source,
    })
}

fn part<'a>(layout: &'a Layout, name: &str) -> Result<&'a gpt::Partition, InstallError> {
    layout
        .by_name(name)
        .ok_or_else(|| InstallError::Unsupported(format!("layout without {name}")))
}

/// The ESP's tree: GRUB's EFI image (grub layout) or systemd-boot's tree, and a board's
/// files at the root; a board file at a path the layout uses is an error.
pub fn esp_tree(spec: &ImageSpec) -> Result<fat::Tree, InstallError> {
    let grub = spec.files.grub.as_ref();
    let mut esp_tree = match (spec.bootloader, grub) {
        (Bootloader::Grub, Some(g)) => {
            let mut t = fat::Tree::new();
            t.add_file(
                &format!("EFI/boot/{}", efi_arch_name(&spec.arch)?),
                fat::Source::Path(g.efi_img.clone()),
                false,
            )?;
            t
        }
        // dual-boot drops GRUB's EFI image: UEFI boots systemd-boot (docs/formats/disk-layout.md)
        _ => sdboot_tree(spec)?,
    };
    // a board's files go to the ESP root, where its firmware looks (docs/formats/overlays.md)
    for (path, src) in &spec.esp_extra {
        esp_tree
            .add_file(path, src.clone(), false)
            .map_err(|e| InstallError::Value(format!("a board file for the ESP, {path}: {e}")))?;
    }
    Ok(esp_tree)
}

/// Writes the whole image into `out` (which is truncated to `disk_size` first, so unwritten
/// regions stay sparse) and returns the partition layout.
pub fn write_image(out: &mut File, spec: &ImageSpec) -> Result<Layout, InstallError> {
    let grub = match spec.bootloader {
        Bootloader::SdBoot => None,
        Bootloader::Grub | Bootloader::DualBoot => {
            Some(spec.files.grub.as_ref().ok_or_else(|| {
                InstallError::Unsupported(
                    "the grub and dual-boot layouts need the GRUB assets".into(),
                )
            })?)
        }
    };
    let layout = plan(spec)?;
    out.set_len(0).map_err(io_err("image"))?;
    out.set_len(spec.disk_size).map_err(io_err("image"))?;
    let s = spec.sector_size;
    let esp = part(&layout, "EFI")?;
    let mut opts = fat::FatOptions::new("EFI", 0x1234_ABCD, spec.epoch);
    opts.sector_size =
        u16::try_from(s).map_err(|_| InstallError::Unsupported(format!("sector size {s}")))?;
    let esp_tree = esp_tree(spec)?;
    fat::write_fat32(out, esp.offset(s), esp.size(s), &opts, &esp_tree)?;
    if let Some(g) = grub {
        let boot = part(&layout, "BOOT")?;
        let mut bopts = opts.clone();
        bopts.label = "BOOT".into();
        fat::write_fat32(
            out,
            boot.offset(s),
            boot.size(s),
            &bopts,
            &grub_boot_tree(spec)?,
        )?;
        if spec.arch == "amd64" {
            let bios = part(&layout, "BIOS")?;
            let bios_image = |p: &Option<PathBuf>, name: &str| match p {
                Some(p) => read_file(p),
                None => Err(InstallError::Unsupported(format!(
                    "an amd64 GRUB layout needs GRUB's {name}"
                ))),
            };
            let mut boot_img = bios_image(&g.boot_img, "boot.img")?;
            let mut core_img = bios_image(&g.core_img, "core.img")?;
            if core_img.len() as u64 > bios.size(s) {
                return Err(InstallError::Unsupported(format!(
                    "core.img ({} bytes) does not fit the BIOS boot partition",
                    core_img.len()
                )));
            }
            patch_grub_bios(&mut boot_img, &mut core_img, bios.first_lba)?;
            out.seek(SeekFrom::Start(bios.offset(s)))
                .map_err(io_err("core.img"))?;
            out.write_all(&core_img).map_err(io_err("core.img"))?;
            // only the boot code: the protective MBR's table and signature come from the GPT
            out.seek(SeekFrom::Start(0)).map_err(io_err("boot.img"))?;
            out.write_all(&boot_img[..446])
                .map_err(io_err("boot.img"))?;
        }
    }
    for (off, path, size) in &spec.blobs {
        let data = read_file(path)?;
        if data.len() as u64 != *size {
            return Err(InstallError::Value(format!(
                "blob {} changed size ({} bytes, {size} expected)",
                path.display(),
                data.len()
            )));
        }
        out.seek(SeekFrom::Start(*off))
            .map_err(io_err("a board blob"))?;
        out.write_all(&data).map_err(io_err("a board blob"))?;
    }
    if !spec.meta.is_empty() {
        let meta = part(&layout, "META")?;
        out.seek(SeekFrom::Start(meta.offset(s)))
            .map_err(io_err("META"))?;
        out.write_all(&spec.meta.to_partition())
            .map_err(io_err("META"))?;
    }
    layout.write(out)?;
    out.flush().map_err(io_err("image"))?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec {
            arch: "amd64".into(),
            disk_size: 0,
            sector_size: 512,
            bootloader: Bootloader::DualBoot,
            boot_size_mib: 2000,
            os_name: "Talos".into(),
            version: "v1.14.0".into(),
            cmdline: "talos.platform=metal x=a;b\"c".into(),
            files: BootFiles {
                kernel: "k".into(),
                initramfs: "i".into(),
                sd_boot: "s".into(),
                grub: None,
                uki: None,
                enroll_keys: Vec::new(),
                secure_boot_enroll: None,
            },
            meta: adv::Adv::new(),
            epoch: 0,
            grub_reset_entry: true,
            data_partitions: false,
            skip_lbas: 0,
            esp_extra: Vec::new(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn grub_cfg_matches_spec() {
        let want = r#"set default="A - Talos v1.14.0"

set timeout=3

insmod all_video

terminal_input console
terminal_output console

menuentry "A - Talos v1.14.0" {
  set gfxmode=auto
  set gfxpayload=text
  linux /A/vmlinuz talos.platform=metal x=a\;b\"c
  initrd /A/initramfs.xz
}
menuentry "Reset Talos installation and return to maintenance mode" {
  set gfxmode=auto
  set gfxpayload=text
  linux /A/vmlinuz talos.platform=metal x=a\;b\"c talos.experimental.wipe=system:EPHEMERAL,STATE
  initrd /A/initramfs.xz
}
"#;
        assert_eq!(grub_cfg(&spec()), want);
        assert_eq!(grub_quote(r#"a\b{c}&$|;<>""#), r#"a\\b\{c\}\&\$\|\;\<\>\""#);
        let mut no_reset = spec();
        no_reset.grub_reset_entry = false;
        assert!(!grub_cfg(&no_reset).contains("Reset"));
    }

    #[test]
    fn bios_patches_at_spec_offsets() {
        let mut b = vec![0u8; 512];
        let mut c = vec![0u8; 1024];
        patch_grub_bios(&mut b, &mut c, 4_304_896).unwrap();
        assert_eq!(&b[0x5C..0x64], &4_304_896u64.to_le_bytes());
        assert_eq!(&b[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&c[0x1F4..0x1FC], &4_304_897u64.to_le_bytes());
        assert!(patch_grub_bios(&mut [0u8; 10], &mut c, 1).is_err());
    }
}
