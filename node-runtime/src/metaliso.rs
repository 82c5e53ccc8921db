//! `talos.config=metal-iso` (docs/formats/machine-config.md, "Sources"): the machine
//! configuration is `config.yaml` on a volume labelled `metal-iso` — an ISO 9660 image (a CD, or
//! a disk or partition holding one) or a FAT filesystem — as Talos reads it.
//!
//! In: the block devices and partitions of `/sys/class/block`, probed by reading their first
//! 36 KiB (the ISO 9660 primary volume descriptor, the FAT boot sector). Out: the text of
//! `config.yaml` (at most [`crate::config::MAX_CONFIG`] bytes), the volume mounted read-only
//! on [`MOUNT`] meanwhile and unmounted after.

use anyhow::{Context, Result, bail};
use nix::mount::MsFlags;
use std::io::Read;
use std::path::Path;

/// The label Talos looks for.
pub const LABEL: &str = "metal-iso";
/// Where the volume is mounted while `config.yaml` is read.
const MOUNT: &str = "/system/metal-iso";

/// The filesystem of a probed volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// ISO 9660.
    Iso9660,
    /// FAT12/16/32.
    Vfat,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Iso9660 => "iso9660",
            Fs::Vfat => "vfat",
        }
    }
}

/// The filesystem and label of the volume whose first bytes are `head` (at least 36 KiB read,
/// or the whole device when shorter).
pub fn probe(head: &[u8]) -> Option<(Fs, String)> {
    // ISO 9660: the primary volume descriptor at 32 KiB (type 1, "CD001", version 1); the
    // volume identifier is 32 d-characters padded with spaces
    if let Some(pvd) = head.get(32768..32768 + 72)
        && pvd[0] == 1
        && &pvd[1..6] == b"CD001"
        && pvd[6] == 1
    {
        let label = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string();
        return Some((Fs::Iso9660, label));
    }
    // FAT: the boot sector's signature, and its label (FAT32 at 0x47, FAT12/16 at 0x2b)
    let bs = head.get(..512)?;
    if bs[510..512] != [0x55, 0xaa] {
        return None;
    }
    let (sig_at, label_at) = if &bs[0x52..0x57] == b"FAT32" {
        (0x42, 0x47)
    } else if &bs[0x36..0x39] == b"FAT" {
        (0x26, 0x2b)
    } else {
        return None;
    };
    // the extended boot signature says the label field is there
    if bs[sig_at] != 0x29 {
        return None;
    }
    let label = String::from_utf8_lossy(&bs[label_at..label_at + 11])
        .trim_end()
        .to_string();
    Some((Fs::Vfat, label))
}

/// Block devices and their partitions (`/sys/class/block` lists both), by name (`sr0`, `vda`,
/// `vda1`, …), sorted.
fn volumes() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !crate::provision::is_virtual_block(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The first volume labelled `metal-iso`: its device and filesystem.
fn find() -> Option<(String, Fs)> {
    for v in volumes() {
        if v.contains('/') {
            continue;
        }
        let dev = format!("/dev/{v}");
        let Ok(f) = std::fs::File::open(&dev) else {
            continue;
        };
        let mut head = Vec::new();
        if f.take(36 << 10).read_to_end(&mut head).is_err() {
            continue;
        }
        if let Some((fs, label)) = probe(&head)
            && label.eq_ignore_ascii_case(LABEL)
        {
            return Some((dev, fs));
        }
    }
    None
}

/// Reads `config.yaml` from the `metal-iso` volume.
pub fn read_config() -> Result<(String, String)> {
    let Some((dev, fs)) = find() else {
        bail!("no volume labelled {LABEL}");
    };
    std::fs::create_dir_all(MOUNT)?;
    nix::mount::mount(
        Some(dev.as_str()),
        MOUNT,
        Some(fs.name()),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("mounting {dev} ({})", fs.name()))?;
    let read = (|| -> Result<String> {
        let path = Path::new(MOUNT).join("config.yaml");
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("{dev}: no config.yaml"))?;
        if !meta.is_file() {
            bail!("{dev}: config.yaml is not a file");
        }
        let mut text = String::new();
        std::fs::File::open(&path)?
            .take(crate::config::MAX_CONFIG as u64 + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("{dev}: reading config.yaml"))?;
        if text.len() > crate::config::MAX_CONFIG {
            bail!(
                "{dev}: config.yaml is more than {} bytes",
                crate::config::MAX_CONFIG
            );
        }
        Ok(text)
    })();
    let _ = nix::mount::umount2(MOUNT, nix::mount::MntFlags::MNT_DETACH);
    read.map(|t| (dev, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_iso9660_and_fat_labels() {
        let mut iso = vec![0u8; 36 << 10];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        iso[32774] = 1;
        let mut id = *b"METAL-ISO                       ";
        iso[32768 + 40..32768 + 72].copy_from_slice(&id);
        assert_eq!(probe(&iso), Some((Fs::Iso9660, "METAL-ISO".into())));
        id[..9].copy_from_slice(b"metal-iso");
        iso[32768 + 40..32768 + 72].copy_from_slice(&id);
        assert_eq!(probe(&iso).unwrap().1, "metal-iso");
        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xaa;
        fat[0x52..0x5a].copy_from_slice(b"FAT32   ");
        fat[0x42] = 0x29;
        fat[0x47..0x52].copy_from_slice(b"metal-iso  ");
        assert_eq!(probe(&fat), Some((Fs::Vfat, "metal-iso".into())));
        let mut fat16 = vec![0u8; 512];
        fat16[510] = 0x55;
        fat16[511] = 0xaa;
        fat16[0x36..0x3e].copy_from_slice(b"FAT16   ");
        fat16[0x26] = 0x29;
        fat16[0x2b..0x36].copy_from_slice(b"NO NAME    ");
        assert_eq!(probe(&fat16), Some((Fs::Vfat, "NO NAME".into())));
        // short, zero, or no signature
        assert_eq!(probe(&[0u8; 100]), None);
        assert_eq!(probe(&vec![0u8; 36 << 10]), None);
        fat16[0x26] = 0;
        assert_eq!(probe(&fat16), None);
    }
}
