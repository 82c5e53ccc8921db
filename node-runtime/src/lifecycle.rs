//! What the installed node's API changes on the machine (docs/formats/api.md): META writes
//! and deletes, and the reset.
//!
//! In: the installation's disk and the request. Out: the change on the disk, a console
//! line, and for the reset a reboot into maintenance mode: STATE (the configuration and its
//! CA key) zeroed whole, EPHEMERAL's first and last 4 MiB zeroed (Talos's fast wipe: no
//! filesystem is found there any more), META's upgrade keys deleted. The boot partitions
//! stay, so the disk boots again, finds no installation and waits for a configuration.

use crate::console::say;
use anyhow::{Context, Result, bail};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

/// META keys of upgrades (Talos's `Upgrade`, `StagedUpgradeImageRef`,
/// `StagedUpgradeInstallOptions`), deleted by a reset.
const UPGRADE_KEYS: [u8; 3] = [0x06, 0x07, 0x08];
/// How much of a large partition the fast wipe zeroes at each end.
const FAST_WIPE: u64 = 4 << 20;

/// One change at a time: META writes read, modify and write both copies, and a reset must
/// not run twice or beside a write.
static CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> Result<std::sync::MutexGuard<'static, ()>> {
    CHANGES
        .lock()
        .map_err(|_| anyhow::anyhow!("an earlier change failed midway"))
}

/// The META of `disk`, to change.
fn meta_of(disk: &str) -> Result<crate::meta::Found> {
    match crate::meta::find(Duration::from_secs(2))? {
        Some(m) if m.disk == disk => Ok(m),
        Some(m) => bail!("META is on {}, not on the installed disk {disk}", m.disk),
        None => bail!("no META partition on {disk}"),
    }
}

/// The META values of the installed disk as they are now.
pub fn meta_values(disk: &str) -> Result<crate::meta::Values> {
    Ok(meta_of(disk)?
        .adv
        .iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect())
}

/// Sets META `key` to `value` on the installed disk.
pub fn meta_write(disk: &str, key: u8, value: &[u8]) -> Result<()> {
    let _one = lock()?;
    let mut m = meta_of(disk)?;
    m.set(key, value)?;
    m.flush()?;
    say(&format!(
        "meta-write disk={disk} key=0x{key:02x} bytes={}",
        value.len()
    ));
    Ok(())
}

/// Deletes META `key` on the installed disk; false when it was not there.
pub fn meta_delete(disk: &str, key: u8) -> Result<bool> {
    let _one = lock()?;
    let mut m = meta_of(disk)?;
    if !m.delete(key) {
        return Ok(false);
    }
    m.flush()?;
    say(&format!("meta-delete disk={disk} keys=0x{key:02x}"));
    Ok(true)
}

/// Zeroes `[off, off + len)` of the open disk.
fn zero(f: &mut std::fs::File, off: u64, len: u64) -> Result<()> {
    let buf = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(off))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The reset: stops everything (`graceful`: SIGTERM first, up to 30 s; else at once),
/// unmounts the volumes, wipes STATE and EPHEMERAL, deletes the upgrade keys, and reboots.
pub fn reset(disk: &str, graceful: bool) -> Result<()> {
    if crate::upgrade::running() {
        bail!("an upgrade is running");
    }
    let _one = lock()?;
    let secs = crate::services::stop_all(Duration::from_secs(if graceful { 30 } else { 0 }));
    say(&format!(
        "reset disk={disk} graceful={graceful} stopped_in_s={secs}"
    ));
    crate::volumes::unmount_strict()?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {disk}"))?;
    let size = f.seek(SeekFrom::End(0))?;
    let layout = gpt::read(&mut f, 512, size).with_context(|| format!("the GPT of {disk}"))?;
    for label in ["STATE", "EPHEMERAL"] {
        let p = layout
            .by_name(label)
            .with_context(|| format!("{disk} has no {label}"))?;
        let (off, len) = (p.offset(512), p.size(512));
        if label == "STATE" || len <= 2 * FAST_WIPE {
            zero(&mut f, off, len)?;
        } else {
            zero(&mut f, off, FAST_WIPE)?;
            zero(&mut f, off + len - FAST_WIPE, FAST_WIPE)?;
        }
        say(&format!("reset wiped={label} bytes={len}"));
    }
    f.sync_all()?;
    drop(f);
    let mut m = meta_of(disk)?;
    let deleted: Vec<String> = UPGRADE_KEYS
        .iter()
        .filter(|k| m.delete(**k))
        .map(|k| format!("0x{k:02x}"))
        .collect();
    m.flush()?;
    say(&format!(
        "reset meta-deleted={} reboot=true",
        if deleted.is_empty() {
            "none".to_string()
        } else {
            deleted.join(",")
        }
    ));
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    Ok(())
}
