//! A parallel gzip writer of our own, pigz-style (docs/formats/outputs.md: `.gz` is `pigz -6
//! --no-time`, and `.tar.gz` pipes tar through it).
//!
//! In: bytes (and runs of zeros) in order. Out: **one** gzip member (RFC 1952): header with
//! mtime 0, no name, XFL as pigz writes it (2 for level 9, 4 for level 1, else 0), OS 3 (Unix,
//! like pigz and gzip); raw deflate; CRC32 and ISIZE of the whole input.
//!
//! The input is cut into fixed 128 KiB chunks (pigz's default `-b 128`). Each chunk is
//! deflated independently on a worker thread, primed with the last 32 KiB of the previous chunk
//! as the dictionary (as pigz does), and ended with a sync flush (an empty stored block, so the
//! chunks concatenate on byte boundaries); the last chunk ends the deflate stream. Since the
//! chunking is fixed and each chunk's bytes depend only on (dictionary, chunk, level), the output
//! does not depend on the thread count or on scheduling. A chunk of zeros primed with zeros is
//! deflated once per writer and reused, which makes the holes of sparse images nearly free.
//!
//! Memory: at most `2 × threads + 2` chunks in flight (~160 KiB each plus their output).

use std::io::{self, Write};
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::pool::Pool;
use crate::scan::{self, BLOCK, Sink};
use crate::{Error, Result, io_err, resolve_threads};

/// Size of the chunks compressed independently (pigz's default block size, 128 KiB).
pub const CHUNK_SIZE: usize = 128 << 10;
/// Deflate window, used as the priming dictionary of each chunk.
const DICT_SIZE: usize = 32 << 10;

/// Dictionary of a chunk: none (first chunk), 32 KiB of zeros, or the previous chunk's tail.
enum Dict {
    None,
    Zero,
    Bytes(Vec<u8>),
}

/// Uncompressed content of a chunk.
enum Data {
    /// A full chunk of zeros.
    Zero,
    Bytes(Vec<u8>),
}

/// Deflates one chunk as raw deflate with the given dictionary, ending with a sync flush (or the
/// final block when `last`).
///
/// The compressor is fresh for every chunk: zlib-rs' `reset` keeps the old window and `prev`
/// chains, which can change the matches it picks (seen: one byte of difference depending on
/// which worker had compressed what before), while a new state is zeroed.
fn deflate_chunk(level: u32, dict: &Dict, data: &[u8], last: bool) -> Result<Vec<u8>> {
    let err = |e: flate2::CompressError| Error::Io {
        context: "deflating a chunk".into(),
        source: io::Error::other(e),
    };
    let mut c = Compress::new(Compression::new(level), false);
    match dict {
        Dict::None => {}
        Dict::Zero => {
            c.set_dictionary(&scan::ZEROS[..DICT_SIZE]).map_err(err)?;
        }
        Dict::Bytes(d) => {
            c.set_dictionary(d).map_err(err)?;
        }
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 256);
    let mut consumed = 0usize;
    loop {
        let before = c.total_in();
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(err)?;
        // total_in grows by at most data.len(), which fits usize
        consumed += usize::try_from(c.total_in() - before).unwrap_or(usize::MAX);
        let room = out.len() < out.capacity();
        let done = if last {
            status == Status::StreamEnd
        } else {
            consumed >= data.len() && room
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

impl<W: Write> std::fmt::Debug for ParallelGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzEncoder")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Streaming parallel gzip encoder: feed it with [`write_all`](Self::write_all) /
/// [`write_zeros`](Self::write_zeros) (or [`io::Write`]), then call [`finish`](Self::finish).
///
/// Dropping it without `finish` stops the workers and leaves `dst` with a truncated member.
pub struct ParallelGzEncoder<W: Write> {
    dst: W,
    /// Chunk being filled (`len < CHUNK_SIZE`, or full and waiting to know whether it is last).
    buf: Vec<u8>,
    /// A full chunk (and its dictionary) held back until we know whether more input follows.
    pending: Option<(Dict, Data)>,
    /// Dictionary of the chunk after the pending one (the pending chunk's tail).
    next_dict: Dict,
    /// Deflated zero chunk primed with zeros (not last).
    zero_chunk: Vec<u8>,
    zero_crc: crc32fast::Hasher,
    crc: crc32fast::Hasher,
    total: u64,
    level: u32,
    pool: Pool<Vec<u8>>,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// Starts a gzip member on `dst` with deflate `level` (0–9) and `threads` workers
    /// (0 = all cores). Writes the 10-byte header at once.
    pub fn new(mut dst: W, level: u32, threads: usize) -> Result<Self> {
        if level > 9 {
            return Err(Error::InvalidArgument(format!(
                "gzip level {level} (expected 0-9)"
            )));
        }
        let threads = resolve_threads(threads);
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        dst.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])
            .map_err(io_err("writing gzip header"))?;

        let zero_chunk = deflate_chunk(level, &Dict::Zero, &scan::ZEROS[..CHUNK_SIZE], false)?;
        let mut zero_crc = crc32fast::Hasher::new();
        zero_crc.update(&scan::ZEROS[..CHUNK_SIZE]);

        Ok(ParallelGzEncoder {
            dst,
            buf: Vec::with_capacity(CHUNK_SIZE),
            pending: None,
            next_dict: Dict::None,
            zero_chunk,
            zero_crc,
            crc: crc32fast::Hasher::new(),
            total: 0,
            level,
            pool: Pool::new(threads, "gz")?,
        })
    }

    /// Appends `data` to the member.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK_SIZE {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE));
                self.push(Data::Bytes(full))?;
            }
        }
        Ok(())
    }

    /// Appends `len` zero bytes; whole zero chunks are neither materialised nor re-deflated.
    pub fn write_zeros(&mut self, mut len: u64) -> Result<()> {
        while len > 0 {
            if self.buf.is_empty() && len >= CHUNK_SIZE as u64 {
                self.push(Data::Zero)?;
                len -= CHUNK_SIZE as u64;
            } else {
                let room = (CHUNK_SIZE - self.buf.len()) as u64;
                let n = room.min(len);
                // n <= CHUNK_SIZE
                self.write_all(&scan::ZEROS[..n as usize])?;
                len -= n;
            }
        }
        Ok(())
    }

    /// Uncompressed bytes written so far.
    pub fn total_in(&self) -> u64 {
        let pending = if self.pending.is_some() {
            CHUNK_SIZE
        } else {
            0
        };
        self.total + (pending + self.buf.len()) as u64
    }

    /// Queues a full chunk; the previously held one is dispatched (it is not the last).
    fn push(&mut self, data: Data) -> Result<()> {
        let tail = match &data {
            Data::Zero => Dict::Zero,
            Data::Bytes(b) => {
                let tail = &b[b.len() - DICT_SIZE..];
                if sparse::is_zero(tail) {
                    Dict::Zero
                } else {
                    Dict::Bytes(tail.to_vec())
                }
            }
        };
        let dict = std::mem::replace(&mut self.next_dict, tail);
        if let Some((d, prev)) = self.pending.replace((dict, data)) {
            self.dispatch(d, prev, false)?;
        }
        Ok(())
    }

    /// Sends one chunk to the workers (or resolves it from the zero cache).
    fn dispatch(&mut self, dict: Dict, data: Data, last: bool) -> Result<()> {
        match &data {
            Data::Zero => {
                self.crc.combine(&self.zero_crc);
                self.total += CHUNK_SIZE as u64;
            }
            Data::Bytes(b) => {
                self.crc.update(b);
                self.total += b.len() as u64;
            }
        }
        let dst = &mut self.dst;
        let out = &mut |b: Vec<u8>| dst.write_all(&b).map_err(io_err("writing gzip output"));
        if matches!((&dict, &data, last), (Dict::Zero, Data::Zero, false)) {
            self.pool.submit_ready(self.zero_chunk.clone(), out)
        } else {
            let level = self.level;
            self.pool.submit(
                move || {
                    let bytes: &[u8] = match &data {
                        Data::Zero => &scan::ZEROS[..CHUNK_SIZE],
                        Data::Bytes(b) => b,
                    };
                    deflate_chunk(level, &dict, bytes, last)
                },
                out,
            )
        }
    }

    /// Ends the member (final deflate block, CRC32, ISIZE), stops the workers and returns `dst`
    /// (flushed).
    pub fn finish(mut self) -> Result<W> {
        let tail = std::mem::take(&mut self.buf);
        match self.pending.take() {
            Some((dict, prev)) if tail.is_empty() => {
                let prev = match prev {
                    // the last chunk is never served from the cache: materialise it
                    Data::Zero => Data::Bytes(scan::ZEROS[..CHUNK_SIZE].to_vec()),
                    b => b,
                };
                self.dispatch(dict, prev, true)?;
            }
            Some((dict, prev)) => {
                self.dispatch(dict, prev, false)?;
                let dict = std::mem::replace(&mut self.next_dict, Dict::None);
                self.dispatch(dict, Data::Bytes(tail), true)?;
            }
            None => self.dispatch(Dict::None, Data::Bytes(tail), true)?,
        }
        let ParallelGzEncoder {
            mut dst,
            pool,
            crc,
            total,
            ..
        } = self;
        pool.finish(&mut |b| dst.write_all(&b).map_err(io_err("writing gzip output")))?;
        let crc = crc.finalize();
        // ISIZE is the input size modulo 2^32 (RFC 1952)
        let isize = (total & 0xffff_ffff) as u32;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        trailer[4..].copy_from_slice(&isize.to_le_bytes());
        dst.write_all(&trailer)
            .and_then(|()| dst.flush())
            .map_err(io_err("writing gzip trailer"))?;
        Ok(dst)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // chunks are fixed: nothing can be flushed before a chunk is full
        Ok(())
    }
}

/// Feeds scanned runs into a [`ParallelGzEncoder`].
pub(crate) struct GzSink<'a, W: Write>(pub(crate) &'a mut ParallelGzEncoder<W>);

impl<W: Write> Sink for GzSink<'_, W> {
    fn data(&mut self, buf: &[u8]) -> Result<()> {
        self.0.write_all(buf)
    }
    fn zeros(&mut self, len: u64) -> Result<()> {
        self.0.write_zeros(len)
    }
}

/// Compresses the file at `src` into `dst` as one gzip member (Talos: `pigz -6 --no-time`),
/// deflate `level` 0–9, `threads` workers (0 = all cores).
pub fn gzip<W: Write>(src: &Path, dst: &mut W, level: u32, threads: usize) -> Result<()> {
    let name = src.display().to_string();
    let file = std::fs::File::open(src).map_err(io_err(format!("opening {name}")))?;
    let out = io::BufWriter::with_capacity(1 << 20, dst);
    let mut gz = ParallelGzEncoder::new(out, level, threads)?;
    scan::scan(&file, &name, BLOCK, &mut GzSink(&mut gz))?;
    gz.finish()?.flush().map_err(io_err("flushing gzip output"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = flate2::read::GzDecoder::new(b);
        io::Read::read_to_end(&mut d, &mut out).unwrap();
        out
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if (i / 50_000) % 3 == 0 {
                    0
                } else {
                    (x % 7) as u8
                }
            })
            .collect()
    }

    #[test]
    fn zero_chunks_match_fresh_deflate() {
        // write_zeros and write_all of the same zeros give the same bytes
        let mut input = data(300_000);
        input.resize(input.len() + 1_000_000, 0);
        input.extend_from_slice(&data(70_000));
        let mut a = ParallelGzEncoder::new(Vec::new(), 6, 2).unwrap();
        a.write_all(&input).unwrap();
        let a = a.finish().unwrap();
        let mut b = ParallelGzEncoder::new(Vec::new(), 6, 3).unwrap();
        b.write_all(&input[..300_000]).unwrap();
        b.write_zeros(1_000_000).unwrap();
        b.write_all(&input[1_300_000..]).unwrap();
        let b = b.finish().unwrap();
        assert_eq!(a, b);
        assert_eq!(gunzip(&a), input);
    }

    #[test]
    fn sizes_and_levels() {
        for n in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
        ] {
            for level in [0, 1, 6, 9] {
                let input = data(n);
                let mut e = ParallelGzEncoder::new(Vec::new(), level, 2).unwrap();
                e.write_all(&input).unwrap();
                let out = e.finish().unwrap();
                assert_eq!(gunzip(&out), input, "n={n} level={level}");
            }
        }
        for n in [CHUNK_SIZE as u64, 5 * CHUNK_SIZE as u64 + 3] {
            let mut e = ParallelGzEncoder::new(Vec::new(), 6, 1).unwrap();
            e.write_zeros(n).unwrap();
            let out = e.finish().unwrap();
            assert_eq!(gunzip(&out), vec![0u8; n as usize]);
        }
        assert!(ParallelGzEncoder::new(Vec::new(), 10, 1).is_err());
    }
}
