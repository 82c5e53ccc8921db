//! `.zst` post-processing (docs/formats/outputs.md: Talos runs `zstd -T0 -18`).
//!
//! In: a file path, a zstd level and a thread count. Out: a sequence of zstd frames (RFC 8878
//! §3.1: a decoder outputs the concatenation of the frames' contents, `zstd -d` included), each
//! with a content checksum:
//!
//! - **data frames**: runs of the file compressed by libzstd in multithreaded mode (its output
//!   does not depend on the number of workers, as long as there is at least one), with fixed
//!   4 MiB jobs overlapping by 1/8 window. Measured with `zstd -18 -B4M --zstd=ovlog=6` on
//!   40 MB of binaries: 8.6 s on 2 threads (17.0 s on 1) against 14.4 s (19.0 s) for libzstd's
//!   default 32 MiB jobs with a full-window overlap, for 1.3 % more output; on 10 MB of
//!   compressed kernel + initramfs 1.0 s against 2.1 s, same size;
//! - **zero frames**: runs of zeros of at least [`ZERO_FRAME_MIN`] bytes (holes, or all-zero
//!   4 KiB blocks), written directly as RLE blocks of 128 KiB (3-byte header + 1 byte each; this
//!   is also what libzstd emits for zeros, so nothing is lost) with the frame content size and
//!   the XXH64 checksum of the zeros. This skips the level-18 match finder over gigabytes of
//!   zeros, which costs about 3.5 s per GB even on two threads.
//!
//! Where frames start is decided by the content (see `scan`), so the output depends on the
//! content and the level only. The price of a frame boundary is that the data after a zero run
//! cannot reference the data before it; with runs of ≥ 1 MiB of zeros in between that is rare
//! in disk images. libzstd needs ~130 MiB per worker at level 18; our own buffers are 1 MiB.

use std::io::{self, Write};
use std::path::Path;

use zstd::zstd_safe::CParameter;

use crate::scan::{self, Sink};
use crate::{Error, Result, io_err, resolve_threads};

/// Zero runs at least this long (1 MiB) become RLE frames; shorter ones go through libzstd.
pub const ZERO_FRAME_MIN: u64 = 1 << 20;
/// libzstd multithreading job size: 4 MiB instead of the level-18 default (32 MiB), so that
/// the tens of MB of a disk image keep two cores busy.
const JOB_SIZE: u32 = 4 << 20;
/// Overlap between jobs: 1/8 of the window (1 MiB at level 18) instead of the whole window,
/// whose reloading would cost as much as compressing such small jobs.
const OVERLAP_LOG: u32 = 6;
/// zstd block maximum size, and the window of zero frames.
const ZSTD_BLOCK: u64 = 128 << 10;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 (seed 0) of `stripes` 32-byte stripes given by `lane`, followed by `tail` (< 32 bytes).
fn xxh64_parts(
    total: u64,
    stripes: u64,
    mut lane: impl FnMut(u64, usize) -> u64,
    tail: &[u8],
) -> u64 {
    let mut h = if stripes > 0 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        for s in 0..stripes {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, lane(s, i));
            }
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for x in v {
            h = merge_round(h, x);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(total);
    let mut t = tail;
    while t.len() >= 8 {
        let (k, rest) = t.split_at(8);
        let k = u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
        h = (h ^ round(0, k))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
        t = rest;
    }
    if t.len() >= 4 {
        let (k, rest) = t.split_at(4);
        let k = u64::from(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
        h = (h ^ k.wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        t = rest;
    }
    for &b in t {
        h = (h ^ u64::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// XXH64 (seed 0) of `len` zero bytes, without materialising them.
fn xxh64_zeros(len: u64) -> u64 {
    // len % 32 < 32, so the cast is lossless
    xxh64_parts(len, len / 32, |_, _| 0, &scan::ZEROS[..(len % 32) as usize])
}

/// Writes one frame of `len` zeros: RLE blocks of 128 KiB, a 128 KiB window (so decoders need
/// no large buffer), the content size, and the low 32 bits of XXH64 as content checksum.
fn write_zero_frame(w: &mut impl Write, len: u64) -> io::Result<()> {
    let mut head = Vec::with_capacity(14);
    head.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame_Header_Descriptor: FCS field size (bits 7-6), Single_Segment 0, checksum (bit 2)
    match u32::try_from(len) {
        Ok(l) => {
            head.push((2 << 6) | (1 << 2));
            head.push((17 - 10) << 3); // Window_Descriptor: 2^17 = 128 KiB
            head.extend_from_slice(&l.to_le_bytes());
        }
        Err(_) => {
            head.push((3 << 6) | (1 << 2));
            head.push((17 - 10) << 3);
            head.extend_from_slice(&len.to_le_bytes());
        }
    }
    w.write_all(&head)?;
    let full = {
        // Block_Header: Last_Block (bit 0), Block_Type RLE = 1 (bits 1-2), Block_Size (bits 3-23)
        let h = ((ZSTD_BLOCK as u32) << 3) | (1 << 1);
        [h as u8, (h >> 8) as u8, (h >> 16) as u8, 0]
    };
    let mut buf = Vec::with_capacity(64 << 10);
    let mut left = len;
    while left > 0 {
        let n = left.min(ZSTD_BLOCK);
        left -= n;
        if n == ZSTD_BLOCK && left > 0 {
            buf.extend_from_slice(&full);
        } else {
            // n <= 128 KiB fits the 21-bit Block_Size
            let h = ((n as u32) << 3) | (1 << 1) | u32::from(left == 0);
            buf.extend_from_slice(&[h as u8, (h >> 8) as u8, (h >> 16) as u8, 0]);
        }
        if buf.len() >= 60 << 10 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    // low 32 bits of the XXH64
    buf.extend_from_slice(&(xxh64_zeros(len) as u32).to_le_bytes());
    w.write_all(&buf)
}

enum State<'a, W: Write> {
    Idle(W),
    Frame(zstd::stream::write::Encoder<'a, W>),
    Broken,
}

struct ZstSink<'a, W: Write> {
    state: State<'a, W>,
    level: i32,
    workers: u32,
    frames: u64,
}

impl<W: Write> ZstSink<'_, W> {
    fn end_frame(&mut self) -> Result<W> {
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Idle(w) => Ok(w),
            State::Frame(e) => e.finish().map_err(io_err("finishing a zstd frame")),
            State::Broken => Err(broken()),
        }
    }
}

fn broken() -> Error {
    Error::Io {
        context: "zstd output".into(),
        source: io::Error::other("writer unusable after an earlier error"),
    }
}

impl<W: Write> Sink for ZstSink<'_, W> {
    fn data(&mut self, buf: &[u8]) -> Result<()> {
        if let State::Idle(_) = self.state {
            let State::Idle(w) = std::mem::replace(&mut self.state, State::Broken) else {
                return Err(broken());
            };
            let mut e = zstd::stream::write::Encoder::new(w, self.level)
                .map_err(io_err("starting the zstd encoder"))?;
            e.multithread(self.workers)
                .and_then(|()| e.include_checksum(true))
                .and_then(|()| e.set_parameter(CParameter::JobSize(JOB_SIZE)))
                .and_then(|()| e.set_parameter(CParameter::OverlapSizeLog(OVERLAP_LOG)))
                .map_err(io_err("configuring the zstd encoder"))?;
            self.state = State::Frame(e);
            self.frames += 1;
        }
        match &mut self.state {
            State::Frame(e) => e.write_all(buf).map_err(io_err("zstd compression")),
            _ => Err(broken()),
        }
    }

    fn zeros(&mut self, len: u64) -> Result<()> {
        let mut w = self.end_frame()?;
        write_zero_frame(&mut w, len).map_err(io_err("writing a zstd zero frame"))?;
        self.state = State::Idle(w);
        self.frames += 1;
        Ok(())
    }
}

/// Compresses the file at `src` into `dst` as zstd frames with checksums (Talos: `zstd -T0
/// -18`), `level` as libzstd accepts it (1–22, or negative), `threads` workers (0 = all cores).
pub fn zstd<W: Write>(src: &Path, dst: &mut W, level: i32, threads: usize) -> Result<()> {
    let range = zstd::compression_level_range();
    if !range.contains(&level) {
        return Err(Error::InvalidArgument(format!(
            "zstd level {level} (expected {}..={})",
            range.start(),
            range.end()
        )));
    }
    let name = src.display().to_string();
    let file = std::fs::File::open(src).map_err(io_err(format!("opening {name}")))?;
    let out = io::BufWriter::with_capacity(1 << 20, dst);
    let mut sink = ZstSink {
        state: State::Idle(out),
        level,
        workers: u32::try_from(resolve_threads(threads)).unwrap_or(u32::MAX),
        frames: 0,
    };
    scan::scan(&file, &name, ZERO_FRAME_MIN, &mut sink)?;
    if sink.frames == 0 {
        // empty input: one empty data frame, as `zstd` writes
        sink.data(&[])?;
    }
    sink.end_frame()?
        .flush()
        .map_err(io_err("flushing zstd output"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn xxh64(b: &[u8]) -> u64 {
        let stripes = b.len() as u64 / 32;
        let lane = |s: u64, i: usize| {
            let o = s as usize * 32 + i * 8;
            u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
        };
        xxh64_parts(b.len() as u64, stripes, lane, &b[stripes as usize * 32..])
    }

    #[test]
    fn xxh64_vectors() {
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc"), 0x44BC_2CF5_AD77_0999);
        for n in [
            0usize, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 4096, 131_075,
        ] {
            assert_eq!(xxh64_zeros(n as u64), xxh64(&vec![0u8; n]), "n={n}");
        }
    }

    #[test]
    fn zero_frame_decodes() {
        for n in [
            1u64,
            4096,
            ZSTD_BLOCK,
            ZSTD_BLOCK + 1,
            3 * ZSTD_BLOCK,
            5_000_000,
        ] {
            let mut f = Vec::new();
            write_zero_frame(&mut f, n).unwrap();
            let d = zstd::stream::decode_all(&f[..]).unwrap();
            assert_eq!(d.len() as u64, n);
            assert!(sparse::is_zero(&d));
        }
    }
}
