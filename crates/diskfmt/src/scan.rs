//! Reading a sparse raw image where it holds data.
//!
//! In: the raw image file and a granule (the output format's cluster or grain size). Out: the
//! image's data as granule-aligned chunks of at most about 1 MiB, in ascending offset order,
//! each offset visited at most once; holes (found with `lseek(SEEK_DATA/SEEK_HOLE)`) are never
//! read, and bytes past the end of the file read as zeros so the last granule is complete.
//! Filesystems without `SEEK_DATA` are read whole. Used by every writer (docs/formats/outputs.md).

use crate::{DiskFmtError, io_err};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Largest chunk handed to the callback (unless the granule is larger).
pub(crate) const CHUNK: usize = 1 << 20;

/// The next data extent `[start, end)` of `file` below `size` at or after `pos`.
fn next_extent(file: &File, size: u64, pos: u64) -> Result<Option<(u64, u64)>, DiskFmtError> {
    sparse::next_data(file, pos, size).map_err(io_err(format!(
        "finding data in the raw image after byte {pos}"
    )))
}

/// Reads `buf.len()` bytes at `off`; bytes at or beyond `size` are zeros.
pub(crate) fn read_at_padded(
    file: &File,
    buf: &mut [u8],
    off: u64,
    size: u64,
) -> Result<(), DiskFmtError> {
    let avail = usize::try_from(size.saturating_sub(off))
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let (data, pad) = buf.split_at_mut(avail);
    file.read_exact_at(data, off)
        .map_err(io_err(format!("reading the raw image at byte {off}")))?;
    pad.fill(0);
    Ok(())
}

/// The granule-aligned chunks `(offset, length)` covering the data of `file` (of `size`
/// bytes), ascending and disjoint, each at most `max(CHUNK, granule)` long.
///
/// `granule` is a power of two. Lengths are multiples of `granule`; the last chunk may reach
/// past `size` up to the next granule boundary (that part reads as zeros).
pub(crate) fn data_chunks(
    file: &File,
    size: u64,
    granule: u64,
) -> Result<impl Iterator<Item = Result<(u64, usize), DiskFmtError>> + '_, DiskFmtError> {
    let chunk = (CHUNK as u64).max(granule);
    let end_all = crate::round_up(size, granule).ok_or_else(|| DiskFmtError::TooLarge {
        format: "raw",
        size,
        limit: "size overflows".into(),
    })?;
    let mut done = 0u64; // everything below was handed out
    let mut pos = 0u64; // where to look for the next extent
    let mut cur: Option<(u64, u64)> = None; // the aligned extent being cut into chunks
    Ok(std::iter::from_fn(move || {
        loop {
            if let Some((s, e)) = cur {
                if s < e {
                    let n = (e - s).min(chunk);
                    cur = Some((s + n, e));
                    // n <= chunk, which is a buffer length.
                    return Some(Ok((s, usize::try_from(n).unwrap_or(CHUNK))));
                }
                done = done.max(e);
                cur = None;
            }
            match next_extent(file, size, pos) {
                Err(e) => return Some(Err(e)),
                Ok(None) => return None,
                Ok(Some((s, e))) => {
                    pos = e;
                    let s = (s & !(granule - 1)).max(done);
                    let e = crate::round_up(e, granule).unwrap_or(end_all).min(end_all);
                    cur = Some((s, e));
                }
            }
        }
    }))
}

/// Calls `f(offset, chunk)` for the data of `file` (of `size` bytes) in the chunks of
/// [`data_chunks`], read into one reused buffer.
pub(crate) fn for_each_data_chunk(
    file: &File,
    size: u64,
    granule: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), DiskFmtError>,
) -> Result<(), DiskFmtError> {
    let mut buf = Vec::new();
    for c in data_chunks(file, size, granule)? {
        let (off, len) = c?;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let b = &mut buf[..len];
        read_at_padded(file, b, off, size)?;
        f(off, b)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn sparse(size: u64, data: &[(u64, &[u8])]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for (off, d) in data {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(d).unwrap();
        }
        f
    }

    fn collect(f: &File, size: u64, granule: u64) -> Vec<(u64, Vec<u8>)> {
        let mut v = Vec::new();
        for_each_data_chunk(f, size, granule, |o, b| {
            v.push((o, b.to_vec()));
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn chunks_cover_data_once_aligned() {
        let size = 64 << 20;
        let f = sparse(
            size,
            &[
                (5000, b"abc"),
                (10 << 20, &[7u8; 3 << 20]),
                (size - 1, b"z"),
            ],
        );
        let chunks = collect(&f, size, 65536);
        let mut last_end = 0;
        let mut got = vec![];
        for (o, b) in &chunks {
            assert_eq!(o % 65536, 0);
            assert_eq!(b.len() % 65536, 0);
            assert!(*o >= last_end, "overlap");
            last_end = o + b.len() as u64;
            for (i, &x) in b.iter().enumerate() {
                if x != 0 {
                    got.push(o + i as u64);
                }
            }
        }
        let mut want: Vec<u64> = vec![5000, 5001, 5002];
        want.extend((10u64 << 20)..(13 << 20));
        want.push(size - 1);
        assert_eq!(got, want);
    }

    #[test]
    fn tail_is_zero_padded() {
        let size = 4096 + 512;
        let f = sparse(size, &[(4096, &[1u8; 512])]);
        let chunks = collect(&f, size, 8192);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0, 0);
        assert_eq!(chunks[0].1.len(), 8192);
        assert!(chunks[0].1[4096..4608].iter().all(|&b| b == 1));
        assert!(sparse::is_zero(&chunks[0].1[4608..]));
    }

    #[test]
    fn empty_file_yields_nothing() {
        let f = sparse(1 << 20, &[]);
        assert!(collect(&f, 1 << 20, 512).is_empty());
    }
}
