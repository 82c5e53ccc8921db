//! Writes a [`Tree`] as a FAT32 filesystem into a `Write + Seek` sink.
//!
//! In: the sink, a byte offset and size, [`FatOptions`] and the tree. Out: the filesystem
//! bytes inside `[offset, offset + size)` and [`FatStats`].
//!
//! It works in two passes. The planning pass walks the tree depth-first in sorted name order
//! and allocates clusters contiguously: the root directory first (cluster 2), then each
//! directory's own clusters immediately followed by its children in sorted order, where a
//! file takes its clusters and a subdirectory recursively does the same (pre-order). Because
//! every chain is contiguous and allocation is sequential, the used part of the FAT is a run
//! of "next cluster" links ending in end-of-chain markers. The writing pass then writes the
//! reserved sectors (boot sector, FSInfo, backups), the used head of both FATs, every
//! directory (padded to whole clusters) and every file's bytes. Free clusters and the zero
//! tail of the FATs are never written: the caller guarantees the range reads as zeros.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};

use crate::layout::{Geometry, NUM_FATS};
use crate::names::{assign_short_names, lfn_count, lfn_entries};
use crate::tree::{Dir, FileNode, Node};
use crate::{FatError, FatOptions, FatStats, Source, Tree};

/// Attribute: read-only.
pub(crate) const ATTR_READ_ONLY: u8 = 0x01;
/// Attribute: volume label.
pub(crate) const ATTR_VOLUME: u8 = 0x08;
/// Attribute: directory.
pub(crate) const ATTR_DIR: u8 = 0x10;
/// Attribute: archive (set on every file, like mcopy does).
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
/// FAT32 end-of-chain marker (the value mkfs.fat uses).
pub(crate) const EOC: u32 = 0x0FFF_FFFF;
/// Size of the buffer used to stream file contents and FAT entries.
const BUF_SIZE: usize = 64 * 1024;
/// Name used for the output sink in I/O errors.
const OUTPUT: &str = "<output>";
/// Largest number of 32-byte slots in one directory.
const MAX_DIR_SLOTS: u64 = 65536;

fn out_err(source: std::io::Error) -> FatError {
    FatError::Io {
        path: OUTPUT.into(),
        source,
    }
}

/// FAT time and date words for a Unix timestamp, taken as UTC and clamped to the range FAT
/// can store (1980-01-01 00:00:00 ..= 2107-12-31 23:59:59).
fn fat_time_date(unix: i64) -> (u16, u16) {
    let t = unix.clamp(315_532_800, 4_354_819_199);
    let d = civil::from_unix(t);
    let (year, month, day) = (d.year, i64::from(d.month), i64::from(d.day));
    let secs = i64::from(d.hour * 3600 + d.minute * 60 + d.second);
    let time = ((secs / 3600) << 11) | ((secs / 60 % 60) << 5) | ((secs % 60) / 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    // Both fit in 16 bits thanks to the clamp above.
    (time as u16, date as u16)
}

/// Builds a 32-byte short directory entry; every date/time field gets the same stamp.
fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, stamp: (u16, u16)) -> [u8; 32] {
    let (time, date) = stamp;
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[14..16].copy_from_slice(&time.to_le_bytes()); // creation time (10 ms byte 13 stays 0)
    e[16..18].copy_from_slice(&date.to_le_bytes()); // creation date
    e[18..20].copy_from_slice(&date.to_le_bytes()); // last access date
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes()); // write time
    e[24..26].copy_from_slice(&date.to_le_bytes()); // write date
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// The volume label as 11 space-padded bytes, or `None` for an empty label.
fn label_bytes(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    let up = label.to_ascii_uppercase();
    if up.is_empty() {
        return Ok(None);
    }
    let bad = |b: u8| !(0x20..0x7F).contains(&b) || b"\"*+,./:;<=>?[\\]|".contains(&b);
    if up.len() > 11 || up.starts_with(' ') || up.bytes().any(bad) {
        return Err(FatError::InvalidOptions(format!(
            "volume label '{label}' must be 1-11 printable ASCII characters allowed in short \
             names, not starting with a space"
        )));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(Some(out))
}

/// Sequential cluster allocator; records every chain as an extent.
struct Alloc {
    next: u64,
    end: u64,
    extents: Vec<(u32, u32)>,
}

impl Alloc {
    /// Takes `count` (> 0) contiguous clusters for `path`, returning the first.
    fn take(&mut self, count: u64, path: &str) -> Result<u32, FatError> {
        let free = self.end - self.next;
        if count > free {
            let path = if path.is_empty() { "/" } else { path };
            return Err(FatError::NoSpace {
                path: path.to_string(),
                needed: count,
                free,
            });
        }
        // Cluster numbers stay below 0x0FFFFFF7 (the geometry caps the count).
        let first = self.next as u32;
        self.extents.push((first, count as u32));
        self.next += count;
        Ok(first)
    }
}

/// A directory with its clusters allocated and its children's names decided.
struct PlannedDir<'t> {
    /// First cluster of the directory itself.
    cluster: u32,
    /// Cluster stored in `..` (0 when the parent is the root), `None` for the root itself.
    parent: Option<u32>,
    /// Allocated size in bytes (whole clusters).
    bytes: u64,
    children: Vec<Child<'t>>,
}

/// One entry of a planned directory.
struct Child<'t> {
    name: &'t str,
    short: [u8; 11],
    lfn: bool,
    kind: ChildKind<'t>,
}

enum ChildKind<'t> {
    File { file: &'t FileNode, cluster: u32 },
    Dir(PlannedDir<'t>),
}

/// Plans `dir` (at tree path `path`): names its children, allocates its clusters and then,
/// in sorted order, those of its files and (recursively) subdirectories.
fn plan_dir<'t>(
    dir: &'t Dir,
    path: &str,
    parent: Option<u32>,
    fixed_slots: u64,
    geo: &Geometry,
    alloc: &mut Alloc,
) -> Result<PlannedDir<'t>, FatError> {
    let names: Vec<&str> = dir.entries.keys().map(String::as_str).collect();
    let shorts = assign_short_names(&names);
    // `fixed_slots`: the root's volume label entry (if any), or a subdirectory's "." and "..".
    let mut slots = fixed_slots;
    let mut named = Vec::with_capacity(names.len());
    for ((name, node), (short, lfn)) in dir.entries.iter().zip(shorts) {
        slots += 1 + if lfn { lfn_count(name) as u64 } else { 0 };
        named.push((name.as_str(), node, short, lfn));
    }
    if slots > MAX_DIR_SLOTS {
        let path = if path.is_empty() { "/" } else { path };
        return Err(FatError::DirectoryTooLarge {
            path: path.to_string(),
        });
    }
    let clusters = (slots * 32).div_ceil(geo.cluster_bytes()).max(1);
    let cluster = alloc.take(clusters, path)?;
    let mut children = Vec::with_capacity(named.len());
    for (name, node, short, lfn) in named {
        let child_path = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}/{name}")
        };
        let kind = match node {
            Node::File(file) => {
                let count = u64::from(file.size).div_ceil(geo.cluster_bytes());
                let cluster = if count == 0 {
                    0
                } else {
                    alloc.take(count, &child_path)?
                };
                ChildKind::File { file, cluster }
            }
            Node::Dir(sub) => {
                let dotdot = if parent.is_none() { 0 } else { cluster };
                ChildKind::Dir(plan_dir(sub, &child_path, Some(dotdot), 2, geo, alloc)?)
            }
        };
        children.push(Child {
            name,
            short,
            lfn,
            kind,
        });
    }
    Ok(PlannedDir {
        cluster,
        parent,
        bytes: clusters * geo.cluster_bytes(),
        children,
    })
}

/// Everything the writing pass needs besides the sink.
struct Ctx<'a> {
    offset: u64,
    geo: &'a Geometry,
    stamp: (u16, u16),
    label: Option<[u8; 11]>,
    buf: Vec<u8>,
}

impl Ctx<'_> {
    fn seek<W: Seek>(&self, out: &mut W, pos: u64) -> Result<(), FatError> {
        out.seek(SeekFrom::Start(self.offset + pos))
            .map(|_| ())
            .map_err(out_err)
    }

    /// Writes a planned directory's clusters, then its files and subdirectories.
    fn write_dir<W: Write + Seek>(&mut self, out: &mut W, d: &PlannedDir) -> Result<(), FatError> {
        let mut bytes = Vec::with_capacity(d.bytes as usize);
        match d.parent {
            None => {
                if let Some(label) = &self.label {
                    bytes.extend(short_entry(label, ATTR_VOLUME, 0, 0, self.stamp));
                }
            }
            Some(parent) => {
                bytes.extend(short_entry(
                    b".          ",
                    ATTR_DIR,
                    d.cluster,
                    0,
                    self.stamp,
                ));
                bytes.extend(short_entry(b"..         ", ATTR_DIR, parent, 0, self.stamp));
            }
        }
        for c in &d.children {
            if c.lfn {
                lfn_entries(c.name, &c.short)
                    .iter()
                    .for_each(|e| bytes.extend(e));
            }
            let (attr, cluster, size) = match &c.kind {
                ChildKind::Dir(sub) => (ATTR_DIR, sub.cluster, 0),
                ChildKind::File { file, cluster } => {
                    let ro = if file.read_only { ATTR_READ_ONLY } else { 0 };
                    (ATTR_ARCHIVE | ro, *cluster, file.size)
                }
            };
            bytes.extend(short_entry(&c.short, attr, cluster, size, self.stamp));
        }
        bytes.resize(d.bytes as usize, 0);
        self.seek(out, self.geo.cluster_offset(d.cluster))?;
        out.write_all(&bytes).map_err(out_err)?;
        for c in &d.children {
            match &c.kind {
                ChildKind::Dir(sub) => self.write_dir(out, sub)?,
                ChildKind::File { file, cluster } => {
                    if *cluster != 0 {
                        self.seek(out, self.geo.cluster_offset(*cluster))?;
                    }
                    self.write_file(out, file)?;
                }
            }
        }
        Ok(())
    }

    /// Streams one file's contents to the current sink position.
    fn write_file<W: Write>(&mut self, out: &mut W, f: &FileNode) -> Result<(), FatError> {
        let host = match &f.src {
            Source::Bytes(b) => return out.write_all(b).map_err(out_err),
            Source::Path(p) => p,
        };
        let in_err = |source| FatError::Io {
            path: host.display().to_string(),
            source,
        };
        let changed = || FatError::SourceChanged {
            path: host.display().to_string(),
        };
        let mut input = File::open(host).map_err(in_err)?;
        let mut left = u64::from(f.size);
        loop {
            let want = left.min(self.buf.len() as u64) as usize;
            // With nothing left, read one byte to check that the file really ends here.
            let n = match input.read(&mut self.buf[..want.max(1)]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(in_err(e)),
            };
            match (left, n) {
                (0, 0) => return Ok(()),
                (0, _) | (_, 0) => return Err(changed()),
                _ => {}
            }
            out.write_all(&self.buf[..n]).map_err(out_err)?;
            left -= n as u64;
        }
    }

    /// Writes the used head of both FATs: the two reserved entries, then every chain.
    fn write_fats<W: Write + Seek>(
        &self,
        out: &mut W,
        extents: &[(u32, u32)],
    ) -> Result<(), FatError> {
        let mut buf = Vec::with_capacity(BUF_SIZE);
        for n in 0..NUM_FATS {
            self.seek(out, self.geo.fat_offset(n))?;
            buf.clear();
            buf.extend(0x0FFF_FFF8u32.to_le_bytes());
            buf.extend(EOC.to_le_bytes());
            for &(start, len) in extents {
                for c in start..start + len {
                    let next = if c + 1 == start + len { EOC } else { c + 1 };
                    buf.extend(next.to_le_bytes());
                    if buf.len() >= BUF_SIZE {
                        out.write_all(&buf).map_err(out_err)?;
                        buf.clear();
                    }
                }
            }
            out.write_all(&buf).map_err(out_err)?;
        }
        Ok(())
    }
}

/// The boot sector as `mkfs.fat -F 32` writes it (without the boot code stub).
fn boot_sector(geo: &Geometry, opts: &FatOptions, label: Option<[u8; 11]>) -> Vec<u8> {
    let mut s = vec![0u8; geo.sector_size as usize];
    s[..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    s[3..11].copy_from_slice(b"mkfs.fat");
    s[11..13].copy_from_slice(&opts.sector_size.to_le_bytes());
    s[13] = geo.spc as u8;
    s[14..16].copy_from_slice(&(geo.reserved as u16).to_le_bytes());
    s[16] = NUM_FATS as u8;
    // Root entries, 16-bit total sectors and 16-bit FAT size stay 0 on FAT32.
    s[21] = 0xF8; // media: fixed disk
    s[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track
    s[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads
    s[32..36].copy_from_slice(&(geo.total_sectors as u32).to_le_bytes());
    s[36..40].copy_from_slice(&(geo.fat_sectors as u32).to_le_bytes());
    s[44..48].copy_from_slice(&2u32.to_le_bytes()); // root directory cluster
    s[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    s[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    s[64] = 0x80; // drive number
    s[66] = 0x29; // extended boot signature
    s[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    s[71..82].copy_from_slice(&label.unwrap_or(*b"NO NAME    "));
    s[82..90].copy_from_slice(b"FAT32   ");
    s[510..512].copy_from_slice(&[0x55, 0xAA]);
    s
}

/// The FSInfo sector with the free cluster count and the next free cluster hint.
fn fsinfo_sector(geo: &Geometry, free: u32, next_free: u32) -> Vec<u8> {
    let mut s = vec![0u8; geo.sector_size as usize];
    s[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    s
}

/// Writes `tree` as a FAT32 filesystem of `size_bytes` bytes at byte `offset` of `out`.
///
/// The range `[offset, offset + size_bytes)` must already read as zeros (e.g. a fresh sparse
/// file of sufficient length): free clusters and the unused tail of the FATs are not written.
/// Allocation is depth-first pre-order over the sorted tree (see the module docs).
pub fn write_fat32<W: Write + Seek>(
    out: &mut W,
    offset: u64,
    size_bytes: u64,
    opts: &FatOptions,
    tree: &Tree,
) -> Result<FatStats, FatError> {
    let label = label_bytes(&opts.label)?;
    let geo = Geometry::compute(size_bytes, opts)?;
    let mut alloc = Alloc {
        next: 2,
        end: geo.clusters + 2,
        extents: Vec::new(),
    };
    let root = plan_dir(
        tree.root(),
        "",
        None,
        u64::from(label.is_some()),
        &geo,
        &mut alloc,
    )?;
    let used = alloc.next - 2;
    let free = geo.clusters - used;
    let next_free = if free == 0 {
        u32::MAX
    } else {
        alloc.next as u32
    };

    let mut ctx = Ctx {
        offset,
        geo: &geo,
        stamp: fat_time_date(opts.timestamp),
        label,
        buf: vec![0u8; BUF_SIZE],
    };
    let boot = boot_sector(&geo, opts, label);
    let info = fsinfo_sector(&geo, free as u32, next_free);
    for (sector, data) in [(0, &boot), (1, &info), (6, &boot), (7, &info)] {
        ctx.seek(out, sector * geo.sector_size)?;
        out.write_all(data).map_err(out_err)?;
    }
    ctx.write_fats(out, &alloc.extents)?;
    ctx.write_dir(out, &root)?;
    out.flush().map_err(out_err)?;
    Ok(FatStats {
        sector_size: opts.sector_size,
        sectors_per_cluster: geo.spc as u8,
        reserved_sectors: geo.reserved as u32,
        fat_sectors: geo.fat_sectors as u32,
        total_sectors: geo.total_sectors as u32,
        total_clusters: geo.clusters as u32,
        used_clusters: used as u32,
        data_offset: geo.data_offset(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        // 2024-02-29 13:45:17 UTC
        let (t, d) = fat_time_date(1_709_214_317);
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (13, 45, 16));
        assert_eq!((1980 + (d >> 9), (d >> 5) & 15, d & 31), (2024, 2, 29));
        assert_eq!(fat_time_date(0), (0, 1 << 5 | 1));
        let (_, d) = fat_time_date(i64::MAX);
        assert_eq!((1980 + (d >> 9), (d >> 5) & 15, d & 31), (2107, 12, 31));
    }

    #[test]
    fn labels() {
        assert_eq!(label_bytes("efi").unwrap(), Some(*b"EFI        "));
        assert_eq!(label_bytes("").unwrap(), None);
        assert!(label_bytes("TWELVE CHARS").is_err());
        assert!(label_bytes("A.B").is_err());
    }
}
