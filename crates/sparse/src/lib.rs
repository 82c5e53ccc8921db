//! Sparse files: where their data is.
//!
//! In: a file and a position. Out: the next data extent `[start, end)` as the filesystem reports
//! it with `lseek(SEEK_DATA/SEEK_HOLE)`, clamped to a given size; on filesystems without hole
//! support everything from the position on is data. Shared by the disk-format writers and the
//! post-processing compressors, which both stream multi-GiB images holding little data.

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::io;

/// The next data extent `[start, end)` at or after `pos`, clamped to `size` (`end > start`);
/// `None` when only holes remain below `size`.
pub fn next_data(file: &File, pos: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= size {
        return Ok(None);
    }
    let off = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let start = match lseek(file, off(pos), Whence::SeekData) {
        Ok(s) => s.unsigned_abs().max(pos),
        Err(Errno::ENXIO) => return Ok(None),
        // no hole support on this filesystem: everything is data
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok(Some((pos, size))),
        Err(e) => return Err(e.into()),
    };
    if start >= size {
        return Ok(None);
    }
    let end = match lseek(file, off(start), Whence::SeekHole) {
        Ok(e) => e.unsigned_abs(),
        Err(Errno::ENXIO | Errno::EINVAL | Errno::EOPNOTSUPP) => size,
        Err(e) => return Err(e.into()),
    };
    let end = if end <= start { size } else { end.min(size) };
    Ok(Some((start, end)))
}

/// Whether `buf` is all zero bytes.
pub fn is_zero(buf: &[u8]) -> bool {
    // OR-folding fixed-size pieces vectorizes well; stop at the first non-zero piece
    buf.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_extents_and_skips_holes() {
        let f = tempfile::tempfile().unwrap();
        let mib = 1u64 << 20;
        f.set_len(64 * mib).unwrap();
        f.write_all_at(b"x", 8 * mib + 5).unwrap();
        f.write_all_at(b"y", 40 * mib).unwrap();
        let (s, e) = next_data(&f, 0, 64 * mib).unwrap().unwrap();
        assert!(
            s <= 8 * mib + 5 && e > 8 * mib + 5 && e <= 40 * mib,
            "{s} {e}"
        );
        let (s2, e2) = next_data(&f, e, 64 * mib).unwrap().unwrap();
        assert!(s2 <= 40 * mib && e2 > 40 * mib);
        assert_eq!(next_data(&f, e2, 64 * mib).unwrap(), None);
        // clamped to the given size
        assert_eq!(next_data(&f, 0, 4096).unwrap(), None);
        assert_eq!(next_data(&f, 100, 100).unwrap(), None);
    }

    #[test]
    fn zero_check() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 10000]));
        let mut v = vec![0; 10000];
        v[9999] = 1;
        assert!(!is_zero(&v));
    }
}
