//! `.tar.gz` post-processing (docs/formats/outputs.md: Talos renames the image to `disk.raw` and
//! runs `tar -cvf - --sparse --sort=name --owner=0 --group=0 --numeric-owner --mtime=@EPOCH
//! disk.raw | pigz -6 --no-time`; GCP imports the result).
//!
//! In: a file path, the member name, the mtime. Out: a tar stream with that one regular file,
//! gzipped with [`ParallelGzEncoder`](crate::ParallelGzEncoder) (or plain, [`tar_sparse`]).
//!
//! Format: what GNU tar writes by default for `--sparse` (its `gnu` format), the **old GNU
//! sparse** member: type `S`, magic `"ustar  \0"`, the sparse map in the header (4 entries at
//! offset 386), `isextended` (482) and `realsize` (483), more entries in extension blocks of 21
//! each, then the data regions concatenated and padded to 512 bytes. As GNU tar does, the map
//! always ends with a zero-length entry at the file size (GNU tar's extractor truncates there).
//! This is the format GCP documents for image imports (`tar --format=oldgnu -S`), and both GNU
//! `tar -x` and Python's `tarfile` read it. Numbers that do not fit their octal field (sizes of
//! 8 GiB and more) use GNU's base-256 encoding. Header fields are those of GNU tar with the flags
//! above: mode 0644, uid/gid 0, empty user/group names, the given mtime; the archive ends with
//! two zero blocks and is padded to GNU tar's 10 KiB record. A file without any all-zero 4 KiB
//! block is written as a plain regular member (type `0`), as GNU tar does for non-sparse files.
//!
//! Holes are the content-defined zero blocks of `scan` (`SEEK_DATA`/`SEEK_HOLE` holes plus
//! all-zero 4 KiB blocks). The file is read twice: once to build the map (the header needs it
//! first), once to stream the data; only data extents are read.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::gz::{GzSink, ParallelGzEncoder};
use crate::scan::{self, BLOCK, Sink};
use crate::{Error, Result, io_err};

const TBLOCK: usize = 512;
/// GNU tar's default record: 20 blocks of 512 bytes.
const RECORD: u64 = 10240;
const SPARSES_IN_HEADER: usize = 4;
const SPARSES_IN_EXT: usize = 21;

/// Records the data runs of a file: `(offset, length)`.
#[derive(Default)]
struct MapSink {
    pos: u64,
    runs: Vec<(u64, u64)>,
}

impl Sink for MapSink {
    fn data(&mut self, buf: &[u8]) -> Result<()> {
        let n = buf.len() as u64;
        match self.runs.last_mut() {
            Some((o, l)) if *o + *l == self.pos => *l += n,
            _ => self.runs.push((self.pos, n)),
        }
        self.pos += n;
        Ok(())
    }
    fn zeros(&mut self, len: u64) -> Result<()> {
        self.pos += len;
        Ok(())
    }
}

/// Writes `v` into a numeric field: octal, zero-padded, NUL-terminated if it fits, else GNU
/// base-256 (first byte 0x80, big-endian value).
fn put_num(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || v < (1u64 << (3 * digits)) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        field[0] = 0x80;
    }
}

fn put_str(field: &mut [u8], s: &str) {
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// The header block(s) of the member: main header plus sparse extension blocks.
fn headers(name: &str, mtime: u64, size: u64, runs: &[(u64, u64)]) -> Vec<u8> {
    // not sparse: one data run covering the whole file (or an empty file)
    let sparse = !(size == 0 || runs == [(0, size)]);
    let mut map: Vec<(u64, u64)> = runs.to_vec();
    map.push((size, 0));
    let stored: u64 = if sparse {
        runs.iter().map(|r| r.1).sum()
    } else {
        size
    };

    let mut h = vec![0u8; TBLOCK];
    put_str(&mut h[0..100], name);
    put_num(&mut h[100..108], 0o644);
    put_num(&mut h[108..116], 0);
    put_num(&mut h[116..124], 0);
    put_num(&mut h[124..136], stored);
    put_num(&mut h[136..148], mtime);
    h[156] = if sparse { b'S' } else { b'0' };
    h[257..265].copy_from_slice(b"ustar  \0");
    let mut ext = Vec::new();
    if sparse {
        let (first, rest) = map.split_at(map.len().min(SPARSES_IN_HEADER));
        for (i, &(o, l)) in first.iter().enumerate() {
            let at = 386 + i * 24;
            put_num(&mut h[at..at + 12], o);
            put_num(&mut h[at + 12..at + 24], l);
        }
        h[482] = u8::from(!rest.is_empty());
        put_num(&mut h[483..495], size);
        let chunks: Vec<&[(u64, u64)]> = rest.chunks(SPARSES_IN_EXT).collect();
        for (ci, chunk) in chunks.iter().enumerate() {
            let mut e = [0u8; TBLOCK];
            for (i, &(o, l)) in chunk.iter().enumerate() {
                let at = i * 24;
                put_num(&mut e[at..at + 12], o);
                put_num(&mut e[at + 12..at + 24], l);
            }
            e[504] = u8::from(ci + 1 < chunks.len());
            ext.extend_from_slice(&e);
        }
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h.extend_from_slice(&ext);
    h
}

/// Writes the whole archive for `file` to `out` (data as `data`, padding as `zeros`).
fn write_tar(
    file: &File,
    path: &str,
    member_name: &str,
    mtime: u64,
    out: &mut dyn Sink,
) -> Result<()> {
    if member_name.is_empty() || member_name.len() > 100 || member_name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "tar member name {member_name:?} (1-100 bytes, no NUL)"
        )));
    }
    let mut map = MapSink::default();
    let size = scan::scan(file, path, BLOCK, &mut map)?;
    let head = headers(member_name, mtime, size, &map.runs);
    out.data(&head)?;
    let mut written = head.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    for &(o, l) in &map.runs {
        let mut off = o;
        while off < o + l {
            // bounded by the buffer length
            let n = (o + l - off).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], off)
                .map_err(io_err(format!("reading {path} at {off}")))?;
            out.data(&buf[..n])?;
            off += n as u64;
            written += n as u64;
        }
    }
    // pad the data, two end-of-archive blocks, then up to the record size
    let padded = written.div_ceil(TBLOCK as u64) * TBLOCK as u64 + 2 * TBLOCK as u64;
    let end = padded.div_ceil(RECORD) * RECORD;
    out.zeros(end - written)
}

struct WriteSink<W: Write>(W);

impl<W: Write> Sink for WriteSink<W> {
    fn data(&mut self, buf: &[u8]) -> Result<()> {
        self.0.write_all(buf).map_err(io_err("writing tar output"))
    }
    fn zeros(&mut self, len: u64) -> Result<()> {
        scan::zeros_as_data(self, len)
    }
}

fn open(src: &Path) -> Result<(File, String)> {
    let name = src.display().to_string();
    let f = File::open(src).map_err(io_err(format!("opening {name}")))?;
    Ok((f, name))
}

/// Writes a sparse tar (uncompressed) holding the file at `src` as `member_name`, with the
/// given `mtime` (see the module documentation for the exact format).
pub fn tar_sparse<W: Write>(src: &Path, member_name: &str, dst: &mut W, mtime: u64) -> Result<()> {
    let (file, name) = open(src)?;
    let mut out = WriteSink(io::BufWriter::with_capacity(1 << 20, dst));
    write_tar(&file, &name, member_name, mtime, &mut out)?;
    out.0.flush().map_err(io_err("flushing tar output"))
}

/// Writes `tar --sparse` of the file at `src` as `member_name` (Talos: `disk.raw`), with the
/// given `mtime`, gzipped at `level` 0–9 with `threads` workers (0 = all cores) — Talos'
/// `.tar.gz` (`… | pigz -6 --no-time`).
pub fn tar_gz_sparse<W: Write>(
    src: &Path,
    member_name: &str,
    dst: &mut W,
    mtime: u64,
    level: u32,
    threads: usize,
) -> Result<()> {
    let (file, name) = open(src)?;
    let out = io::BufWriter::with_capacity(1 << 20, dst);
    let mut gz = ParallelGzEncoder::new(out, level, threads)?;
    write_tar(&file, &name, member_name, mtime, &mut GzSink(&mut gz))?;
    gz.finish()?
        .flush()
        .map_err(io_err("flushing tar.gz output"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn numbers() {
        let mut f = [0u8; 12];
        put_num(&mut f, 0o644);
        assert_eq!(&f, b"00000000644\0");
        put_num(&mut f, (1 << 33) - 1);
        assert_eq!(&f, b"77777777777\0");
        put_num(&mut f, 1 << 33);
        assert_eq!(f, [0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        let mut m = [0u8; 8];
        put_num(&mut m, 0o644);
        assert_eq!(&m, b"0000644\0");
    }

    #[test]
    fn extension_blocks() {
        let runs: Vec<(u64, u64)> = (0..30).map(|i| (i * 8192, 4096)).collect();
        let h = headers("disk.raw", 0, 30 * 8192, &runs);
        // 31 map entries: 4 in the header, 21 + 6 in two extension blocks
        assert_eq!(h.len(), 3 * TBLOCK);
        assert_eq!(h[482], 1);
        assert_eq!(h[TBLOCK + 504], 1);
        assert_eq!(h[2 * TBLOCK + 504], 0);
        assert_eq!(
            &h[2 * TBLOCK + 5 * 24..2 * TBLOCK + 5 * 24 + 12],
            b"00000740000\0"
        );
    }
}
