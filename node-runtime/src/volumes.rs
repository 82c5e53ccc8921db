//! An installed system's volumes (docs/formats/install.md): STATE and EPHEMERAL of the boot
//! disk, and which installed version booted.
//!
//! Stage 2 runs [`mount_installed`] after META, on the disk META came from. In: that disk's
//! GPT, its partitions' device nodes, the boot loader's state (systemd-boot's
//! `LoaderEntrySelected` variable, or GRUB's default entry in BOOT's `grub/grub.cfg`). Out:
//! STATE (ext4) mounted at `/system/state` and EPHEMERAL (ext4) at `/var`, the boot counter
//! `/var/lib/node-runtime/boots` incremented, the lines `volume name=… device=… fs=ext4
//! mount=…` and the version for the ready line. A disk without both partitions is not an
//! installation (an image before its first install, an ISO, PXE): nothing is mounted; nor is
//! one whose partitions do not mount (an install that was cut short).
//! [`unmount`] syncs and unmounts both before a poweroff or reboot.

use crate::console::say;
use crate::mounts::mount_fs;
use anyhow::{Context, Result};
use nix::mount::MsFlags;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where STATE is mounted.
pub const STATE_MOUNT: &str = "/system/state";
/// Where EPHEMERAL is mounted.
pub const EPHEMERAL_MOUNT: &str = "/var";

/// An installation, booted.
#[derive(Debug)]
pub struct Installed {
    /// The disk, e.g. `/dev/vda`.
    pub disk: String,
    /// The booted version, e.g. `v1.14.0` (`unknown` when the boot loader does not say).
    pub version: String,
}

pub use installer::ab::partition_device;

/// The device node of the partition named `label` in the GPT of `disk` (the disk is closed
/// again on return).
pub fn partition_of(disk: &str, label: &str) -> Result<String> {
    let mut f = File::open(disk).with_context(|| format!("opening {disk}"))?;
    let size = f.seek(SeekFrom::End(0))?;
    let layout = gpt::read(&mut f, 512, size).with_context(|| format!("the GPT of {disk}"))?;
    let p = layout
        .by_name(label)
        .with_context(|| format!("{disk} has no {label} partition"))?;
    Ok(partition_device(disk, p.number))
}

fn wait_for(dev: &str) -> Result<()> {
    let start = Instant::now();
    while !Path::new(dev).exists() {
        if start.elapsed() > Duration::from_secs(5) {
            anyhow::bail!("{dev} did not appear");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Mounts STATE and EPHEMERAL of `disk` when it has both; returns the installation.
pub fn mount_installed(disk: &str) -> Result<Option<Installed>> {
    let mut f = File::open(disk).with_context(|| format!("opening {disk}"))?;
    let size = f.seek(SeekFrom::End(0))?;
    let layout =
        gpt::read(&mut f, 512, size).with_context(|| format!("reading the GPT of {disk}"))?;
    let (Some(state), Some(eph)) = (layout.by_name("STATE"), layout.by_name("EPHEMERAL")) else {
        return Ok(None);
    };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut mounted: Vec<&str> = Vec::new();
    for (name, p, target, flags) in [
        ("STATE", state, STATE_MOUNT, nosuid | MsFlags::MS_NOEXEC),
        ("EPHEMERAL", eph, EPHEMERAL_MOUNT, nosuid),
    ] {
        let dev = partition_device(disk, p.number);
        // partitions that do not mount are a half-written install, not an installation: the
        // node goes to maintenance and can be installed again
        if let Err(e) = wait_for(&dev).and_then(|_| mount_fs(&dev, target, "ext4", flags, None)) {
            say(&format!(
                "volume name={name} device={dev} error={:?} installed=false",
                format!("{e:#}")
            ));
            for m in mounted {
                let _ = nix::mount::umount(m);
            }
            return Ok(None);
        }
        mounted.push(target);
        let extra = if name == "EPHEMERAL" {
            format!(" boots={}", count_boot()?)
        } else {
            String::new()
        };
        say(&format!(
            "volume name={name} device={dev} fs=ext4 mount={target}{extra}"
        ));
    }
    let version = booted_version(&mut f, &layout).unwrap_or_else(|| "unknown".into());
    Ok(Some(Installed {
        disk: disk.to_string(),
        version,
    }))
}

/// Increments `/var/lib/node-runtime/boots`, which shows that EPHEMERAL keeps what is
/// written to it from one boot to the next.
fn count_boot() -> Result<u64> {
    use std::io::Write;
    let dir = Path::new(EPHEMERAL_MOUNT).join("lib/node-runtime");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("boots");
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut f = File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{n}")?;
    f.sync_all()?;
    Ok(n)
}

/// The version the boot loader booted: systemd-boot names the entry it chose
/// (`<os>-<version>[~N][+LEFT[-DONE]].efi`, or `.conf` for a type #1 entry); GRUB's entry of
/// the booted slot is `A - <os> <version>`.
fn booted_version(disk: &mut File, layout: &gpt::Layout) -> Option<String> {
    if let Some(entry) = loader_entry_selected() {
        if let Some(v) =
            installer::ab::UkiName::parse(&entry).and_then(|u| u.version().map(str::to_string))
        {
            return Some(v);
        }
        let id = entry.trim_end_matches(".conf");
        return id.split_once('-').map(|(_, v)| v.to_string());
    }
    let boot = layout.by_name("BOOT")?;
    let mut r = fat::read::FatReader::open(&mut *disk, boot.offset(512)).ok()?;
    let mut cfg = Vec::new();
    for (path, e) in r.walk().ok()? {
        if path.trim_start_matches('/') == "grub/grub.cfg" {
            r.read_file(&e, &mut cfg).ok()?;
        }
    }
    let cfg = installer::ab::GrubAb::parse(&String::from_utf8(cfg).ok()?).ok()?;
    // GRUB names the kernel it booted first on the command line (BOOT_IMAGE=/A/vmlinuz): the
    // slot of a one-shot boot after an upgrade is not the default one
    let slot = std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| installer::ab::grub_booted_slot(&c))
        .unwrap_or(cfg.default);
    cfg.slot(slot).map(|s| s.version().to_string())
}

/// `LoaderEntrySelected`, efivarfs mounted first.
pub fn loader_entry_selected() -> Option<String> {
    crate::security::mount_efivars();
    installer::ab::loader_entry_selected()
}

/// Syncs and unmounts EPHEMERAL and STATE; an error when one stays mounted (busy), so that
/// nothing wipes a mounted filesystem.
pub fn unmount_strict() -> Result<()> {
    nix::unistd::sync();
    for target in [EPHEMERAL_MOUNT, STATE_MOUNT] {
        match installer::ab::umount_settling(std::path::Path::new(target)) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => anyhow::bail!("unmounting {target}: {e}"),
        }
    }
    Ok(())
}

/// Syncs and unmounts EPHEMERAL and STATE (read-only if busy), so that the filesystems are
/// clean when the machine goes down.
pub fn unmount() {
    nix::unistd::sync();
    for target in [EPHEMERAL_MOUNT, STATE_MOUNT] {
        if nix::mount::umount(target).is_err() {
            let _ = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }
}
