//! An extension image flattened into memory: metadata in a sorted map, file contents in
//! numbered blob files under a staging directory.
//!
//! Nothing from the archive is ever used as a host path: entries are applied to the map after
//! their names are checked (no `..`, no absolute paths, no walking through a symlink), symlink
//! targets are resolved lexically and refused when they leave the tree, hard links must name
//! a regular file already in the tree (they become copies sharing the same blob), device
//! nodes and FIFOs are refused, and the total size of file contents is bounded. Contents are
//! written only as `<staging>/<n>`, so nothing can be written outside the staging directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file whose content is the blob file.
    File {
        /// Blob path in the staging directory.
        blob: PathBuf,
        /// Size in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink(String),
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type and content.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// The SELinux label recorded from the archive (`SCHILY.xattr.security.selinux`).
    pub selinux: Option<Vec<u8>>,
    /// Index of the layer that wrote the entry (for whiteouts).
    layer: usize,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A hostile or unsupported entry.
    #[error("{path}: {msg}")]
    Refused {
        /// The entry's name in the archive.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// Reading the archive or writing a blob failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The archives hold more entries than any extension has.
    #[error("archive holds more than {limit} entries (the limit for one image)")]
    TooMany {
        /// The limit.
        limit: u64,
    },
    /// The archive expands beyond the size limit.
    #[error("archive expands beyond the limit of {limit} bytes (IMAGER_MAX_EXTENSION_BYTES)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

fn refused(path: &str, msg: impl Into<String>) -> TreeError {
    TreeError::Refused {
        path: path.to_string(),
        msg: msg.into(),
    }
}

/// A flattened image tree.
#[derive(Debug)]
pub struct Tree {
    staging: PathBuf,
    entries: BTreeMap<String, Node>,
    next_blob: u64,
    bytes: u64,
    limit: u64,
    headers: u64,
    buf: Vec<u8>,
    has_empty: bool,
}

/// Bound on the tar headers of one image, all layers together: metadata memory grows with
/// the entry count (a few hundred bytes each), and real extensions hold a few thousand.
pub const MAX_ENTRIES: u64 = 256 * 1024;

/// Name of the OCI opaque-directory whiteout.
const OPAQUE: &str = ".wh..wh..opq";
/// Prefix of OCI whiteout files.
const WHITEOUT: &str = ".wh.";

/// Checks and normalises an archive path: relative, `/`-separated, no `..`; `./` and empty
/// components are dropped. Returns `None` for the archive root itself.
pub fn normalize(raw: &[u8]) -> Result<Option<String>, TreeError> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| refused(&String::from_utf8_lossy(raw), "name is not UTF-8"))?;
    if s.contains('\0') {
        return Err(refused(s, "name contains NUL"));
    }
    if s.starts_with('/') {
        return Err(refused(s, "absolute path"));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(refused(s, "path traversal ('..')")),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

impl Tree {
    /// An empty tree whose blobs go to `staging` (created), with a content limit in bytes.
    pub fn new(staging: &Path, limit: u64) -> Result<Self, TreeError> {
        std::fs::create_dir_all(staging).map_err(|source| TreeError::Io {
            context: format!("creating {}", staging.display()),
            source,
        })?;
        Ok(Self {
            staging: staging.to_path_buf(),
            entries: BTreeMap::new(),
            next_blob: 0,
            bytes: 0,
            limit,
            headers: 0,
            buf: Vec::new(),
            has_empty: false,
        })
    }

    /// All entries, sorted by path (a parent always precedes its children).
    pub fn entries(&self) -> &BTreeMap<String, Node> {
        &self.entries
    }

    /// One entry.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    /// Entries under `dir` (not `dir` itself), as `(path relative to dir, node)`.
    pub fn under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = format!("{dir}/");
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(move |(k, v)| (&k[dir.len() + 1..], v))
    }

    /// Removes `path` and everything under it; returns the removed entries.
    pub fn remove_tree(&mut self, path: &str) -> Vec<(String, Node)> {
        let prefix = format!("{path}/");
        let keys: Vec<String> = std::iter::once(path.to_string())
            .filter(|k| self.entries.contains_key(k))
            .chain(
                self.entries
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        keys.into_iter()
            .filter_map(|k| self.entries.remove(&k).map(|n| (k, n)))
            .collect()
    }

    /// Inserts a synthetic entry (embedded config, generated files).
    pub fn insert(&mut self, path: &str, kind: Kind, mode: u32, selinux: Option<Vec<u8>>) {
        self.entries.insert(
            path.to_string(),
            Node {
                kind,
                mode: mode & 0o7777,
                selinux,
                layer: usize::MAX,
            },
        );
    }

    /// Writes `data` to a new blob and returns its path and size.
    pub fn blob(&mut self, mut data: impl Read, name: &str) -> Result<(PathBuf, u64), TreeError> {
        let path = self.staging.join(self.next_blob.to_string());
        self.next_blob += 1;
        let mut f = std::fs::File::create(&path).map_err(|source| TreeError::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        // one buffer for every blob: a fresh 256 KiB allocation per entry is an mmap/munmap
        // pair per file, which made trees of many small files cost seconds of system time
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 * 1024, 0);
        let r = self.copy_blob(&mut data, &mut f, &mut buf, &path, name);
        self.buf = buf;
        let size = r?;
        Ok((path, size))
    }

    /// The blob every empty file shares (read-only for its users).
    fn empty_blob(&mut self) -> Result<PathBuf, TreeError> {
        let path = self.staging.join("empty");
        if !self.has_empty {
            std::fs::File::create(&path).map_err(|source| TreeError::Io {
                context: format!("creating {}", path.display()),
                source,
            })?;
            self.has_empty = true;
        }
        Ok(path)
    }

    fn copy_blob(
        &mut self,
        data: &mut impl Read,
        f: &mut std::fs::File,
        buf: &mut [u8],
        path: &Path,
        name: &str,
    ) -> Result<u64, TreeError> {
        let mut size = 0u64;
        loop {
            let n = data.read(buf).map_err(|source| TreeError::Io {
                context: format!("reading {name}"),
                source,
            })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            self.bytes += n as u64;
            if self.bytes > self.limit {
                return Err(TreeError::TooLarge { limit: self.limit });
            }
            f.write_all(&buf[..n]).map_err(|source| TreeError::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        }
        Ok(size)
    }

    /// Checks that every ancestor of `path` is a directory (creating missing ones, 0755, as
    /// tar extraction does) and never a symlink.
    fn ensure_parents(&mut self, path: &str, layer: usize) -> Result<(), TreeError> {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            match self.entries.get(&acc).map(|n| &n.kind) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink(_)) => {
                    return Err(refused(
                        path,
                        format!("path goes through the symlink {acc}"),
                    ));
                }
                Some(Kind::File { .. }) => {
                    return Err(refused(path, format!("parent {acc} is not a directory")));
                }
                None => {
                    self.entries.insert(
                        acc.clone(),
                        Node {
                            kind: Kind::Dir,
                            mode: 0o755,
                            selinux: None,
                            layer,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Applies one tar stream as layer `layer`. With `whiteouts`, OCI whiteout entries delete
    /// lower-layer entries instead of being extracted.
    pub fn apply_tar(
        &mut self,
        reader: impl Read,
        layer: usize,
        whiteouts: bool,
    ) -> Result<(), TreeError> {
        let mut ar = tar::Archive::new(reader);
        let io = |what: &str| {
            let what = what.to_string();
            move |source| TreeError::Io {
                context: what,
                source,
            }
        };
        let entries = ar.entries().map_err(io("reading the tar stream"))?;
        for e in entries {
            self.headers += 1;
            if self.headers > MAX_ENTRIES {
                return Err(TreeError::TooMany { limit: MAX_ENTRIES });
            }
            let mut e = e.map_err(io("reading a tar header"))?;
            let raw = e.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let Some(path) = normalize(&raw)? else {
                // the archive root ("./"): only its mode matters, and the extension root is
                // `rootfs/`, so it is ignored
                continue;
            };
            let mut selinux = None;
            if let Some(exts) = e
                .pax_extensions()
                .map_err(io(&format!("{shown}: PAX header")))?
            {
                for x in exts {
                    let x = x.map_err(io(&format!("{shown}: PAX header")))?;
                    if x.key_bytes() == b"SCHILY.xattr.security.selinux" {
                        selinux = Some(x.value_bytes().to_vec());
                    }
                }
            }
            let h = e.header();
            let mode = h.mode().map_err(io(&format!("{shown}: mode")))? & 0o7777;
            let ty = h.entry_type();
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            if whiteouts && name.starts_with(WHITEOUT) {
                let dir = parent(&path).map(str::to_string);
                self.ensure_parents(&path, layer)?;
                if name == OPAQUE {
                    let d = dir.unwrap_or_default();
                    let lower: Vec<String> = if d.is_empty() {
                        self.entries.keys().cloned().collect()
                    } else {
                        self.under(&d).map(|(k, _)| format!("{d}/{k}")).collect()
                    };
                    for k in lower {
                        if self.entries.get(&k).is_some_and(|n| n.layer < layer) {
                            self.entries.remove(&k);
                        }
                    }
                } else {
                    let victim = &name[WHITEOUT.len()..];
                    if victim.is_empty() || victim == "." || victim == ".." {
                        return Err(refused(&shown, "invalid whiteout"));
                    }
                    let target = match dir {
                        Some(d) => format!("{d}/{victim}"),
                        None => victim.to_string(),
                    };
                    self.remove_tree(&target);
                }
                continue;
            }
            self.ensure_parents(&path, layer)?;
            let node = |kind| Node {
                kind,
                mode,
                selinux: selinux.clone(),
                layer,
            };
            match ty {
                tar::EntryType::Directory => match self.entries.get_mut(&path) {
                    Some(n) if n.kind == Kind::Dir => {
                        n.mode = mode;
                        n.selinux = selinux.clone();
                        n.layer = layer;
                    }
                    _ => {
                        self.remove_tree(&path);
                        self.entries.insert(path, node(Kind::Dir));
                    }
                },
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    // empty files share one empty blob: no file is created per entry
                    let empty = ty != tar::EntryType::GNUSparse
                        && e.header().entry_size().is_ok_and(|n| n == 0);
                    let (blob, size) = if empty {
                        (self.empty_blob()?, 0)
                    } else {
                        self.blob(&mut e, &shown)?
                    };
                    self.remove_tree(&path);
                    self.entries.insert(path, node(Kind::File { blob, size }));
                }
                tar::EntryType::Symlink => {
                    let target = e
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default();
                    let target = std::str::from_utf8(&target)
                        .map_err(|_| refused(&shown, "symlink target is not UTF-8"))?
                        .to_string();
                    check_symlink(&path, &target).map_err(|m| refused(&shown, m))?;
                    self.remove_tree(&path);
                    self.entries.insert(path, node(Kind::Symlink(target)));
                }
                tar::EntryType::Link => {
                    let raw_t = e
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default();
                    let target = normalize(&raw_t).map_err(|_| {
                        refused(
                            &shown,
                            format!(
                                "hard link to {:?} escapes the tree",
                                String::from_utf8_lossy(&raw_t)
                            ),
                        )
                    })?;
                    let t = target.ok_or_else(|| refused(&shown, "hard link to the root"))?;
                    let Some(Node {
                        kind: Kind::File { blob, size },
                        ..
                    }) = self.entries.get(&t).cloned()
                    else {
                        return Err(refused(
                            &shown,
                            format!("hard link to {t:?}, which is not a regular file in the image"),
                        ));
                    };
                    self.remove_tree(&path);
                    self.entries.insert(path, node(Kind::File { blob, size }));
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(refused(&shown, "device nodes are not allowed"));
                }
                tar::EntryType::Fifo => return Err(refused(&shown, "FIFOs are not allowed")),
                other => {
                    return Err(refused(
                        &shown,
                        format!("unsupported tar entry type {other:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Refuses a symlink whose target, resolved lexically from the link's directory (an absolute
/// target from the tree root), leaves the tree.
pub fn check_symlink(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty symlink target".into());
    }
    if target.contains('\0') {
        return Err("symlink target contains NUL".into());
    }
    let mut stack: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut s: Vec<&str> = path.split('/').collect();
        s.pop();
        s
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(format!("symlink to {target:?} escapes the tree"));
                }
            }
            c => stack.push(c),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize(b"./a//b/./c").unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(normalize(b"./").unwrap(), None);
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"a/\xff").is_err());
    }

    #[test]
    fn symlinks() {
        assert!(check_symlink("rootfs/usr/lib/a", "../../x").is_ok());
        assert!(check_symlink("rootfs/usr/lib/a", "/usr/lib/b").is_ok());
        assert!(check_symlink("rootfs/a", "../../etc/shadow").is_err());
        assert!(check_symlink("rootfs/a", "/../../etc").is_err());
        assert!(check_symlink("rootfs/a", "").is_err());
    }
}
