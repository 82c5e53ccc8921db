//! Bounded, hashing reads of outside data: one place for the streaming sha256 and the caps.
//!
//! In: files and streams the build did not write (inputs, layers, artifacts to sign). Out:
//! digests, and readers that fail once they produce more than their bound.

use crate::error::{Error, ExitCode, Result, WithCode};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Bounds on whole reads of user-supplied data, each fitting its use.
pub mod limits {
    /// A profile (stdin or file).
    pub const PROFILE: u64 = 4 << 20;
    /// A META value from a file: larger than one META copy (256 KiB), so that the META
    /// check names the key that does not fit, but bounded.
    pub const META_VALUE: u64 = 1 << 20;
    /// A machine configuration to embed.
    pub const MACHINE_CONFIG: u64 = 16 << 20;
    /// Small YAML/PEM/JSON side files: overlay options, registries config, policies, keys,
    /// CA bundles, Sigstore bundles.
    pub const SIDE_FILE: u64 = 4 << 20;
}

/// Opens `path` for reading if, and only if, it is a regular file. The open itself cannot
/// block (`O_NONBLOCK`: a FIFO with no writer, a device), and the type is checked on the open
/// descriptor, so a swapped path cannot slip a special file in. A missing file is exit code
/// `missing`; anything but a regular file is invalid input.
pub fn open_regular(path: &Path, what: &str, missing: ExitCode) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .code(missing, || format!("{what}: {}", path.display()))?;
    let meta = f
        .metadata()
        .code(ExitCode::Io, || format!("{what}: {}", path.display()))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "{what}: {}: not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Reads at most `max` bytes of `r`; more is an error naming `what` and the bound.
pub fn read_capped(r: impl Read, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .code(ExitCode::Io, || format!("{what}: reading"))?;
    if buf.len() as u64 > max {
        return Err(Error::invalid(format!(
            "{what}: larger than the limit of {max} bytes"
        )));
    }
    Ok(buf)
}

/// Reads a whole user-supplied regular file of at most `max` bytes as UTF-8 text.
pub fn read_text(path: &Path, max: u64, what: &str, missing: ExitCode) -> Result<String> {
    let f = open_regular(path, what, missing)?;
    let what = format!("{what}: {}", path.display());
    String::from_utf8(read_capped(f, max, &what)?)
        .map_err(|_| Error::invalid(format!("{what}: not UTF-8 text")))
}

/// Reads a whole user-supplied regular file of at most `max` bytes.
pub fn read_bytes(path: &Path, max: u64, what: &str, missing: ExitCode) -> Result<Vec<u8>> {
    let f = open_regular(path, what, missing)?;
    read_capped(f, max, &format!("{what}: {}", path.display()))
}

/// A reader that (optionally) hashes what passes through it and fails once more than `cap`
/// bytes have.
#[derive(Debug)]
pub struct HashReader<R> {
    inner: R,
    hash: Option<Sha256>,
    count: u64,
    cap: u64,
    what: &'static str,
    limit: Option<&'static str>,
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
            limit: None,
        }
    }

    /// Only the bound, no hashing (decompression of layers); `limit` names the setting that
    /// sets the bound in the message.
    pub fn capped(inner: R, cap: u64, what: &'static str, limit: &'static str) -> Self {
        Self {
            hash: None,
            limit: Some(limit),
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
            return Err(std::io::Error::other(match self.limit {
                Some(l) => format!("{} exceeds the size limit ({l})", self.what),
                None => format!("{} exceeds the size limit ({} bytes)", self.what, self.cap),
            }));
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
    let f = open_regular(path, "reading", ExitCode::Io)?;
    let mut r = HashReader::new(f, u64::MAX, "file");
    drain(&mut r).code(ExitCode::Io, || format!("reading {}", path.display()))?;
    Ok(r.finish().0)
}

/// sha256 of a file, hex.
pub fn sha256_hex(path: &Path) -> Result<String> {
    Ok(hex::encode(sha256_file(path)?))
}

/// Opens a possibly compressed tar stream (a regular file only): gzip, zstd or xz by magic,
/// plain tar otherwise; decompression fails beyond `cap` bytes.
pub fn open_decompressed(path: &Path, cap: u64, what: &str) -> Result<Box<dyn Read>> {
    let f = open_regular(path, what, ExitCode::Io)?;
    open_stream(f, cap).code(ExitCode::Io, || what.to_string())
}

fn open_stream(f: File, cap: u64) -> std::io::Result<Box<dyn Read>> {
    let mut f = BufReader::with_capacity(1 << 20, f);
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
        "decompressed stream",
        "IMAGER_MAX_EXTENSION_BYTES",
    )))
}
