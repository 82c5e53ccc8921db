//! META: read from the boot disk, imported from the kernel cmdline, written back (the
//! partition and its ADV format are described in `docs/formats/meta.md`).
//!
//! Stage 2 runs [`at_boot`] right after mounting the writable points, before the modules,
//! the network and the services. In: the block devices under `/sys/class/block` (whole disks
//! only) and `talos.environment=INSTALLER_META_BASE64=…` on the kernel cmdline
//! (`docs/formats/cmdline.md`). Out: the META values by key — the first disk whose GPT has a
//! partition named `META` (`docs/formats/disk-layout.md`) gives them (copy A, falling back to
//! copy B, else empty), using the same `gpt` and `adv` crates the imager writes with;
//! cmdline keys that disk lacks are added and written into it. The network reads key 0x0a
//! from the result; the ready line summarises all of it. Console lines: `meta …`,
//! `meta absent`, `meta-import …`, `meta-write …`.

use crate::cmdline::Cmdline;
use crate::console::say;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// What was found.
#[derive(Debug)]
pub struct Found {
    /// Disk device, e.g. `/dev/vda`.
    pub disk: String,
    /// Partition number of META.
    pub partition: u32,
    /// The values.
    pub adv: adv::Adv,
    /// Which copy they came from.
    pub source: adv::Source,
    /// Byte offset of the partition on the disk.
    pub offset: u64,
    /// Partition size in bytes (at most [`adv::PARTITION_SIZE`] is used).
    pub len: u64,
}

impl Found {
    /// Value of `key`.
    #[allow(dead_code)]
    pub fn get(&self, key: u8) -> Option<&[u8]> {
        self.adv.get(key)
    }

    /// Sets `key` in memory; [`Found::flush`] writes it.
    pub fn set(&mut self, key: u8, value: &[u8]) -> Result<()> {
        self.adv.set(key, value).context("META")?;
        Ok(())
    }

    /// Deletes `key` in memory; [`Found::flush`] writes it.
    pub fn delete(&mut self, key: u8) -> bool {
        self.adv.delete(key)
    }

    /// Writes both copies of the ADV back to the partition and syncs the disk.
    pub fn flush(&self) -> Result<()> {
        use std::io::Write;
        let part = self.adv.to_partition();
        if (part.len() as u64) > self.len {
            anyhow::bail!("META partition on {} is too small", self.disk);
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&self.disk)
            .with_context(|| format!("opening {} for writing", self.disk))?;
        f.seek(SeekFrom::Start(self.offset))?;
        f.write_all(&part)
            .with_context(|| format!("writing META to {}", self.disk))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", self.disk))?;
        Ok(())
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whole disks, sorted by name (loop and ram devices excluded).
fn disks(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sys)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| !e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn probe(name: &str, sys: &Path, dev: &Path) -> Result<Option<Found>> {
    let base = sys.join(name);
    let sector = read_u64(&base.join("queue/logical_block_size")).unwrap_or(512);
    let size = read_u64(&base.join("size")).unwrap_or(0) * 512;
    if size == 0 {
        return Ok(None);
    }
    let path = dev.join(name);
    let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let Ok(layout) = gpt::read(&mut f, sector, size) else {
        return Ok(None);
    };
    let Some(p) = layout.by_name("META") else {
        return Ok(None);
    };
    let len = p.size(sector).min(adv::PARTITION_SIZE as u64) as usize;
    let mut buf = vec![0u8; adv::PARTITION_SIZE];
    f.seek(SeekFrom::Start(p.offset(sector)))?;
    f.read_exact(&mut buf[..len])
        .with_context(|| format!("reading META from {}", path.display()))?;
    let (adv, source) = adv::Adv::from_partition(&buf)?;
    Ok(Some(Found {
        disk: path.display().to_string(),
        partition: p.number,
        adv,
        source,
        offset: p.offset(sector),
        len: p.size(sector),
    }))
}

/// Looks for META on every disk, retrying until `wait` has passed while disks are present
/// (their partition tables may still be probing); with no disk at all (network boot) it
/// returns at once.
pub fn find(wait: Duration) -> Result<Option<Found>> {
    let sys = Path::new("/sys/class/block");
    let dev = Path::new("/dev");
    let start = Instant::now();
    loop {
        let all = disks(sys);
        for d in &all {
            if let Some(found) = probe(d, sys, dev)? {
                return Ok(Some(found));
            }
        }
        if all.is_empty() || start.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// META values by key.
pub type Values = BTreeMap<u8, Vec<u8>>;

/// META key of disk images (`DiskImageBootloader`), deleted at the first boot as Talos does.
const DISK_IMAGE_BOOTLOADER: u8 = 0x11;

/// Stage 2's META step: finds META (waiting up to 2 s for disks to appear), reports what was
/// found, imports the cmdline keys it lacks and writes those back into it, and deletes the
/// image-mode key 0x11 from the disk (the values returned still show it, as read at boot).
/// Returns every value by key (empty without META and cmdline keys) and the disk META is on.
pub fn at_boot(cmd: &Cmdline) -> Result<(Values, Option<String>)> {
    let mut found = find(Duration::from_secs(2))?;
    let mut values: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    match &found {
        Some(f) => {
            report_found(f);
            values.extend(f.adv.iter().map(|(k, v)| (k, v.to_vec())));
        }
        None => say("meta absent"),
    }
    let added = import_env_meta(cmd, &mut values);
    // keys the installed META lacks are written into it (Talos does the same at boot)
    if let (Some(f), false) = (found.as_mut(), added.is_empty()) {
        write_back(f, &added, &values);
    }
    if let Some(f) = found.as_mut()
        && f.delete(DISK_IMAGE_BOOTLOADER)
    {
        match f.flush() {
            Ok(()) => say(&format!(
                "meta-delete disk={} keys=0x{DISK_IMAGE_BOOTLOADER:02x}",
                f.disk
            )),
            Err(e) => say(&format!(
                "meta-delete disk={} error={:?}",
                f.disk,
                format!("{e:#}")
            )),
        }
    }
    Ok((values, found.map(|f| f.disk)))
}

/// The `meta disk=… partition=… source=… keys=N` line.
fn report_found(f: &Found) {
    let src = match &f.source {
        adv::Source::CopyA => "copy-a".to_string(),
        adv::Source::CopyB(e) => format!("copy-b copy_a_error={:?}", e.to_string()),
        adv::Source::Empty { a, b } => format!(
            "empty copy_a_error={:?} copy_b_error={:?}",
            a.to_string(),
            b.to_string()
        ),
    };
    say(&format!(
        "meta disk={} partition={} source={src} keys={}",
        f.disk,
        f.partition,
        f.adv.len()
    ));
}

/// Imports `talos.environment=INSTALLER_META_BASE64=…` (`docs/formats/meta.md`,
/// `docs/formats/cmdline.md`): keys the META partition lacks are added; keys it has win, as
/// Talos only writes missing keys into an installed META. Returns the keys it added.
fn import_env_meta(cmd: &Cmdline, values: &mut BTreeMap<u8, Vec<u8>>) -> Vec<u8> {
    let mut added = Vec::new();
    let prefix = format!("{}=", adv::env::VAR);
    for env in cmd.get_all("talos.environment") {
        let Some(enc) = env.strip_prefix(&prefix) else {
            continue;
        };
        match adv::env::decode(enc) {
            Ok(pairs) => {
                let total = pairs.len();
                let mut imported = 0;
                for (k, v) in pairs {
                    if let Entry::Vacant(e) = values.entry(k) {
                        e.insert(v.into_bytes());
                        imported += 1;
                        added.push(k);
                    }
                }
                say(&format!(
                    "meta-import from=cmdline keys={total} imported={imported}"
                ));
            }
            Err(e) => say(&format!(
                "meta-import from=cmdline error={:?}",
                e.to_string()
            )),
        }
    }
    added
}

/// Writes the `added` keys (with their `values`) into the META partition `f` and reports it;
/// a failure is reported, not fatal.
fn write_back(f: &mut Found, added: &[u8], values: &BTreeMap<u8, Vec<u8>>) {
    let r = added
        .iter()
        .try_for_each(|k| f.set(*k, &values[k]))
        .and_then(|_| f.flush());
    let keys: Vec<String> = added.iter().map(|k| format!("0x{k:02x}")).collect();
    match r {
        Ok(()) => say(&format!(
            "meta-write disk={} partition={} keys={}",
            f.disk,
            f.partition,
            keys.join(",")
        )),
        Err(e) => say(&format!(
            "meta-write disk={} error={:?}",
            f.disk,
            format!("{e:#}")
        )),
    }
}
