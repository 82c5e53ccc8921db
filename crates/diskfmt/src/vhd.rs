//! Fixed VHD writer under Azure's rules (docs/formats/outputs.md: the `azure` profile's
//! `qemu-img convert -f raw -O vpc -o subformat=fixed,force_size`).
//!
//! In: the raw image and [`Options`]. Out: a file holding the raw bytes, its size rounded up to
//! a whole MiB (Azure refuses other sizes; the padding is a hole), then the 512-byte VHD
//! footer. The copy is sparse: holes and all-zero 4 KiB blocks of the input are not written,
//! so the output stays as sparse as the input.
//!
//! Footer fields (Virtual Hard Disk Image Format Specification, "Hard Disk Footer Format"):
//! cookie `conectix`, features 2, version 1.0, data offset all ones (fixed disk), timestamp =
//! seconds since 2000-01-01 UTC from [`Options::timestamp`] (clamped to the u32 range), creator
//! application `qem2` version 5.3 and host OS `Wi2k` exactly as qemu writes them with
//! `force_size` (`qem2` tells qemu, like Hyper-V's `win `, to take the size from the footer
//! rather than from the CHS geometry), original and current size = the rounded size, CHS
//! geometry by the specification's algorithm ([`chs_geometry`]), disk type 2 (fixed), the
//! one's-complement byte-sum checksum, a UUID derived from [`Options::label`], saved state 0.

use crate::{DiskFmtError, Options, Stats, derive_uuid, io_err};
use sparse::is_zero;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Largest VHD qemu accepts (`VHD_MAX_SECTORS`: 2040 GiB).
pub const VHD_MAX_SIZE: u64 = 0xff00_0000 * 512;
/// Azure: the virtual size is a whole number of MiB.
const SIZE_ALIGN: u64 = 1 << 20;
/// Granule of the sparse copy (a filesystem block).
const BLOCK: usize = 4096;
/// 2000-01-01T00:00:00Z in Unix time, the VHD epoch.
const VHD_EPOCH: i64 = 946_684_800;

/// The VHD subformats (`qemu-img -o subformat=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhdSubformat {
    /// The raw bytes then the footer (Azure's).
    Fixed,
    /// Footer copy, dynamic header, block allocation table, allocated 2 MiB blocks, footer:
    /// qemu's default.
    Dynamic,
}

/// Checks a `qemu-img -o` style vpc option string and returns the subformat: Talos' Azure
/// profile passes `subformat=fixed,force_size`; without `subformat` the VHD is dynamic, as
/// qemu's default. The size always comes from the footer, so `force_size` may be given (as
/// `force_size`, `force_size=on`/`true`/`yes`). Unknown keys are an
/// [`DiskFmtError::UnknownOption`].
pub fn parse_vhd_options(s: &str) -> Result<VhdSubformat, DiskFmtError> {
    let mut sub = VhdSubformat::Dynamic;
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        let bad = |reason: &str| DiskFmtError::BadOption {
            format: "vhd",
            key: key.to_string(),
            value: value.unwrap_or("").to_string(),
            reason: reason.to_string(),
        };
        match key {
            "subformat" => match value {
                Some("fixed") => sub = VhdSubformat::Fixed,
                Some("dynamic") => sub = VhdSubformat::Dynamic,
                _ => return Err(bad("subformat is fixed or dynamic")),
            },
            "force_size" => match value {
                None | Some("on" | "true" | "yes") => {}
                _ => {
                    return Err(bad(
                        "only force_size=on is supported (size from the footer)",
                    ));
                }
            },
            _ => {
                return Err(DiskFmtError::UnknownOption {
                    format: "vhd",
                    key: key.to_string(),
                    supported: "subformat, force_size",
                });
            }
        }
    }
    Ok(sub)
}

/// CHS geometry `(cylinders, heads, sectors per track)` of a disk of `total_sectors` 512-byte
/// sectors, by the algorithm of the VHD specification (appendix "CHS Calculation"), which
/// qemu's `calculate_geometry` also implements. Disks above 65535 × 16 × 255 sectors are capped.
pub fn chs_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(65535 * 16 * 255);
    let (spt, heads, cth): (u64, u64, u64);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    // Bounded by the cap above: cylinders <= 65535, heads <= 16, spt <= 255.
    (
        u16::try_from(cth / heads).unwrap_or(u16::MAX),
        heads as u8,
        spt as u8,
    )
}

/// The 512-byte footer of a fixed disk of `size` bytes.
fn footer(size: u64, o: &Options) -> [u8; 512] {
    footer_of(size, o, None)
}

/// The footer; `dynamic` is the dynamic header's offset (disk type 3) or `None` (fixed, 2).
fn footer_of(size: u64, o: &Options, dynamic: Option<u64>) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&dynamic.unwrap_or(u64::MAX).to_be_bytes());
    let ts = o
        .timestamp
        .saturating_sub(VHD_EPOCH)
        .clamp(0, i64::from(u32::MAX));
    f[24..28].copy_from_slice(&(ts as u32).to_be_bytes());
    f[28..32].copy_from_slice(b"qem2");
    f[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = chs_geometry(size / 512);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    let disk_type: u32 = if dynamic.is_some() { 3 } else { 2 };
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&derive_uuid(&o.label, "vhd unique id"));
    let sum = f.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// The raw image's size and the VHD's virtual size: rounded up to a whole MiB (Azure's rule,
/// kept for both subformats), at most [`VHD_MAX_SIZE`].
fn sizes(raw: &File) -> Result<(u64, u64), DiskFmtError> {
    let raw_size = raw
        .metadata()
        .map_err(io_err("reading the raw image's size"))?
        .len();
    let size = crate::round_up(raw_size, SIZE_ALIGN)
        .filter(|s| *s <= VHD_MAX_SIZE)
        .ok_or_else(|| DiskFmtError::TooLarge {
            format: "vhd",
            size: raw_size,
            limit: format!("VHD disks are at most {VHD_MAX_SIZE} bytes (2040 GiB)"),
        })?;
    Ok((raw_size, size))
}

/// Writes `raw` as a fixed VHD to `out` (truncated first), sparsely.
///
/// The virtual size is the raw size rounded up to a whole MiB; the output is that many bytes
/// followed by the footer. Fails with [`DiskFmtError::TooLarge`] above [`VHD_MAX_SIZE`].
pub fn write_vhd_fixed(raw: &File, out: &mut File, o: &Options) -> Result<Stats, DiskFmtError> {
    let (raw_size, size) = sizes(raw)?;
    out.set_len(0)
        .map_err(io_err("truncating the VHD output"))?;
    // Chunks are independent (each is read, zero-checked and written at its own offset), so
    // threads take every n-th one and overlap reading with writing.
    let chunks: Vec<(u64, usize)> =
        crate::scan::data_chunks(raw, raw_size, BLOCK as u64)?.collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(chunks.len().max(1));
    let out_ref: &File = out;
    let copy = |t: usize| -> Result<u64, DiskFmtError> {
        let mut buf = Vec::new();
        let mut data_bytes = 0u64;
        for &(off, len) in chunks.iter().skip(t).step_by(threads) {
            buf.resize(len, 0);
            crate::scan::read_at_padded(raw, &mut buf, off, raw_size)?;
            data_bytes += copy_chunk(out_ref, off, &buf)?;
        }
        Ok(data_bytes)
    };
    let data_bytes = if threads == 1 {
        copy(0)?
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || copy(t))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .sum::<Result<u64, DiskFmtError>>()
        })?
    };
    out.set_len(size + 512)
        .map_err(io_err("extending the VHD output"))?;
    out.write_all_at(&footer(size, o), size)
        .map_err(io_err("writing the VHD footer"))?;
    Ok(Stats {
        virtual_size: size,
        data_bytes,
        output_size: size + 512,
    })
}

/// Block size of dynamic VHDs (the specification's default, and qemu's).
const DYN_BLOCK: u64 = 2 << 20;

/// Writes `raw` as a dynamic VHD to `out` (truncated first): a copy of the footer, the
/// dynamic header ("Dynamic Disk Header Format") at 512, the block allocation table at 1536,
/// then every 2 MiB block of the raw image that holds a non-zero byte (a 512-byte sector
/// bitmap of ones, then the block; its zero 4 KiB pieces stay holes), in ascending order, and
/// the footer. All-zero blocks are not allocated. The virtual size is the raw size rounded up
/// to a whole MiB, taken from the footer (`qem2`).
pub fn write_vhd_dynamic(raw: &File, out: &mut File, o: &Options) -> Result<Stats, DiskFmtError> {
    let (raw_size, size) = sizes(raw)?;
    let entries = size.div_ceil(DYN_BLOCK);
    let table_off: u64 = 1536;
    let data_start = crate::round_up(table_off + entries * 4, 512).unwrap_or(u64::MAX);
    out.set_len(0)
        .map_err(io_err("truncating the VHD output"))?;
    // the blocks with data, found through the raw image's data extents
    let mut bat = vec![u32::MAX; usize::try_from(entries).unwrap_or(0)];
    let mut next = data_start;
    let mut data_bytes = 0u64;
    let mut buf = vec![0u8; DYN_BLOCK as usize];
    let mut last_block = None;
    for chunk in crate::scan::data_chunks(raw, raw_size, DYN_BLOCK)? {
        let (off, len) = chunk?;
        let mut b = off / DYN_BLOCK;
        while b * DYN_BLOCK < off + len as u64 {
            if last_block == Some(b) {
                b += 1;
                continue;
            }
            last_block = Some(b);
            let at = b * DYN_BLOCK;
            crate::scan::read_at_padded(raw, &mut buf, at, raw_size)?;
            if !is_zero(&buf) {
                let sector = u32::try_from(next / 512).map_err(|_| DiskFmtError::TooLarge {
                    format: "vhd",
                    size: raw_size,
                    limit: "the block table addresses 2 TiB".into(),
                })?;
                bat[b as usize] = sector;
                out.write_all_at(&[0xff; 512], next)
                    .map_err(io_err(format!("writing the VHD output at byte {next}")))?;
                data_bytes += copy_chunk(out, next + 512, &buf)?;
                next += 512 + DYN_BLOCK;
            }
            b += 1;
        }
    }
    // footer copy, dynamic header, table, and the footer at the end
    let foot = footer_of(size, o, Some(512));
    out.write_all_at(&foot, 0)
        .map_err(io_err("writing the VHD footer copy"))?;
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&table_off.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
    h[32..36].copy_from_slice(&(DYN_BLOCK as u32).to_be_bytes());
    let sum = h.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    h[36..40].copy_from_slice(&(!sum).to_be_bytes());
    out.write_all_at(&h, 512)
        .map_err(io_err("writing the VHD dynamic header"))?;
    let mut table = vec![0xffu8; (data_start - table_off) as usize];
    for (i, e) in bat.iter().enumerate() {
        table[i * 4..i * 4 + 4].copy_from_slice(&e.to_be_bytes());
    }
    out.write_all_at(&table, table_off)
        .map_err(io_err("writing the VHD block table"))?;
    out.set_len(next).map_err(io_err("sizing the VHD output"))?;
    out.write_all_at(&foot, next)
        .map_err(io_err("writing the VHD footer"))?;
    Ok(Stats {
        virtual_size: size,
        data_bytes,
        output_size: next + 512,
    })
}

/// Writes the non-zero blocks of the chunk read at `off`, coalesced into runs; returns the
/// number of bytes written.
fn copy_chunk(out: &File, off: u64, chunk: &[u8]) -> Result<u64, DiskFmtError> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let blocks = chunk.len() / BLOCK;
    for i in 0..=blocks {
        let zero = i == blocks || is_zero(&chunk[i * BLOCK..(i + 1) * BLOCK]);
        match (run, zero) {
            (None, false) => run = Some(i),
            (Some(start), true) => {
                let at = off + (start * BLOCK) as u64;
                let bytes = &chunk[start * BLOCK..i * BLOCK];
                out.write_all_at(bytes, at)
                    .map_err(io_err(format!("writing the VHD output at byte {at}")))?;
                written += bytes.len() as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_spec_examples() {
        // Small disks use 17 sectors per track and at least 4 heads.
        assert_eq!(chs_geometry(20 * 2048), (602, 4, 17));
        // 2 GiB: 63 sectors per track, 16 heads.
        assert_eq!(chs_geometry(4 << 20), (4161, 16, 63));
        // Capped at 65535 x 16 x 255.
        assert_eq!(chs_geometry(u64::MAX), (65535, 16, 255));
        assert_eq!(chs_geometry(65535 * 16 * 63), (16191, 16, 255));
    }

    #[test]
    fn footer_checksum_and_fields() {
        let o = Options {
            timestamp: 1_700_000_000,
            label: "t".into(),
        };
        let f = footer(2 << 30, &o);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut g = f;
        g[64..68].fill(0);
        let sum = g.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        assert_eq!(stored, !sum);
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().unwrap()),
            1_700_000_000 - 946_684_800
        );
        // Before 2000: clamped to 0.
        let early = footer(
            1 << 20,
            &Options {
                timestamp: -5,
                label: String::new(),
            },
        );
        assert_eq!(&early[24..28], &[0, 0, 0, 0]);
        assert_eq!(footer(1 << 20, &o), footer(1 << 20, &o));
    }

    #[test]
    fn options() {
        assert_eq!(
            parse_vhd_options("subformat=fixed,force_size").unwrap(),
            VhdSubformat::Fixed
        );
        parse_vhd_options("subformat=fixed").unwrap();
        parse_vhd_options("force_size=on,subformat=fixed").unwrap();
        // qemu's default, and what Talos accepts without options
        assert_eq!(parse_vhd_options("").unwrap(), VhdSubformat::Dynamic);
        assert_eq!(
            parse_vhd_options("subformat=dynamic").unwrap(),
            VhdSubformat::Dynamic
        );
        assert!(matches!(
            parse_vhd_options("subformat=sparse"),
            Err(DiskFmtError::BadOption { .. })
        ));
        assert!(parse_vhd_options("subformat=fixed,force_size=off").is_err());
        let e = parse_vhd_options("subformat=fixed,block_size=2M").unwrap_err();
        assert!(e.to_string().contains("\"block_size\""), "{e}");
    }
}
