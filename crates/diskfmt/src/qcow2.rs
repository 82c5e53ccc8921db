//! qcow2 version 3 writer (docs/formats/outputs.md: `qemu-img convert -f raw -O qcow2 -o
//! <diskFormatOptions>`, e.g. `cluster_size=8k` for alibabacloud, exoscale and oracle).
//!
//! In: the raw image, a cluster size (512 B to 2 MiB, a power of two) and [`Options`]. Out: a
//! qcow2 image on any `Write + Seek` sink, written front to back and then the header rewritten.
//! Only clusters holding non-zero data are allocated. Layout, all in host clusters:
//!
//! ```text
//! 0            header (version 3, refcount_order 4, no extensions)
//! 1..          data clusters of L2 range 0 (guest order), then that range's L2 table,
//!              data clusters of the next used L2 range, its L2 table, ...
//! then         L1 table, refcount table, refcount blocks
//! ```
//!
//! Every cluster up to the end of the file is used exactly once, so every refcount is 1 and
//! all L1/L2 entries carry `QCOW_OFLAG_COPIED`. No timestamps or UUIDs are involved.

use crate::scan::for_each_data_chunk;
use crate::{DiskFmtError, Options, Stats, io_err};
use sparse::is_zero;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};

/// qemu's default cluster size (64 KiB).
pub const DEFAULT_CLUSTER_SIZE: u32 = 64 * 1024;

const MIN_CLUSTER: u32 = 512;
const MAX_CLUSTER: u32 = 2 * 1024 * 1024;
/// `QCOW_OFLAG_COPIED`: refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// qemu's limits (`QCOW_MAX_L1_SIZE`, `QCOW_MAX_REFTABLE_SIZE`).
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host offsets must fit L2 entry bits 9..=55.
const MAX_HOST_OFFSET: u64 = 1 << 56;
const HEADER_LENGTH: u32 = 112;

/// Parses a `qemu-img -o` style qcow2 option string, e.g. `cluster_size=8k`, into the cluster
/// size. The empty string gives [`DEFAULT_CLUSTER_SIZE`].
///
/// Only `cluster_size` is supported; values take qemu's size suffixes (`b`, `k`, `M`, `G`,
/// either case) and must be a power of two from 512 to 2 MiB. Any other key is an
/// [`DiskFmtError::UnknownOption`] naming it.
pub fn parse_qcow2_options(s: &str) -> Result<u32, DiskFmtError> {
    let mut cluster: Option<u32> = None;
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        let bad = |reason: &str| DiskFmtError::BadOption {
            format: "qcow2",
            key: key.to_string(),
            value: value.unwrap_or("").to_string(),
            reason: reason.to_string(),
        };
        match key {
            "cluster_size" => {
                let Some(v) = value else {
                    return Err(bad("needs a value, e.g. cluster_size=64k"));
                };
                if cluster.is_some() {
                    return Err(bad("given more than once"));
                }
                let n = parse_size(v)
                    .ok_or_else(|| bad("not a size (a number with an optional b/k/M/G suffix)"))?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| n.is_power_of_two() && (MIN_CLUSTER..=MAX_CLUSTER).contains(n))
                    .ok_or_else(|| bad("must be a power of two between 512 and 2M"))?;
                cluster = Some(n);
            }
            _ => {
                return Err(DiskFmtError::UnknownOption {
                    format: "qcow2",
                    key: key.to_string(),
                    supported: "cluster_size",
                });
            }
        }
    }
    Ok(cluster.unwrap_or(DEFAULT_CLUSTER_SIZE))
}

/// `qemu_strtosz`-like: digits and an optional one-letter binary suffix.
fn parse_size(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Writes `raw` as a qcow2 v3 image with clusters of `cluster_size` bytes to `out`.
///
/// `out` is written from its start; the caller truncates it first if it held a longer file.
/// The virtual size is the raw size rounded up to 512 bytes. `o` is accepted for symmetry:
/// qcow2 records no timestamp or UUID.
pub fn write_qcow2<W: Write + Seek>(
    raw: &File,
    out: &mut W,
    cluster_size: u32,
    o: &Options,
) -> Result<Stats, DiskFmtError> {
    let _ = o;
    if !cluster_size.is_power_of_two() || !(MIN_CLUSTER..=MAX_CLUSTER).contains(&cluster_size) {
        return Err(DiskFmtError::BadOption {
            format: "qcow2",
            key: "cluster_size".into(),
            value: cluster_size.to_string(),
            reason: "must be a power of two between 512 and 2M".into(),
        });
    }
    let raw_size = raw
        .metadata()
        .map_err(io_err("reading the raw image's size"))?
        .len();
    let too_large = |limit: &str| DiskFmtError::TooLarge {
        format: "qcow2",
        size: raw_size,
        limit: limit.to_string(),
    };
    let vsize = crate::round_up(raw_size, 512).ok_or_else(|| too_large("size overflows"))?;
    let cs = u64::from(cluster_size);
    let cs_usize = cluster_size as usize;
    let l2_entries = cs / 8;
    let l2_span = cs * l2_entries;
    let l1_size = vsize.div_ceil(l2_span);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(too_large(
            "L1 table over qemu's 32 MiB limit; use larger clusters",
        ));
    }

    out.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking to the start of the qcow2 output"))?;
    let mut w = Writer {
        out: BufWriter::with_capacity(crate::scan::CHUNK, out),
        host: 0,
        cs,
    };
    // Cluster 0: the header, written for real at the end.
    w.put(&vec![0u8; cs_usize])?;

    let mut l1 = vec![0u64; usize::try_from(l1_size).map_err(|_| too_large("L1 table"))?];
    let mut l2 = vec![0u64; l2_entries as usize];
    let mut cur_l2: Option<u64> = None;
    let mut data_clusters = 0u64;

    for_each_data_chunk(raw, raw_size, cs, |off, chunk| {
        for (i, cluster) in chunk.chunks_exact(cs_usize).enumerate() {
            if is_zero(cluster) {
                continue;
            }
            let guest = off / cs + i as u64;
            let l1_index = guest / l2_entries;
            if cur_l2 != Some(l1_index) {
                if let Some(prev) = cur_l2 {
                    l1[prev as usize] = w.put_table(&l2)? | COPIED;
                    l2.fill(0);
                }
                cur_l2 = Some(l1_index);
            }
            l2[(guest % l2_entries) as usize] = w.put(cluster)? | COPIED;
            data_clusters += 1;
        }
        Ok(())
    })?;
    if let Some(prev) = cur_l2 {
        l1[prev as usize] = w.put_table(&l2)? | COPIED;
    }
    drop(l2);

    // L1 table.
    let l1_offset = w.host;
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    if l1_clusters > 0 {
        let mut bytes = Vec::with_capacity((l1_clusters * cs) as usize);
        for e in &l1 {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        bytes.resize((l1_clusters * cs) as usize, 0);
        w.put(&bytes)?;
    }
    drop(l1);

    // Refcount table and blocks: they must also count themselves.
    let rc_per_block = cs / 2;
    let before = w.host / cs;
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = before + rt + rb;
        let nb = total.div_ceil(rc_per_block);
        let nt = (nb * 8).div_ceil(cs);
        if (nt, nb) == (rt, rb) {
            break;
        }
        (rt, rb) = (nt.max(rt), nb.max(rb));
    }
    if rt * cs > MAX_REFTABLE_BYTES {
        return Err(too_large(
            "refcount table over qemu's 8 MiB limit; use larger clusters",
        ));
    }
    let total = before + rt + rb;
    let rt_offset = w.host;
    let mut table = Vec::with_capacity((rt * cs) as usize);
    for i in 0..rb {
        table.extend_from_slice(&((before + rt + i) * cs).to_be_bytes());
    }
    table.resize((rt * cs) as usize, 0);
    w.put(&table)?;
    drop(table);
    let mut block = vec![0u8; cs_usize];
    for b in 0..rb {
        let first = b * rc_per_block;
        let n = total.saturating_sub(first).min(rc_per_block);
        block.fill(0);
        for e in block.chunks_exact_mut(2).take(n as usize) {
            e.copy_from_slice(&1u16.to_be_bytes());
        }
        w.put(&block)?;
    }
    if w.host > MAX_HOST_OFFSET {
        return Err(too_large("host offsets over 2^56"));
    }

    // The header.
    let mut h = vec![0u8; HEADER_LENGTH as usize + 8];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&cluster_size.trailing_zeros().to_be_bytes());
    h[24..32].copy_from_slice(&vsize.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&rt_offset.to_be_bytes());
    h[56..60].copy_from_slice(&(rt as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    // 104: compression type 0 (zlib), padding; then the end-of-extensions marker (zeros).
    let output_size = w.host;
    let out = w
        .out
        .into_inner()
        .map_err(|e| io_err("writing the qcow2 image")(e.into_error()))?;
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.write_all(&h))
        .and_then(|_| out.seek(SeekFrom::Start(output_size)).map(|_| ()))
        .and_then(|_| out.flush())
        .map_err(io_err("writing the qcow2 header"))?;
    Ok(Stats {
        virtual_size: vsize,
        data_bytes: data_clusters * cs,
        output_size,
    })
}

/// Sequential cluster writer that tracks the host offset.
struct Writer<W: Write> {
    out: BufWriter<W>,
    host: u64,
    cs: u64,
}

impl<W: Write> Writer<W> {
    /// Writes whole clusters, returns the offset they start at.
    fn put(&mut self, bytes: &[u8]) -> Result<u64, DiskFmtError> {
        let at = self.host;
        self.out
            .write_all(bytes)
            .map_err(io_err(format!("writing the qcow2 image at byte {at}")))?;
        self.host += (bytes.len() as u64).div_ceil(self.cs) * self.cs;
        Ok(at)
    }

    /// Writes a table of big-endian u64 entries (one cluster), returns its offset.
    fn put_table(&mut self, entries: &[u64]) -> Result<u64, DiskFmtError> {
        let mut bytes = Vec::with_capacity(entries.len() * 8);
        for e in entries {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        self.put(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(parse_qcow2_options("").unwrap(), 65536);
        assert_eq!(parse_qcow2_options("cluster_size=8k").unwrap(), 8192);
        assert_eq!(parse_qcow2_options(" cluster_size = 2M ").unwrap(), 2 << 20);
        assert_eq!(parse_qcow2_options("cluster_size=512").unwrap(), 512);
        assert_eq!(parse_qcow2_options("cluster_size=65536,").unwrap(), 65536);
        let e = parse_qcow2_options("cluster_size=8k,compression_type=zstd").unwrap_err();
        assert!(e.to_string().contains("\"compression_type\""), "{e}");
        assert!(
            matches!(e, DiskFmtError::UnknownOption { ref key, .. } if key == "compression_type")
        );
        for bad in [
            "cluster_size=3k",
            "cluster_size=256",
            "cluster_size=4M",
            "cluster_size=8q",
        ] {
            let e = parse_qcow2_options(bad).unwrap_err();
            assert!(matches!(e, DiskFmtError::BadOption { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("cluster_size"), "{e}");
        }
        assert!(parse_qcow2_options("cluster_size").is_err());
        assert!(parse_qcow2_options("cluster_size=8k,cluster_size=16k").is_err());
    }
}
