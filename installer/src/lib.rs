//! The installer library: what goes on a disk and where.
//!
//! In: an [`ImageSpec`] (size, sector size, bootloader, boot files, cmdline, META values).
//! Out: a disk image written by offset into a sparse file: protective MBR + GPT in the Talos
//! layout (spec §4.1, §4.2), the EFI system partition as FAT32 built in Rust, and META in the
//! Talos ADV format (spec §5). No root, no loop device, no external tool.
//!
//! Boot entries: the sd-boot layout uses a Boot Loader Specification type #1 entry
//! (`loader/entries/<name>.conf` pointing at the kernel and initramfs on the ESP) until UKIs
//! are built; Talos puts a UKI at `EFI/Linux/Talos-<version>.efi` instead.

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

/// Bootloader layouts (spec §4.1).
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
}

/// The partitions of a layout, in order (spec §4.1), with label-derived GUIDs.
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
    match spec.bootloader {
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
    }
}

/// Plans the partition table for a spec.
pub fn plan(spec: &ImageSpec) -> Result<Layout, InstallError> {
    Ok(gpt::plan(
        spec.disk_size,
        spec.sector_size,
        0,
        gpt::guid_from_label("talos-image-disk"),
        &partitions(spec),
    )?)
}

fn efi_arch_name(arch: &str) -> Result<&'static str, InstallError> {
    match arch {
        "amd64" => Ok("BOOTX64.efi"),
        "arm64" => Ok("BOOTAA64.efi"),
        other => Err(InstallError::Unsupported(format!("architecture {other:?}"))),
    }
}

/// The sd-boot ESP tree (spec §4.3 step 2, with a type #1 entry instead of a UKI).
pub fn sdboot_tree(spec: &ImageSpec) -> Result<fat::Tree, InstallError> {
    let mut t = fat::Tree::new();
    let entry = format!("{}-{}", spec.os_name, spec.version);
    t.add_file(
        &format!("EFI/boot/{}", efi_arch_name(&spec.arch)?),
        fat::Source::Path(spec.files.sd_boot.clone()),
        false,
    )?;
    t.add_dir("EFI/Linux")?;
    t.add_file(
        "loader/loader.conf",
        fat::Source::Bytes(b"# systemd-boot configuration\n\ntimeout 10\n".to_vec()),
        false,
    )?;
    let conf = format!(
        "title {name} ({ver})\nversion {ver}\nlinux /{entry}/vmlinuz\ninitrd /{entry}/initramfs.xz\noptions {cmdline}\n",
        name = spec.os_name,
        ver = spec.version,
        cmdline = spec.cmdline,
    );
    t.add_file(
        &format!("loader/entries/{entry}.conf"),
        fat::Source::Bytes(conf.into_bytes()),
        false,
    )?;
    t.add_file(
        &format!("{entry}/vmlinuz"),
        fat::Source::Path(spec.files.kernel.clone()),
        false,
    )?;
    t.add_file(
        &format!("{entry}/initramfs.xz"),
        fat::Source::Path(spec.files.initramfs.clone()),
        false,
    )?;
    Ok(t)
}

/// Writes the whole image into `out` (which is truncated to `disk_size` first, so unwritten
/// regions stay sparse) and returns the partition layout.
pub fn write_image(out: &mut File, spec: &ImageSpec) -> Result<Layout, InstallError> {
    // dual-boot: the ESP is the sd-boot one; BIOS (core.img) and BOOT (GRUB files) stay empty
    // until GRUB is implemented, so such images boot with UEFI only.
    if spec.bootloader == Bootloader::Grub {
        return Err(InstallError::Unsupported(
            "bootloader grub is not implemented yet".into(),
        ));
    }
    let layout = plan(spec)?;
    out.set_len(0).map_err(io_err("image"))?;
    out.set_len(spec.disk_size).map_err(io_err("image"))?;
    let s = spec.sector_size;
    let esp = layout
        .by_name("EFI")
        .ok_or_else(|| InstallError::Unsupported("layout without EFI".into()))?;
    let mut opts = fat::FatOptions::new("EFI", 0x1234_ABCD, spec.epoch);
    opts.sector_size =
        u16::try_from(s).map_err(|_| InstallError::Unsupported(format!("sector size {s}")))?;
    fat::write_fat32(out, esp.offset(s), esp.size(s), &opts, &sdboot_tree(spec)?)?;
    if !spec.meta.is_empty() {
        let meta = layout
            .by_name("META")
            .ok_or_else(|| InstallError::Unsupported("layout without META".into()))?;
        out.seek(SeekFrom::Start(meta.offset(s)))
            .map_err(io_err("META"))?;
        out.write_all(&spec.meta.to_partition())
            .map_err(io_err("META"))?;
    }
    layout.write(out)?;
    out.flush().map_err(io_err("image"))?;
    Ok(layout)
}
