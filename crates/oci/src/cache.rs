//! A content-addressed blob cache shared by builds.
//!
//! Layout under the root (`$IMAGER_CACHE_DIR`, else `$XDG_CACHE_HOME/imager`, else
//! `~/.cache/imager`): `blobs/sha256/<hex>` (so the root is usable as an OCI layout's blob
//! store), `notes/<hex>` (what a blob is, for `cache ls`), `tmp/` (downloads in progress),
//! `locks/<hex>.lock` and `cache.lock`.
//!
//! Safety under concurrent builds: a blob is written to a unique temp file, its size and
//! sha256 are checked, it is fsynced and renamed into place, so a reader sees a whole verified
//! blob or nothing. A per-digest exclusive lock makes concurrent builds download a blob once.
//! Builds hold `cache.lock` shared; `prune` takes it exclusively, so it never deletes a blob a
//! running build is about to use.

use crate::Error;
use crate::digest::{Digest, HashingWriter};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Holds the cache's shared (build) or exclusive (prune) lock while alive.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// One cached blob.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Last use (mtime; refreshed on every hit).
    pub last_used: SystemTime,
    /// What it is (`manifest ghcr.io/x:tag`, `layer`, …).
    pub note: String,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Blobs removed.
    pub removed: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Blobs kept.
    pub kept: usize,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

impl Cache {
    /// The default root.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("IMAGER_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("imager"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imager"))
    }

    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, Error> {
        for d in ["blobs/sha256", "notes", "tmp", "locks"] {
            let p = root.join(d);
            fs::create_dir_all(&p)
                .map_err(io_err(format!("creating cache dir {}", p.display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (which may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn lock_file(&self, path: &Path) -> Result<File, Error> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(format!("opening lock {}", path.display())))
    }

    /// Takes the cache-wide lock shared (builds) or exclusive (prune).
    pub fn lock(&self, exclusive: bool) -> Result<CacheLock, Error> {
        let p = self.root.join("cache.lock");
        let f = self.lock_file(&p)?;
        let r = if exclusive { f.lock() } else { f.lock_shared() };
        r.map_err(io_err(format!("locking {}", p.display())))?;
        Ok(CacheLock { _file: f })
    }

    /// Whether a blob of this digest and size is present (and marks it used).
    pub fn has(&self, d: &Digest, size: Option<u64>) -> bool {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() && size.is_none_or(|s| s == m.len()) => {
                touch(&p);
                true
            }
            _ => false,
        }
    }

    /// Like [`Cache::has`], and the content hashes to `d`: a damaged blob (same size, wrong
    /// bytes: disk corruption, an edit) is removed, so that it is fetched again instead of
    /// failing every build that uses it.
    pub fn has_verified(&self, d: &Digest, size: Option<u64>) -> bool {
        if !self.has(d, size) {
            return false;
        }
        let p = self.blob_path(d);
        let ok = File::open(&p)
            .and_then(|mut f| {
                let mut h = HashingWriter::new(io::sink());
                io::copy(&mut f, &mut h)?;
                Ok(h.finish().0 == *d)
            })
            .unwrap_or(false);
        if !ok {
            let _ = fs::remove_file(&p);
        }
        ok
    }

    /// Returns the blob's path, filling it with `fill` first if it is missing. `fill` writes
    /// the content; it is checked against `d` and `size` (when known) before the blob becomes
    /// visible. Concurrent callers for one digest wait for each other, so it is written once.
    /// Returns the path and whether it was a hit.
    pub fn get_or_insert(
        &self,
        d: &Digest,
        size: Option<u64>,
        note: &str,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
    ) -> Result<(PathBuf, bool), Error> {
        if self.has_verified(d, size) {
            return Ok((self.blob_path(d), true));
        }
        let lock_path = self.root.join("locks").join(format!("{}.lock", d.hex()));
        let lock = self.lock_file(&lock_path)?;
        lock.lock()
            .map_err(io_err(format!("locking {}", lock_path.display())))?;
        // somebody else may have finished it while we waited
        if self.has_verified(d, size) {
            return Ok((self.blob_path(d), true));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}.", d.hex()))
            .tempfile_in(self.root.join("tmp"))
            .map_err(io_err("creating a cache temp file"))?;
        let (tmp_file, tmp_path) = tmp.into_parts();
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 16, tmp_file));
        fill(&mut w)?;
        let (got, len, buf) = w.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_err("writing a cache temp file")(e.into_error()))?;
        if let Some(s) = size
            && s != len
        {
            return Err(Error::Size {
                digest: d.clone(),
                expected: s,
                got: len,
            });
        }
        if &got != d {
            return Err(Error::Mismatch {
                expected: d.clone(),
                got,
            });
        }
        file.sync_all().map_err(io_err("syncing a cache blob"))?;
        let dst = self.blob_path(d);
        tmp_path
            .persist(&dst)
            .map_err(|e| io_err(format!("renaming into {}", dst.display()))(e.error))?;
        self.set_note(d, note);
        drop(lock);
        Ok((dst, false))
    }

    /// Stores `data` (hit if present).
    pub fn insert_bytes(&self, data: &[u8], note: &str) -> Result<(Digest, PathBuf), Error> {
        let d = Digest::of(data);
        let (p, _) = self.get_or_insert(&d, Some(data.len() as u64), note, |w| {
            w.write_all(data).map_err(io_err("writing a cache blob"))
        })?;
        Ok((d, p))
    }

    /// Reads a small blob (manifests, configs, signatures) with a size cap.
    pub fn read(&self, d: &Digest, max: u64) -> Result<Vec<u8>, Error> {
        let p = self.blob_path(d);
        let m = fs::metadata(&p).map_err(io_err(format!("reading cached {d}")))?;
        if m.len() > max {
            return Err(Error::TooLarge {
                what: d.to_string(),
                max,
            });
        }
        let b = fs::read(&p).map_err(io_err(format!("reading cached {d}")))?;
        if Digest::of(&b) != *d {
            return Err(Error::Corrupt(format!(
                "cached blob {d} does not match its digest (remove it with `imager cache prune`)"
            )));
        }
        Ok(b)
    }

    fn set_note(&self, d: &Digest, note: &str) {
        if note.is_empty() {
            return;
        }
        let p = self.root.join("notes").join(d.hex());
        // best effort: notes are only for `cache ls`
        if let Ok(mut t) = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            && t.write_all(note.as_bytes()).is_ok()
        {
            let _ = t.persist(p);
        }
    }

    /// Every blob, sorted by digest.
    pub fn list(&self) -> Result<Vec<Entry>, Error> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))? {
            let e = e.map_err(io_err(format!("listing {}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            let m = e
                .metadata()
                .map_err(io_err(format!("stat {}", e.path().display())))?;
            let note = fs::read_to_string(self.root.join("notes").join(&name)).unwrap_or_default();
            out.push(Entry {
                digest,
                size: m.len(),
                last_used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                note,
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Removes blobs not used for `older_than` (all blobs when `None`) and leftover temp
    /// files, under the exclusive cache lock.
    pub fn prune(
        &self,
        older_than: Option<Duration>,
        now: SystemTime,
    ) -> Result<PruneReport, Error> {
        let _l = self.lock(true)?;
        let mut r = PruneReport::default();
        for e in self.list()? {
            let old = match older_than {
                None => true,
                Some(age) => now.duration_since(e.last_used).unwrap_or_default() >= age,
            };
            if !old {
                r.kept += 1;
                continue;
            }
            let p = self.blob_path(&e.digest);
            fs::remove_file(&p).map_err(io_err(format!("removing {}", p.display())))?;
            let _ = fs::remove_file(self.root.join("notes").join(e.digest.hex()));
            let _ = fs::remove_file(
                self.root
                    .join("locks")
                    .join(format!("{}.lock", e.digest.hex())),
            );
            r.removed += 1;
            r.bytes += e.size;
        }
        // no build runs (we hold the lock exclusively): temp files are leftovers of crashes
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(r)
    }
}

fn touch(p: &Path) {
    if let Ok(f) = OpenOptions::new().write(true).open(p) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_verify_prune() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let (dg, p) = c.insert_bytes(b"hello", "test").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        // a hit never calls fill
        let (_, hit) = c
            .get_or_insert(&dg, Some(5), "", |_| panic!("re-downloaded"))
            .unwrap();
        assert!(hit);
        // a wrong fill is refused and leaves nothing behind
        let other = Digest::of(b"other");
        let e = c
            .get_or_insert(&other, Some(5), "", |w| {
                w.write_all(b"wrong").map_err(io_err("w"))
            })
            .unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert!(!c.blob_path(&other).exists());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        let e = c
            .get_or_insert(&other, Some(6), "", |w| {
                w.write_all(b"other").map_err(io_err("w"))
            })
            .unwrap_err();
        assert!(matches!(e, Error::Size { .. }), "{e}");
        let l = c.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].note, "test");
        let r = c
            .prune(Some(Duration::from_secs(3600)), SystemTime::now())
            .unwrap();
        assert_eq!((r.removed, r.kept), (0, 1));
        let r = c.prune(None, SystemTime::now()).unwrap();
        assert_eq!((r.removed, r.bytes), (1, 5));
        assert!(c.list().unwrap().is_empty());
    }

    #[test]
    fn concurrent_fill_once() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let data = vec![7u8; 1 << 20];
        let dg = Digest::of(&data);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let c = Cache::open(d.path()).unwrap();
                    c.get_or_insert(&dg, Some(data.len() as u64), "", |w| {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        w.write_all(&data).map_err(io_err("w"))
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(fs::read(c.blob_path(&dg)).unwrap(), data);
    }
}
