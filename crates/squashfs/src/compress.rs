//! One compressor context per thread: a block (data, fragment or metadata) goes in, the
//! compressed bytes come out when they are smaller than the input, else the caller stores the
//! block as it is. zstd frames as `ZSTD_compressCCtx` writes them (squashfs-tools' zstd
//! wrapper, which the kernel's squashfs zstd decompressor reads); xz streams with one LZMA2
//! filter, dictionary = block size and a CRC32 check (squashfs-tools' xz wrapper with
//! `-Xdict-size 100%`, which the kernel's xz decompressor expects).

use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};

use crate::{Compression, SquashfsError};

/// The xz preset squashfs-tools uses (`LZMA_PRESET_DEFAULT`).
const XZ_PRESET: u32 = 6;

pub enum BlockCompressor {
    Zstd(zstd::bulk::Compressor<'static>),
    Xz { dict_size: u32 },
}

fn xz_err(e: liblzma::stream::Error) -> SquashfsError {
    SquashfsError::Compress(format!("xz: {e}"))
}

impl BlockCompressor {
    pub fn new(c: &Compression, block_size: u32) -> Result<Self, SquashfsError> {
        Ok(match *c {
            Compression::Zstd { level } => BlockCompressor::Zstd(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| SquashfsError::Compress(format!("zstd context: {e}")))?,
            ),
            Compression::Xz => BlockCompressor::Xz {
                dict_size: block_size,
            },
        })
    }

    /// Compresses `src` into `dst` (cleared first). Returns whether the result is smaller than
    /// `src`; when it is not, `dst` holds nothing useful and `src` is to be stored.
    pub fn compress(&mut self, src: &[u8], dst: &mut Vec<u8>) -> Result<bool, SquashfsError> {
        dst.clear();
        match self {
            BlockCompressor::Zstd(c) => {
                dst.reserve(zstd::zstd_safe::compress_bound(src.len()));
                let n = c
                    .compress_to_buffer(src, dst)
                    .map_err(|e| SquashfsError::Compress(format!("zstd: {e}")))?;
                Ok(n < src.len())
            }
            BlockCompressor::Xz { dict_size } => {
                let mut opts = LzmaOptions::new_preset(XZ_PRESET).map_err(xz_err)?;
                opts.dict_size(*dict_size);
                let mut filters = Filters::new();
                filters.lzma2(&opts);
                let mut enc = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(xz_err)?;
                dst.reserve(src.len() + src.len() / 16 + 256);
                loop {
                    let done = usize::try_from(enc.total_in())
                        .unwrap_or(src.len())
                        .min(src.len());
                    let status = enc
                        .process_vec(&src[done..], dst, Action::Finish)
                        .map_err(xz_err)?;
                    if status == Status::StreamEnd {
                        break;
                    }
                    if dst.len() >= src.len() {
                        // already not smaller: store the block
                        return Ok(false);
                    }
                    if dst.len() == dst.capacity() {
                        dst.reserve(dst.capacity().max(4096));
                    }
                }
                Ok(dst.len() < src.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zstd_roundtrip_and_incompressible() {
        let mut c = BlockCompressor::new(&Compression::Zstd { level: 18 }, 131_072).unwrap();
        let src = b"hello hello hello hello hello hello hello hello".repeat(100);
        let mut dst = Vec::new();
        assert!(c.compress(&src, &mut dst).unwrap());
        assert_eq!(zstd::bulk::decompress(&dst, src.len()).unwrap(), src);
        assert!(!c.compress(b"ab", &mut dst).unwrap());
    }

    #[test]
    fn xz_is_a_crc32_stream() {
        let mut c = BlockCompressor::new(&Compression::Xz, 131_072).unwrap();
        let src = b"squashfs xz block ".repeat(500);
        let mut dst = Vec::new();
        assert!(c.compress(&src, &mut dst).unwrap());
        assert_eq!(&dst[..6], &[0xfd, b'7', b'z', b'X', b'Z', 0]);
        assert_eq!(&dst[6..8], &[0, 1], "stream flags: CRC32 check");
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&dst[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, src);
        assert!(!c.compress(b"ab", &mut dst).unwrap());
    }
}
