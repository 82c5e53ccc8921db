//! Content-defined sparse scanning of an input file (shared by every format of
//! docs/formats/outputs.md).
//!
//! In: an open file. Out: a sequence of calls on a [`Sink`]: `data(bytes)` and `zeros(len)`,
//! in file order, covering the whole file exactly once.
//!
//! The split is a function of the file's *content* only: the file is cut into 4 KiB blocks at
//! multiples of 4 KiB (the last one may be shorter); a block is "zero" if all its bytes are zero,
//! whether it lies in a hole or was written. `lseek(SEEK_DATA/SEEK_HOLE)` only spares reading
//! the holes. Zero runs shorter than the caller's `min_zero` are handed over as data (zero
//! bytes), so a format can choose how long a run must be before it treats it specially.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{Result, io_err};

/// Granularity of zero detection: 4 KiB, aligned to file offset 0.
pub(crate) const BLOCK: u64 = 4096;
/// Read buffer for data extents.
const READ_BUF: usize = 1 << 20;
/// A run of zeros handed to sinks as "data" when a zero run is too short (or needs bytes).
pub(crate) static ZEROS: [u8; 1 << 17] = [0; 1 << 17];

/// Receives the content of a file as data and zero runs.
pub(crate) trait Sink {
    /// Bytes of data (may contain zeros).
    fn data(&mut self, buf: &[u8]) -> Result<()>;
    /// `len` zero bytes (a run at least `min_zero` long, or the end of file).
    fn zeros(&mut self, len: u64) -> Result<()>;
}

/// Feeds `len` zero bytes to `sink` as data.
pub(crate) fn zeros_as_data(sink: &mut dyn Sink, mut len: u64) -> Result<()> {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64);
        // n <= ZEROS.len(), so the cast is lossless
        sink.data(&ZEROS[..n as usize])?;
        len -= n;
    }
    Ok(())
}

/// Merges zero runs and turns the short ones into data.
struct Coalescer<'a> {
    sink: &'a mut dyn Sink,
    min_zero: u64,
    pending: u64,
}

impl Coalescer<'_> {
    fn zeros(&mut self, len: u64) {
        self.pending += len;
    }

    fn data(&mut self, buf: &[u8]) -> Result<()> {
        self.flush()?;
        self.sink.data(buf)
    }

    fn flush(&mut self) -> Result<()> {
        let n = std::mem::take(&mut self.pending);
        if n == 0 {
            Ok(())
        } else if n >= self.min_zero {
            self.sink.zeros(n)
        } else {
            zeros_as_data(self.sink, n)
        }
    }
}

/// Where the next data extent is, at or after `pos` (4 KiB aligned): `(start, end)` rounded out
/// to 4 KiB and clamped to `size`; `(size, size)` if only holes remain.
fn next_extent(file: &File, pos: u64, size: u64, path: &str) -> Result<(u64, u64)> {
    let Some((data, hole)) =
        sparse::next_data(file, pos, size).map_err(io_err(format!("seeking data in {path}")))?
    else {
        return Ok((size, size));
    };
    let start = (data / BLOCK * BLOCK).max(pos);
    let end = hole.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
    Ok((start, end.max(start)))
}

/// Hands the runs of 4 KiB blocks of `buf` (starting at a block boundary) to `c`.
fn classify(buf: &[u8], c: &mut Coalescer<'_>) -> Result<()> {
    let mut run_start = 0usize;
    let mut run_zero = None::<bool>;
    let mut i = 0usize;
    while i < buf.len() {
        let end = (i + BLOCK as usize).min(buf.len());
        let z = sparse::is_zero(&buf[i..end]);
        if run_zero != Some(z) {
            if let Some(prev) = run_zero {
                emit(&buf[run_start..i], prev, c)?;
            }
            run_start = i;
            run_zero = Some(z);
        }
        i = end;
    }
    if let Some(prev) = run_zero {
        emit(&buf[run_start..], prev, c)?;
    }
    Ok(())
}

fn emit(buf: &[u8], zero: bool, c: &mut Coalescer<'_>) -> Result<()> {
    if zero {
        c.zeros(buf.len() as u64);
        Ok(())
    } else {
        c.data(buf)
    }
}

/// Scans `file` (named `path` in errors) from offset 0 to its size, calling `sink`; zero runs
/// shorter than `min_zero` bytes arrive as data. Returns the file size.
pub(crate) fn scan(file: &File, path: &str, min_zero: u64, sink: &mut dyn Sink) -> Result<u64> {
    let size = file
        .metadata()
        .map_err(io_err(format!("stat {path}")))?
        .len();
    let mut c = Coalescer {
        sink,
        min_zero: min_zero.max(1),
        pending: 0,
    };
    let mut buf = vec![0u8; READ_BUF];
    let mut pos = 0u64;
    while pos < size {
        let (start, end) = next_extent(file, pos, size, path)?;
        c.zeros(start - pos);
        let mut off = start;
        while off < end {
            // bounded by READ_BUF, so the cast is lossless
            let n = (end - off).min(READ_BUF as u64) as usize;
            file.read_exact_at(&mut buf[..n], off)
                .map_err(io_err(format!("reading {path} at {off}")))?;
            classify(&buf[..n], &mut c)?;
            off += n as u64;
        }
        pos = end.max(start);
        if end == start && start < size {
            // cannot happen with a sane lseek; make progress anyway
            pos = size;
        }
    }
    c.flush()?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Write;

    #[derive(Default)]
    struct Rec(Vec<(bool, u64)>, Vec<u8>);
    impl Sink for Rec {
        fn data(&mut self, buf: &[u8]) -> Result<()> {
            match self.0.last_mut() {
                Some((false, n)) => *n += buf.len() as u64,
                _ => self.0.push((false, buf.len() as u64)),
            }
            self.1.extend_from_slice(buf);
            Ok(())
        }
        fn zeros(&mut self, len: u64) -> Result<()> {
            self.0.push((true, len));
            self.1.resize(self.1.len() + len as usize, 0);
            Ok(())
        }
    }

    #[test]
    fn content_defined_runs() {
        let mut f = tempfile::tempfile().unwrap();
        let mut content = vec![0u8; 64 << 10];
        content[5000] = 1; // block 1 is data
        content[40000..41000].fill(7); // blocks 9..=10
        content.extend_from_slice(&[0, 0, 3]); // short tail block, data
        f.write_all(&content).unwrap();
        f.set_len(content.len() as u64 + (1 << 20)).unwrap(); // trailing hole
        content.resize(content.len() + (1 << 20), 0);

        let mut r = Rec::default();
        let size = scan(&f, "t", BLOCK, &mut r).unwrap();
        assert_eq!(size, content.len() as u64);
        assert_eq!(r.1, content);
        assert_eq!(
            r.0,
            vec![
                (true, 4096),
                (false, 4096),
                (true, 28672),
                (false, 8192),
                (true, 20480),
                (false, 4096), // the 3-byte tail's block, padded by the hole
                (true, content.len() as u64 - 69632)
            ]
        );

        // with a larger threshold only the 1 MiB hole stays a zero run
        let mut r = Rec::default();
        scan(&f, "t", 64 << 10, &mut r).unwrap();
        assert_eq!(r.1, content);
        assert_eq!(
            r.0,
            vec![(false, 69632), (true, content.len() as u64 - 69632)]
        );
    }

    #[test]
    fn partial_last_block() {
        let mut f = tempfile::tempfile().unwrap();
        let mut content = vec![0u8; 5000];
        content[4999] = 9;
        f.write_all(&content).unwrap();
        let mut r = Rec::default();
        scan(&f, "t", BLOCK, &mut r).unwrap();
        assert_eq!(r.1, content);
        assert_eq!(r.0, vec![(true, 4096), (false, 904)]);
    }

    #[test]
    fn empty_and_all_hole() {
        let f = tempfile::tempfile().unwrap();
        let mut r = Rec::default();
        assert_eq!(scan(&f, "t", BLOCK, &mut r).unwrap(), 0);
        assert!(r.0.is_empty());
        f.set_len(10_000).unwrap();
        let mut r = Rec::default();
        scan(&f, "t", BLOCK, &mut r).unwrap();
        assert_eq!(r.0, vec![(true, 10_000)]);
    }
}
