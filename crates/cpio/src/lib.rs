//! cpio "newc" archives, the format of Linux initramfs images.
//!
//! In: entries (directories, regular files streamed from any reader, symlinks, device nodes)
//! in the order the caller gives. Out: the archive bytes on any `Write`. Every entry is owned by
//! uid/gid 0, carries one fixed mtime (SOURCE_DATE_EPOCH) and gets inode numbers counted from 1,
//! like `cpio --reproducible -R +0:+0`. The trailer is followed by zero padding to 512 bytes,
//! as GNU cpio does. The compressor wrapping the output should not flush per entry (the writer
//! never calls `flush` until [`Writer::finish`]).
//!
//! A streaming [`Reader`] is included for tests and for taking files back out of an initramfs.

use std::io::{self, Read, Write};

/// File type bits.
pub mod mode {
    /// Directory.
    pub const DIR: u32 = 0o040000;
    /// Regular file.
    pub const FILE: u32 = 0o100000;
    /// Symbolic link.
    pub const SYMLINK: u32 = 0o120000;
    /// Character device.
    pub const CHAR: u32 = 0o020000;
    /// Block device.
    pub const BLOCK: u32 = 0o060000;
    /// Mask of the type bits.
    pub const TYPE_MASK: u32 = 0o170000;
}

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// An entry name is not acceptable.
    #[error("cpio entry {0:?}: name must be relative, non-empty, without '..' or NUL")]
    BadName(String),
    /// A file's reader produced a different number of bytes than announced.
    #[error("cpio entry {name:?}: expected {expected} bytes, source gave {got}")]
    SizeMismatch {
        /// Entry name.
        name: String,
        /// Announced size.
        expected: u64,
        /// Bytes read.
        got: u64,
    },
    /// A file too large for the 32-bit size field.
    #[error("cpio entry {0:?}: larger than 4 GiB")]
    TooLarge(String),
    /// Malformed archive while reading.
    #[error("malformed cpio archive at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the bad header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// I/O failure.
    #[error("cpio I/O: {0}")]
    Io(#[from] io::Error),
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A cpio newc writer.
pub struct Writer<W: Write> {
    out: W,
    mtime: u32,
    next_ino: u32,
    written: u64,
}

fn check_name(name: &str) -> Result<(), CpioError> {
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(CpioError::BadName(name.to_string()));
    }
    Ok(())
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

impl<W: Write> Writer<W> {
    /// A writer whose entries all carry `mtime` (seconds since the epoch, clamped to u32).
    pub fn new(out: W, mtime: i64) -> Self {
        Self {
            out,
            mtime: mtime.clamp(0, i64::from(u32::MAX)) as u32,
            next_ino: 1,
            written: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        size: u64,
        rdev: (u32, u32),
        ino: u32,
    ) -> Result<(), CpioError> {
        let size32 = u32::try_from(size).map_err(|_| CpioError::TooLarge(name.to_string()))?;
        let namesize = name.len() as u32 + 1;
        let h = format!(
            "{}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            std::str::from_utf8(MAGIC).unwrap_or("070701"),
            ino,
            mode,
            0,
            0,
            nlink,
            self.mtime,
            size32,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        let n = 110 + u64::from(namesize);
        let p = pad4(n);
        self.out.write_all(&[0u8; 4][..p])?;
        self.written += n + p as u64;
        Ok(())
    }

    fn ino(&mut self) -> u32 {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    /// A directory; `perm` is the permission bits (e.g. 0o755).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), CpioError> {
        check_name(name)?;
        let ino = self.ino();
        self.header(name, mode::DIR | (perm & 0o7777), 2, 0, (0, 0), ino)
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file(
        &mut self,
        name: &str,
        perm: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), CpioError> {
        check_name(name)?;
        let ino = self.ino();
        self.header(name, mode::FILE | (perm & 0o7777), 1, size, (0, 0), ino)?;
        let got = io::copy(&mut data.take(size), &mut self.out)?;
        if got != size {
            return Err(CpioError::SizeMismatch {
                name: name.to_string(),
                expected: size,
                got,
            });
        }
        let p = pad4(size);
        self.out.write_all(&[0u8; 4][..p])?;
        self.written += size + p as u64;
        Ok(())
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        check_name(name)?;
        let ino = self.ino();
        let t = target.as_bytes();
        self.header(name, mode::SYMLINK | 0o777, 1, t.len() as u64, (0, 0), ino)?;
        self.out.write_all(t)?;
        let p = pad4(t.len() as u64);
        self.out.write_all(&[0u8; 4][..p])?;
        self.written += t.len() as u64 + p as u64;
        Ok(())
    }

    /// A character device node (e.g. `dev/console`, 5:1).
    pub fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        check_name(name)?;
        let ino = self.ino();
        self.header(
            name,
            mode::CHAR | (perm & 0o7777),
            1,
            0,
            (major, minor),
            ino,
        )
    }

    /// Writes the trailer, pads to 512 bytes, flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.header(TRAILER, 0, 1, 0, (0, 0), 0)?;
        let p = ((512 - (self.written % 512)) % 512) as usize;
        self.out.write_all(&vec![0u8; p])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive.
    pub name: String,
    /// Mode, type bits included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device numbers for device nodes.
    pub rdev: (u32, u32),
    /// Contents (file data or symlink target).
    pub data: Vec<u8>,
}

/// Reads a whole (uncompressed) newc archive into memory, stopping at the trailer.
/// Meant for tests and small archives.
pub fn read_all(mut r: impl Read) -> Result<Vec<Entry>, CpioError> {
    let mut out = Vec::new();
    let mut off = 0u64;
    loop {
        let mut h = [0u8; 110];
        r.read_exact(&mut h)?;
        if &h[0..6] != MAGIC {
            return Err(CpioError::Malformed {
                offset: off,
                reason: "bad magic".into(),
            });
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap_or("x");
            u32::from_str_radix(s, 16).map_err(|_| CpioError::Malformed {
                offset: off,
                reason: format!("bad hex field {i}"),
            })
        };
        let (mode, uid, gid, mtime, size) = (field(1)?, field(2)?, field(3)?, field(5)?, field(6)?);
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > 4096 {
            return Err(CpioError::Malformed {
                offset: off,
                reason: format!("name size {namesize}"),
            });
        }
        let mut name = vec![0u8; namesize + pad4(110 + namesize as u64)];
        r.read_exact(&mut name)?;
        name.truncate(namesize - 1);
        let name = String::from_utf8(name).map_err(|_| CpioError::Malformed {
            offset: off,
            reason: "name not UTF-8".into(),
        })?;
        if name == TRAILER {
            return Ok(out);
        }
        let mut data = Vec::new();
        (&mut r).take(u64::from(size)).read_to_end(&mut data)?;
        if data.len() != size as usize {
            return Err(CpioError::Malformed {
                offset: off,
                reason: "truncated data".into(),
            });
        }
        let mut p = [0u8; 3];
        r.read_exact(&mut p[..pad4(u64::from(size))])?;
        off += 110 + (namesize + pad4(110 + namesize as u64)) as u64 + u64::from(size);
        off += pad4(u64::from(size)) as u64;
        out.push(Entry {
            name,
            mode,
            uid,
            gid,
            mtime,
            rdev,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), 1_700_000_000);
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, 5, &mut &b"hello"[..]).unwrap();
        w.symlink("sbin", "bin").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_bytes_and_padding() {
        let a = sample();
        assert_eq!(a.len() % 512, 0);
        // first header: ino 1, dir 0755, nlink 2, mtime, namesize 4
        let h = std::str::from_utf8(&a[..110]).unwrap();
        assert_eq!(
            h,
            "07070100000001000041ed0000000000000000000000026553f10000000000000000000000000000000000000000000000000400000000"
        );
        assert_eq!(&a[110..114], b"dev\0");
    }

    #[test]
    fn roundtrip() {
        let e = read_all(&sample()[..]).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].rdev, (5, 1));
        assert_eq!(e[1].mode, mode::CHAR | 0o600);
        assert_eq!(e[2].data, b"hello");
        assert_eq!(e[3].data, b"bin");
        assert!(
            e.iter()
                .all(|x| x.uid == 0 && x.gid == 0 && x.mtime == 1_700_000_000)
        );
    }

    #[test]
    fn refuses_bad_names_and_short_sources() {
        let mut w = Writer::new(Vec::new(), 0);
        assert!(matches!(w.dir("/abs", 0o755), Err(CpioError::BadName(_))));
        assert!(matches!(w.dir("a/../b", 0o755), Err(CpioError::BadName(_))));
        assert!(matches!(
            w.file("f", 0o644, 10, &mut &b"short"[..]),
            Err(CpioError::SizeMismatch { got: 5, .. })
        ));
    }

    #[test]
    fn gnu_cpio_lists_it() {
        // GNU cpio is installed by hack/deps.sh; its absence is a broken test bed, not a skip.
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(&sample())?;
                c.wait_with_output()
            })
            .expect("GNU cpio (hack/deps.sh installs it)");
        assert!(out.status.success());
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("dev/console"), "{s}");
        assert!(s.contains("sbin -> bin"), "{s}");
    }
}
