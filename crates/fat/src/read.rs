//! A small, strict FAT32 reader, written independently of the writer's planning code.
//!
//! In: a `Read + Seek` device and the byte offset of a FAT32 volume in it. Out: directory
//! listings (long names rebuilt from LFN entries, whose sequence numbers and short-name
//! checksums are verified), cluster chains, file contents streamed into a `Write`, and a few
//! counters to cross-check the FAT and FSInfo. Anything inconsistent is a
//! [`FatError::Corrupt`]. It exists to verify images (tests, sanity checks), not to be fast.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::FatError;
use crate::names::{ATTR_LFN, LFN_LAST, checksum, fold, lfn_units};

/// Attribute bit of directories.
const ATTR_DIR: u8 = 0x10;
/// Attribute bit of the volume label entry.
const ATTR_VOLUME: u8 = 0x08;
/// Chain deeper than this is taken for a loop.
const MAX_DEPTH: usize = 256;

/// One directory entry as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The long name if LFN entries precede the short entry, else the short name.
    pub name: String,
    /// The 8.3 short name as `BASE.EXT` (or `BASE`).
    pub short_name: String,
    /// Whether the name came from LFN entries.
    pub has_lfn: bool,
    /// Attribute byte (0x01 read-only, 0x08 label, 0x10 directory, 0x20 archive, ...).
    pub attr: u8,
    /// First cluster (0 for empty files and for `..` pointing at the root).
    pub cluster: u32,
    /// File size in bytes (0 for directories).
    pub size: u32,
    /// Raw (creation time, creation date, access date, write time, write date) words.
    pub stamps: [u16; 5],
}

impl Entry {
    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }

    /// Whether the read-only attribute is set.
    pub fn read_only(&self) -> bool {
        self.attr & 0x01 != 0
    }
}

fn corrupt(msg: impl Into<String>) -> FatError {
    FatError::Corrupt(msg.into())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reader over one FAT32 volume.
#[derive(Debug)]
pub struct FatReader<R> {
    dev: R,
    offset: u64,
    sector_size: u64,
    spc: u64,
    reserved: u64,
    fat_sectors: u64,
    num_fats: u64,
    root_cluster: u32,
    clusters: u32,
}

impl<R: Read + Seek> FatReader<R> {
    /// Parses and checks the boot sector of the volume at `offset`.
    pub fn open(mut dev: R, offset: u64) -> Result<Self, FatError> {
        let mut bs = [0u8; 512];
        dev.seek(SeekFrom::Start(offset))
            .and_then(|_| dev.read_exact(&mut bs))
            .map_err(io)?;
        if bs[510..512] != [0x55, 0xAA] || &bs[82..90] != b"FAT32   " {
            return Err(corrupt("no FAT32 boot sector signature"));
        }
        let sector_size = u64::from(le16(&bs, 11));
        let spc = u64::from(bs[13]);
        let (reserved, num_fats) = (u64::from(le16(&bs, 14)), u64::from(bs[16]));
        let total = u64::from(le32(&bs, 32));
        let fat_sectors = u64::from(le32(&bs, 36));
        if !matches!(sector_size, 512 | 1024 | 2048 | 4096)
            || !spc.is_power_of_two()
            || le16(&bs, 22) != 0
            || fat_sectors == 0
            || num_fats == 0
        {
            return Err(corrupt("unusable FAT32 BPB"));
        }
        let data = reserved + num_fats * fat_sectors;
        let clusters = total
            .checked_sub(data)
            .ok_or_else(|| corrupt("FATs exceed the volume"))?
            / spc;
        let clusters = u32::try_from(clusters).map_err(|_| corrupt("too many clusters"))?;
        Ok(FatReader {
            dev,
            offset,
            sector_size,
            spc,
            reserved,
            fat_sectors,
            num_fats,
            root_cluster: le32(&bs, 44),
            clusters,
        })
    }

    /// Number of data clusters.
    pub fn total_clusters(&self) -> u32 {
        self.clusters
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.sector_size * self.spc
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> Result<(), FatError> {
        self.dev
            .seek(SeekFrom::Start(self.offset + pos))
            .map_err(io)?;
        self.dev.read_exact(buf).map_err(io)
    }

    /// The FAT entry of `cluster` (from the first FAT).
    pub fn fat_entry(&mut self, cluster: u32) -> Result<u32, FatError> {
        let mut b = [0u8; 4];
        self.read_at(
            self.reserved * self.sector_size + 4 * u64::from(cluster),
            &mut b,
        )?;
        Ok(u32::from_le_bytes(b) & 0x0FFF_FFFF)
    }

    /// The cluster chain starting at `first`, checked for bounds and loops.
    pub fn chain(&mut self, first: u32) -> Result<Vec<u32>, FatError> {
        let mut chain = Vec::new();
        let mut c = first;
        loop {
            if c < 2 || c >= self.clusters + 2 || chain.len() >= self.clusters as usize {
                return Err(corrupt(format!("bad cluster {c} in chain from {first}")));
            }
            chain.push(c);
            c = self.fat_entry(c)?;
            if c >= 0x0FFF_FFF8 {
                return Ok(chain);
            }
        }
    }

    fn read_cluster(&mut self, cluster: u32, buf: &mut [u8]) -> Result<(), FatError> {
        let data = (self.reserved + self.num_fats * self.fat_sectors) * self.sector_size;
        self.read_at(data + u64::from(cluster - 2) * self.cluster_size(), buf)
    }

    /// Every entry of the directory starting at `cluster`, including `.`, `..` and the volume
    /// label, in on-disk order.
    pub fn read_dir(&mut self, cluster: u32) -> Result<Vec<Entry>, FatError> {
        let mut raw = vec![0u8; self.cluster_size() as usize];
        let mut out = Vec::new();
        // Pending long name: UTF-16 parts by sequence number, next expected number, checksum.
        let mut lfn: Option<(Vec<[u16; 13]>, u8, u8)> = None;
        for c in self.chain(cluster)? {
            self.read_cluster(c, &mut raw)?;
            for e in raw.chunks_exact(32) {
                match e[0] {
                    0x00 => return Ok(out),
                    0xE5 => {
                        lfn = None;
                        continue;
                    }
                    _ => {}
                }
                if e[11] == ATTR_LFN {
                    lfn = Some(lfn_step(lfn.take(), e)?);
                    continue;
                }
                out.push(short_to_entry(e, lfn.take())?);
            }
        }
        Ok(out)
    }

    /// The volume label from the root directory's label entry, if there is one.
    pub fn label(&mut self) -> Result<Option<String>, FatError> {
        let root = self.read_dir(self.root_cluster)?;
        Ok(root
            .into_iter()
            .find(|e| e.attr & ATTR_VOLUME != 0 && e.attr != ATTR_LFN)
            .map(|e| e.name))
    }

    /// The entries of the directory at `path` (`/`-separated, matched case-insensitively),
    /// without `.`, `..` and the volume label.
    pub fn list(&mut self, path: &str) -> Result<Vec<Entry>, FatError> {
        let mut cluster = self.root_cluster;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let entries = self.list_cluster(cluster)?;
            let key = fold(part);
            let e = entries
                .into_iter()
                .find(|e| fold(&e.name) == key && e.is_dir());
            cluster = e
                .ok_or_else(|| corrupt(format!("no directory '{part}' in '{path}'")))?
                .cluster;
        }
        self.list_cluster(cluster)
    }

    fn list_cluster(&mut self, cluster: u32) -> Result<Vec<Entry>, FatError> {
        let mut entries = self.read_dir(cluster)?;
        entries.retain(|e| e.attr & ATTR_VOLUME == 0 && e.name != "." && e.name != "..");
        Ok(entries)
    }

    /// Every file and directory below the root as (path, entry), depth-first in on-disk order.
    pub fn walk(&mut self) -> Result<Vec<(String, Entry)>, FatError> {
        let mut out = Vec::new();
        self.walk_into(self.root_cluster, "", 0, &mut out)?;
        Ok(out)
    }

    fn walk_into(
        &mut self,
        cluster: u32,
        prefix: &str,
        depth: usize,
        out: &mut Vec<(String, Entry)>,
    ) -> Result<(), FatError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!("directory nesting too deep at '{prefix}'")));
        }
        for e in self.list_cluster(cluster)? {
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            let sub = e.is_dir().then_some(e.cluster);
            out.push((path.clone(), e));
            if let Some(sub) = sub {
                self.walk_into(sub, &path, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// Streams a file's contents into `out`, checking that its chain has exactly the clusters
    /// its size needs.
    pub fn read_file<W: Write>(&mut self, entry: &Entry, out: &mut W) -> Result<(), FatError> {
        let cs = self.cluster_size();
        let need = u64::from(entry.size).div_ceil(cs);
        if entry.cluster == 0 {
            return if need == 0 {
                Ok(())
            } else {
                Err(corrupt(format!("'{}' has no clusters", entry.name)))
            };
        }
        let chain = self.chain(entry.cluster)?;
        if chain.len() as u64 != need {
            return Err(corrupt(format!(
                "'{}': {} clusters for {} bytes",
                entry.name,
                chain.len(),
                entry.size
            )));
        }
        let mut buf = vec![0u8; cs as usize];
        let mut left = u64::from(entry.size);
        for c in chain {
            self.read_cluster(c, &mut buf)?;
            let n = left.min(cs);
            out.write_all(&buf[..n as usize]).map_err(io)?;
            left -= n;
        }
        Ok(())
    }

    /// Counts non-zero entries among the data clusters of the first FAT and checks that all
    /// FAT copies are identical.
    pub fn used_clusters(&mut self) -> Result<u32, FatError> {
        let fat_bytes = (self.fat_sectors * self.sector_size) as usize;
        let mut first = vec![0u8; fat_bytes];
        self.read_at(self.reserved * self.sector_size, &mut first)?;
        let mut other = vec![0u8; fat_bytes];
        for n in 1..self.num_fats {
            self.read_at(
                (self.reserved + n * self.fat_sectors) * self.sector_size,
                &mut other,
            )?;
            if other != first {
                return Err(corrupt(format!("FAT copy {n} differs from the first FAT")));
            }
        }
        let entries = first.chunks_exact(4).skip(2).take(self.clusters as usize);
        Ok(entries.filter(|e| le32(e, 0) & 0x0FFF_FFFF != 0).count() as u32)
    }

    /// The FSInfo sector's (free cluster count, next free cluster) after checking its
    /// signatures.
    pub fn fsinfo(&mut self) -> Result<(u32, u32), FatError> {
        let mut s = [0u8; 512];
        self.read_at(self.sector_size, &mut s)?;
        if le32(&s, 0) != 0x4161_5252
            || le32(&s, 484) != 0x6141_7272
            || le32(&s, 508) != 0xAA55_0000
        {
            return Err(corrupt("bad FSInfo signatures"));
        }
        Ok((le32(&s, 488), le32(&s, 492)))
    }
}

fn io(e: std::io::Error) -> FatError {
    FatError::Io {
        path: "<device>".into(),
        source: e,
    }
}

/// Folds one LFN entry into the pending long name, checking the sequence.
fn lfn_step(
    pending: Option<(Vec<[u16; 13]>, u8, u8)>,
    e: &[u8],
) -> Result<(Vec<[u16; 13]>, u8, u8), FatError> {
    let seq = e[0] & 0x1F;
    let (mut parts, expect, sum) = match pending {
        _ if e[0] & LFN_LAST != 0 => (vec![[0u16; 13]; usize::from(seq)], seq, e[13]),
        Some(p) => p,
        None => return Err(corrupt("LFN entry without a first (0x40) entry")),
    };
    if seq == 0 || seq != expect || e[13] != sum {
        return Err(corrupt(format!(
            "LFN sequence {seq} found where {expect} was expected"
        )));
    }
    parts[usize::from(seq) - 1] = lfn_units(e);
    Ok((parts, seq - 1, sum))
}

/// Turns a short entry (plus the long name collected before it) into an [`Entry`].
fn short_to_entry(e: &[u8], lfn: Option<(Vec<[u16; 13]>, u8, u8)>) -> Result<Entry, FatError> {
    let mut short = [0u8; 11];
    short.copy_from_slice(&e[..11]);
    let text = |b: &[u8], lower: bool| {
        let s = String::from_utf8_lossy(b).trim_end().to_string();
        if lower { s.to_ascii_lowercase() } else { s }
    };
    let (base, ext) = (
        text(&short[..8], e[12] & 0x08 != 0),
        text(&short[8..], e[12] & 0x10 != 0),
    );
    let short_name = if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    };
    let has_lfn = lfn.is_some();
    let name = match lfn {
        None => short_name.clone(),
        Some((_, left, _)) if left != 0 => {
            return Err(corrupt(format!("incomplete LFN before '{short_name}'")));
        }
        Some((_, _, sum)) if sum != checksum(&short) => {
            return Err(corrupt(format!("LFN checksum mismatch for '{short_name}'")));
        }
        Some((parts, _, _)) => {
            let units: Vec<u16> = parts.concat();
            let len = units.iter().position(|&u| u == 0).unwrap_or(units.len());
            if units[len..].iter().skip(1).any(|&u| u != 0xFFFF) {
                return Err(corrupt(format!(
                    "LFN of '{short_name}' not padded with 0xFFFF"
                )));
            }
            String::from_utf16(&units[..len]).map_err(|_| corrupt("LFN is not valid UTF-16"))?
        }
    };
    Ok(Entry {
        name,
        short_name,
        has_lfn,
        attr: e[11],
        cluster: u32::from(le16(e, 20)) << 16 | u32::from(le16(e, 26)),
        size: le32(e, 28),
        stamps: [
            le16(e, 14),
            le16(e, 16),
            le16(e, 18),
            le16(e, 22),
            le16(e, 24),
        ],
    })
}
