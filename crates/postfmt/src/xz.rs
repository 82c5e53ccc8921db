//! `.xz` post-processing (docs/formats/outputs.md: Talos runs `xz -0 -f -T 0`).
//!
//! In: a file path, an xz preset (0–9) and a thread count. Out: one .xz stream (LZMA2, CRC64)
//! laid out exactly as liblzma's multithreaded encoder (`xz -T2`, `MtStreamBuilder`) lays it
//! out, byte for byte: the input is cut into blocks of a **fixed** size, liblzma's default
//! `max(3 × dictionary size, 1 MiB)` (1 MiB for preset 0, spelled out in [`xz_block_size`] so
//! that it cannot drift); each block is compressed independently by liblzma's raw LZMA2 encoder
//! on a worker thread and framed with a block header that records both sizes, padding and the
//! CRC64 of its content; then the index and the stream footer. The output therefore depends on
//! the content and the preset only, never on the thread count.
//!
//! We write the container ourselves (rather than feeding `MtStreamBuilder`) so that blocks made
//! only of zeros — the holes of a sparse image — are compressed once and reused, instead of
//! running the match finder over gigabytes of zeros (the bundled liblzma is built without its
//! fast unaligned-access paths: 5.5 s of CPU per GB of zeros at preset 0). The unit tests check
//! that the bytes equal `MtStreamBuilder`'s.
//!
//! Memory: up to `2 × threads + 2` blocks in flight (input and output, ~2 MiB each at preset 0)
//! plus one liblzma encoder per worker.

use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;

use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

use crate::pool::Pool;
use crate::scan::{self, BLOCK, Sink};
use crate::{Error, Result, io_err, resolve_threads};

const HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
/// Stream flags: check type CRC64.
const STREAM_FLAGS: [u8; 2] = [0, 0x04];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
const LZMA2_FILTER_ID: u8 = 0x21;

/// Dictionary size of an xz preset (0–9).
fn dict_size(preset: u32) -> u32 {
    const MIB: u32 = 1 << 20;
    match preset {
        0 => 256 << 10,
        1 => MIB,
        2 => 2 * MIB,
        3 | 4 => 4 * MIB,
        5 | 6 => 8 * MIB,
        7 => 16 * MIB,
        8 => 32 * MIB,
        _ => 64 * MIB,
    }
}

/// The .xz block size used for `preset` (0–9): `max(3 × dict_size, 1 MiB)`, liblzma's default
/// for its multithreaded encoder, with the dictionary sizes of the xz presets.
pub fn xz_block_size(preset: u32) -> u64 {
    (3 * u64::from(dict_size(preset))).max(1 << 20)
}

/// LZMA2 filter property byte: the smallest encoded dictionary size ≥ `dict`
/// (`2^(n/2 + 12)` for even n, `3 × 2^((n-1)/2 + 11)` for odd n; 40 = 4 GiB − 1).
fn lzma2_dict_prop(dict: u32) -> u8 {
    (0u8..40)
        .find(|&n| (u64::from(2 | (n & 1)) << (n / 2 + 11)) >= u64::from(dict))
        .unwrap_or(40)
}

/// CRC-64/XZ (ECMA-182 polynomial, reflected), as the .xz check.
#[derive(Clone)]
struct Crc64(u64);

fn crc64_table() -> &'static [[u64; 256]; 8] {
    static T: OnceLock<[[u64; 256]; 8]> = OnceLock::new();
    T.get_or_init(|| {
        const POLY: u64 = 0xC96C_5795_D787_0F42;
        let mut t = [[0u64; 256]; 8];
        for (i, e) in t[0].iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *e = c;
        }
        for k in 1..8 {
            for i in 0..256 {
                let p = t[k - 1][i];
                t[k][i] = (p >> 8) ^ t[0][(p & 0xff) as usize];
            }
        }
        t
    })
}

impl Crc64 {
    fn new() -> Self {
        Crc64(!0)
    }

    fn update(&mut self, data: &[u8]) {
        let t = crc64_table();
        let mut c = self.0;
        let mut chunks = data.chunks_exact(8);
        for w in &mut chunks {
            let v = c ^ u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            c = t[7][(v & 0xff) as usize]
                ^ t[6][((v >> 8) & 0xff) as usize]
                ^ t[5][((v >> 16) & 0xff) as usize]
                ^ t[4][((v >> 24) & 0xff) as usize]
                ^ t[3][((v >> 32) & 0xff) as usize]
                ^ t[2][((v >> 40) & 0xff) as usize]
                ^ t[1][((v >> 48) & 0xff) as usize]
                ^ t[0][(v >> 56) as usize];
        }
        for &b in chunks.remainder() {
            c = t[0][((c ^ u64::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u64 {
        !self.0
    }
}

/// xz variable-length integer (7 bits per byte, least significant first).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// The block header size liblzma's multithreaded encoder reserves (and pads every header to):
/// computed as if the block were full and incompressible, i.e. with the sizes
/// `lzma_block_buffer_bound64(block_size)` and `block_size`.
fn reserved_header_size(block_size: u64) -> usize {
    // lzma2_bound: 3 bytes of header per 64 KiB chunk plus the end marker, padded to 4, plus
    // HEADERS_BOUND (92)
    let lzma2 = block_size + block_size.div_ceil(1 << 16) * 3 + 1;
    let bound = lzma2.div_ceil(4) * 4 + 92;
    let size = 2 + varint_len(bound) + varint_len(block_size) + 3 + 4;
    size.div_ceil(4) * 4
}

fn lzma_err(context: &str) -> impl FnOnce(liblzma::stream::Error) -> Error + '_ {
    move |e| Error::Io {
        context: context.into(),
        source: io::Error::other(e),
    }
}

/// One finished block: its bytes (header, data, padding, check) and its index record.
struct XzBlock {
    bytes: Vec<u8>,
    unpadded: u64,
    uncompressed: u64,
}

/// Compresses one block: raw LZMA2 of `data`, framed as an .xz block with both sizes in the
/// header and a CRC64 check, as liblzma's multithreaded encoder writes it.
fn encode_block(preset: u32, data: &[u8]) -> Result<XzBlock> {
    let opts = LzmaOptions::new_preset(preset).map_err(lzma_err("xz preset"))?;
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let mut enc = Stream::new_raw_encoder(&filters).map_err(lzma_err("starting LZMA2"))?;
    let mut comp = Vec::with_capacity(data.len() + data.len() / 32 + 1024);
    loop {
        // total_in never exceeds data.len()
        let done = usize::try_from(enc.total_in()).unwrap_or(data.len());
        let status = enc
            .process_vec(&data[done.min(data.len())..], &mut comp, Action::Finish)
            .map_err(lzma_err("LZMA2 compression"))?;
        if status == Status::StreamEnd {
            break;
        }
        if comp.len() == comp.capacity() {
            comp.reserve(comp.capacity().max(4096));
        }
    }

    let mut h = vec![0u8, 0xc0]; // size (below); flags: 1 filter, both sizes present
    put_varint(&mut h, comp.len() as u64);
    put_varint(&mut h, data.len() as u64);
    h.extend_from_slice(&[LZMA2_FILTER_ID, 1, lzma2_dict_prop(dict_size(preset))]);
    let header_size =
        reserved_header_size(xz_block_size(preset)).max((h.len() + 4).div_ceil(4) * 4);
    h.resize(header_size - 4, 0);
    // header_size <= 1024 by construction (a few varints)
    h[0] = (header_size / 4 - 1) as u8;
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());

    let unpadded = (header_size + comp.len() + 8) as u64;
    let mut bytes = h;
    bytes.extend_from_slice(&comp);
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let mut check = Crc64::new();
    check.update(data);
    bytes.extend_from_slice(&check.finish().to_le_bytes());
    Ok(XzBlock {
        bytes,
        unpadded,
        uncompressed: data.len() as u64,
    })
}

/// Streaming parallel .xz writer over fixed blocks (see the module documentation).
struct XzWriter<W: Write> {
    dst: W,
    preset: u32,
    block: usize,
    buf: Vec<u8>,
    /// Index records `(unpadded size, uncompressed size)`, in order.
    records: Vec<(u64, u64)>,
    /// The block of `block` zeros, compressed on first use.
    zero_block: Option<(Vec<u8>, u64)>,
    pool: Pool<XzBlock>,
}

fn write_block<W: Write>(dst: &mut W, records: &mut Vec<(u64, u64)>, b: XzBlock) -> Result<()> {
    records.push((b.unpadded, b.uncompressed));
    dst.write_all(&b.bytes).map_err(io_err("writing xz output"))
}

impl<W: Write> XzWriter<W> {
    fn new(mut dst: W, preset: u32, threads: usize) -> Result<Self> {
        let mut head = HEADER_MAGIC.to_vec();
        head.extend_from_slice(&STREAM_FLAGS);
        head.extend_from_slice(&crc32fast::hash(&STREAM_FLAGS).to_le_bytes());
        dst.write_all(&head)
            .map_err(io_err("writing xz stream header"))?;
        let block = usize::try_from(xz_block_size(preset))
            .map_err(|_| Error::InvalidArgument(format!("xz preset {preset} on this platform")))?;
        Ok(XzWriter {
            dst,
            preset,
            block,
            buf: Vec::new(),
            records: Vec::new(),
            zero_block: None,
            pool: Pool::new(resolve_threads(threads), "xz")?,
        })
    }

    fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buf.capacity() < self.block {
                self.buf.reserve_exact(self.block - self.buf.len());
            }
            let n = (self.block - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.block {
                let full = std::mem::take(&mut self.buf);
                self.submit(full)?;
            }
        }
        Ok(())
    }

    fn write_zeros(&mut self, mut len: u64) -> Result<()> {
        let block = self.block as u64;
        while len > 0 {
            if self.buf.is_empty() && len >= block {
                let zero = match &self.zero_block {
                    Some(z) => z,
                    None => {
                        let b = encode_block(self.preset, &vec![0u8; self.block])?;
                        self.zero_block.insert((b.bytes, b.unpadded))
                    }
                };
                let b = XzBlock {
                    bytes: zero.0.clone(),
                    unpadded: zero.1,
                    uncompressed: block,
                };
                let (dst, records) = (&mut self.dst, &mut self.records);
                self.pool
                    .submit_ready(b, &mut |b| write_block(dst, records, b))?;
                len -= block;
            } else {
                let n = (block - self.buf.len() as u64).min(len);
                scan::zeros_as_data(&mut XzSink(self), n)?;
                len -= n;
            }
        }
        Ok(())
    }

    fn submit(&mut self, data: Vec<u8>) -> Result<()> {
        let preset = self.preset;
        let (dst, records) = (&mut self.dst, &mut self.records);
        self.pool
            .submit(move || encode_block(preset, &data), &mut |b| {
                write_block(dst, records, b)
            })
    }

    fn finish(mut self) -> Result<W> {
        if !self.buf.is_empty() {
            let tail = std::mem::take(&mut self.buf);
            self.submit(tail)?;
        }
        let XzWriter {
            mut dst,
            mut records,
            pool,
            ..
        } = self;
        pool.finish(&mut |b| write_block(&mut dst, &mut records, b))?;

        let mut index = vec![0u8];
        put_varint(&mut index, records.len() as u64);
        for &(unpadded, uncompressed) in &records {
            put_varint(&mut index, unpadded);
            put_varint(&mut index, uncompressed);
        }
        index.resize(index.len().div_ceil(4) * 4, 0);
        let crc = crc32fast::hash(&index);
        index.extend_from_slice(&crc.to_le_bytes());

        let backward = u32::try_from(index.len() / 4 - 1)
            .map_err(|_| Error::InvalidArgument("xz index too large".into()))?;
        let mut tail = backward.to_le_bytes().to_vec();
        tail.extend_from_slice(&STREAM_FLAGS);
        let mut footer = crc32fast::hash(&tail).to_le_bytes().to_vec();
        footer.extend_from_slice(&tail);
        footer.extend_from_slice(&FOOTER_MAGIC);
        dst.write_all(&index)
            .and_then(|()| dst.write_all(&footer))
            .and_then(|()| dst.flush())
            .map_err(io_err("writing xz index"))?;
        Ok(dst)
    }
}

struct XzSink<'a, W: Write>(&'a mut XzWriter<W>);

impl<W: Write> Sink for XzSink<'_, W> {
    fn data(&mut self, buf: &[u8]) -> Result<()> {
        self.0.write_all(buf)
    }
    fn zeros(&mut self, len: u64) -> Result<()> {
        self.0.write_zeros(len)
    }
}

/// Compresses the file at `src` into `dst` as .xz (Talos: `xz -0 -T0`): LZMA2 `preset` 0–9,
/// CRC64, fixed block size [`xz_block_size`], `threads` workers (0 = all cores).
pub fn xz<W: Write>(src: &Path, dst: &mut W, preset: u32, threads: usize) -> Result<()> {
    if preset > 9 {
        return Err(Error::InvalidArgument(format!(
            "xz preset {preset} (expected 0-9)"
        )));
    }
    let name = src.display().to_string();
    let file = std::fs::File::open(src).map_err(io_err(format!("opening {name}")))?;
    let out = io::BufWriter::with_capacity(1 << 20, dst);
    let mut w = XzWriter::new(out, preset, threads)?;
    scan::scan(&file, &name, BLOCK, &mut XzSink(&mut w))?;
    w.finish()?.flush().map_err(io_err("flushing xz output"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use liblzma::stream::{Check, MtStreamBuilder};

    /// The reference: liblzma's multithreaded encoder with the same block size.
    fn reference(data: &[u8], preset: u32) -> Vec<u8> {
        let stream = MtStreamBuilder::new()
            .preset(preset)
            .threads(2)
            .block_size(xz_block_size(preset))
            .check(Check::Crc64)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn ours(parts: &[(bool, usize)], data: &[u8], preset: u32, threads: usize) -> Vec<u8> {
        let mut w = XzWriter::new(Vec::new(), preset, threads).unwrap();
        let mut at = 0;
        for &(zero, n) in parts {
            if zero {
                w.write_zeros(n as u64).unwrap();
            } else {
                w.write_all(&data[at..at + n]).unwrap();
            }
            at += n;
        }
        w.finish().unwrap()
    }

    #[test]
    fn crc64_and_props() {
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0x995D_C9BB_DF19_39FA);
        assert_eq!(lzma2_dict_prop(256 << 10), 12);
        assert_eq!(lzma2_dict_prop(8 << 20), 22);
        assert_eq!(lzma2_dict_prop(3 << 20), 19);
        assert_eq!(lzma2_dict_prop(u32::MAX), 40);
        assert_eq!(reserved_header_size(1 << 20), 16);
        assert_eq!(reserved_header_size(3 << 20), 20);
    }

    #[test]
    fn identical_to_liblzma_mt() {
        let mut x = 7u32;
        let mut data = Vec::new();
        let mut parts = Vec::new();
        // text-like, random, zero runs (some block-aligned, some not), short tail
        for (kind, n) in [
            (0, 700_000),
            (1, 300_000),
            (2, 3 << 20),
            (0, 1_500_000),
            (2, 40_000),
        ] {
            let zero = kind == 2;
            for i in 0..n {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data.push(match kind {
                    0 => b"talos disk image "[(x as usize + i) % 17],
                    1 => x as u8,
                    _ => 0,
                });
            }
            parts.push((zero, n));
        }
        for preset in [0, 1] {
            let want = reference(&data, preset);
            assert!(ours(&parts, &data, preset, 1) == want, "preset {preset}");
            assert!(ours(&[(false, data.len())], &data, preset, 3) == want);
        }
        let head = &data[..1_000_000];
        assert!(ours(&[(false, head.len())], head, 6, 2) == reference(head, 6));
        assert!(ours(&[], &[], 0, 2) == reference(&[], 0));
        assert!(ours(&[(false, 1)], b"x", 0, 2) == reference(b"x", 0));
        assert!(ours(&[(false, 1)], b"x", 1, 2) == reference(b"x", 1));
    }
}
