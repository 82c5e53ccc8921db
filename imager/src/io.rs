//! Bounded, hashing reads of outside data: one place for the streaming sha256 and the caps.
//!
//! In: files and streams the build did not write (inputs, layers, artifacts to sign). Out:
//! digests, and readers that fail once they produce more than their bound.

use crate::error::{ExitCode, Result, WithCode};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// A reader that (optionally) hashes what passes through it and fails once more than `cap`
/// bytes have.
#[derive(Debug)]
pub struct HashReader<R> {
    inner: R,
    hash: Option<Sha256>,
    count: u64,
    cap: u64,
    what: &'static str,
}

impl<R: Read> HashReader<R> {
    /// Wraps `inner`; reading more than `cap` bytes is an error naming `what`.
    pub fn new(inner: R, cap: u64, what: &'static str) -> Self {
        Self {
            inner,
            hash: Some(Sha256::new()),
            count: 0,
            cap,
            what,
        }
    }

    /// Only the bound, no hashing (decompression of layers).
    pub fn capped(inner: R, cap: u64, what: &'static str) -> Self {
        Self {
            hash: None,
            ..Self::new(inner, cap, what)
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sha256 of what was read, and its length.
    pub fn finish(self) -> ([u8; 32], u64) {
        let h = self.hash.unwrap_or_default();
        (h.finalize().into(), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.cap - self.count {
            return Err(std::io::Error::other(format!(
                "{} exceeds the size limit ({} bytes)",
                self.what, self.cap
            )));
        }
        self.count += n as u64;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Drains `r` to its end through a 1 MiB buffer.
pub fn drain(r: &mut impl Read) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while r.read(&mut buf)? != 0 {}
    Ok(())
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let f = File::open(path).code(ExitCode::Io, || format!("reading {}", path.display()))?;
    let mut r = HashReader::new(f, u64::MAX, "file");
    drain(&mut r).code(ExitCode::Io, || format!("reading {}", path.display()))?;
    Ok(r.finish().0)
}

/// sha256 of a file, hex.
pub fn sha256_hex(path: &Path) -> Result<String> {
    Ok(hex::encode(sha256_file(path)?))
}

/// Opens a possibly compressed tar stream: gzip, zstd or xz by magic, plain tar otherwise.
pub fn open_decompressed(path: &Path, cap: u64) -> std::io::Result<Box<dyn Read>> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 6];
    let n = {
        use std::io::BufRead;
        let b = f.fill_buf()?;
        let n = b.len().min(6);
        magic[..n].copy_from_slice(&b[..n]);
        n
    };
    let r: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::bufread::MultiGzDecoder::new(f))
    } else if n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else if n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(HashReader::capped(
        r,
        cap,
        "decompressed stream (IMAGER_MAX_EXTENSION_BYTES)",
    )))
}
