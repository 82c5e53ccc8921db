//! A parallel, reproducible SquashFS 4.0 writer.
//!
//! In: a tree described through [`Builder`] (directories, regular files from host paths or
//! memory, symlinks, hard links, xattrs) or a whole host directory ([`Builder::add_dir_tree`]).
//! Out: a SquashFS 4.0 image, as the Linux kernel and squashfs-tools 4.5/4.6 read it, written
//! to any `Write + Seek` ([`Builder::write`]):
//!
//! - zstd (any level; a compressor-options block carries the level when it is not 15, as
//!   `mksquashfs` writes it) or xz (LZMA2, dictionary = block size, CRC32 check, the form the
//!   kernel's xz decompressor accepts);
//! - data blocks of `block_size` (stored uncompressed when compression does not make them
//!   smaller, all-zero blocks sparse), tail ends packed into fragment blocks;
//! - duplicate files (same size and SHA-256 of the content) share their blocks and fragment and
//!   are never compressed twice;
//! - basic and extended inodes, directory tables with index for large directories, fragment,
//!   export, id (a single id: everything is owned by root, like `mksquashfs -all-root`) and
//!   xattr tables; every mtime and the superblock time are [`Options::mtime`];
//! - the image padded to a 4 KiB multiple.
//!
//! The output is a pure function of the tree and the [`Options`]; the number of threads never
//! changes a byte.
//!
//! Why our own writer: backhand's writer is single-threaded, writes no xattrs or hard links and
//! deduplicates only whole blocks, which makes it about 2× slower than `mksquashfs` on two
//! cores at the compression levels we use. Here one reader thread streams file contents in
//! walk order (hashing each file first so that a duplicate is never compressed), `threads`
//! workers compress data and fragment blocks with one reused compressor context each, and the
//! calling thread appends the compressed blocks in order; memory stays bounded by a pool of
//! a few blocks per worker plus the metadata. Metadata tables are written at the end.

mod compress;
mod data;
mod format;
mod meta;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors of the writer; each names the path at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: already exists in the image")]
    Duplicate { path: String },
    #[error("{path}: parent directory {parent:?} has not been added")]
    MissingParent { path: String, parent: String },
    #[error("{path}: parent {parent:?} is not a directory")]
    ParentNotDirectory { path: String, parent: String },
    #[error("{path}: hard link target {existing:?} {reason}")]
    HardLink {
        path: String,
        existing: String,
        reason: &'static str,
    },
    #[error("{path}: xattr {name:?}: {reason}")]
    Xattr {
        path: String,
        name: String,
        reason: &'static str,
    },
    #[error("{path}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: unsupported file type ({kind}); only directories, regular files and symlinks can be stored"
    )]
    Unsupported { path: String, kind: &'static str },
    #[error("{path}: {reason}")]
    Limit { path: String, reason: &'static str },
    #[error("invalid options: {0}")]
    Options(String),
    #[error("compression failed: {0}")]
    Compress(String),
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

type Result<T> = std::result::Result<T, SquashfsError>;

/// Compressor of data and metadata blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (compression id 6) at `level` (1–22).
    Zstd { level: i32 },
    /// xz (compression id 4): LZMA2 preset 6, dictionary size = block size (`mksquashfs
    /// -Xdict-size 100%`), CRC32 check, as the Linux kernel's squashfs xz decompressor expects.
    Xz,
}

/// How the image is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub compression: Compression,
    /// Data block size: a power of two from 4 KiB to 1 MiB (default 128 KiB).
    pub block_size: u32,
    /// Modification time of every inode and of the superblock (Unix seconds).
    pub mtime: u32,
    /// Compressor threads; 0 = the available parallelism. Never changes the output.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compression: Compression::Zstd { level: 18 },
            block_size: 131_072,
            mtime: 0,
            threads: 0,
        }
    }
}

/// Contents of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this host file while writing (it must not change in between).
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// What [`Builder::write`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Image size, padding included.
    pub bytes: u64,
    /// Inodes (hard links count once).
    pub inodes: u32,
    /// Data blocks stored (sparse blocks and fragment blocks not counted).
    pub data_blocks: u64,
    /// Fragment blocks.
    pub fragments: u32,
    /// Non-empty files whose content duplicates an earlier file's (stored once).
    pub duplicate_files: u32,
}

pub(crate) enum Kind {
    Dir { children: BTreeMap<String, usize> },
    File { src: Option<Source> },
    Symlink { target: String },
}

pub(crate) struct Node {
    pub kind: Kind,
    /// permission bits (0o7777)
    pub mode: u16,
    /// sorted by full name, unique
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub nlink: u32,
    /// first path it was added under, for errors
    pub path: String,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Collects a tree, then writes it as a SquashFS image.
pub struct Builder {
    opts: Options,
    /// `nodes[0]` is the root directory
    nodes: Vec<Node>,
}

/// Splits a relative path into its parent path and name, validating every component.
fn split(path: &str) -> Result<(&str, &str)> {
    let bad = |reason| SquashfsError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.starts_with('/') {
        return Err(bad("must be relative (no leading '/')"));
    }
    for c in path.split('/') {
        match c {
            "" => return Err(bad("empty component")),
            "." | ".." => return Err(bad("'.' and '..' components are not allowed")),
            _ if c.len() > format::NAME_MAX => return Err(bad("a name is longer than 256 bytes")),
            _ if c.contains('\0') => return Err(bad("NUL in a name")),
            _ => {}
        }
    }
    Ok(match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    })
}

fn check_xattrs(path: &str, mut xattrs: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>> {
    let err = |name: &str, reason| SquashfsError::Xattr {
        path: path.to_string(),
        name: name.to_string(),
        reason,
    };
    for (name, value) in &xattrs {
        let Some((prefix, _)) = format::XATTR_PREFIXES
            .iter()
            .find(|(p, _)| name.starts_with(p))
        else {
            return Err(err(name, "the prefix must be user., trusted. or security."));
        };
        if name.len() == prefix.len() {
            return Err(err(name, "empty name after the prefix"));
        }
        if name.len() > 255 {
            return Err(err(name, "name longer than 255 bytes"));
        }
        if value.len() > 65_536 {
            return Err(err(name, "value longer than 64 KiB"));
        }
    }
    xattrs.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = xattrs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(err(&w[0].0, "given twice"));
    }
    Ok(xattrs)
}

impl Builder {
    /// An empty tree: only the root directory, mode 0o755.
    pub fn new(opts: Options) -> Self {
        Builder {
            opts,
            nodes: vec![Node {
                kind: Kind::Dir {
                    children: BTreeMap::new(),
                },
                mode: 0o755,
                xattrs: Vec::new(),
                nlink: 1,
                path: String::new(),
            }],
        }
    }

    /// Node id of `path` ("" is the root), if it exists.
    fn lookup(&self, path: &str) -> Option<usize> {
        let mut id = 0;
        if path.is_empty() {
            return Some(0);
        }
        for c in path.split('/') {
            match &self.nodes[id].kind {
                Kind::Dir { children } => id = *children.get(c)?,
                _ => return None,
            }
        }
        Some(id)
    }

    /// Enters `name` → node `id` into the directory `parent` (of `path`), which must exist
    /// and not have the name yet.
    fn link(&mut self, path: &str, parent: &str, name: &str, id: usize) -> Result<()> {
        let Some(pid) = self.lookup(parent) else {
            return Err(SquashfsError::MissingParent {
                path: path.to_string(),
                parent: parent.to_string(),
            });
        };
        match &mut self.nodes[pid].kind {
            Kind::Dir { children } => {
                if children.contains_key(name) {
                    return Err(SquashfsError::Duplicate {
                        path: path.to_string(),
                    });
                }
                children.insert(name.to_string(), id);
            }
            _ => {
                return Err(SquashfsError::ParentNotDirectory {
                    path: path.to_string(),
                    parent: parent.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Adds `node` at `path` after checking the parent exists and the name is free.
    fn insert(&mut self, path: &str, node: Node) -> Result<usize> {
        let (parent, name) = split(path)?;
        let id = self.nodes.len();
        self.link(path, parent, name, id)?;
        self.nodes.push(node);
        Ok(id)
    }

    /// Adds a directory. Paths are relative, '/'-separated, with no leading '/' and no "." or
    /// ".." components; "" is the root, which exists from the start with mode 0o755 and may be
    /// given once to set its mode and xattrs. The parent must already have been added.
    pub fn dir(&mut self, path: &str, mode: u32, xattrs: Vec<(String, Vec<u8>)>) -> Result<()> {
        let xattrs = check_xattrs(path, xattrs)?;
        let mode = (mode & 0o7777) as u16;
        if path.is_empty() {
            let root = &mut self.nodes[0];
            root.mode = mode;
            root.xattrs = xattrs;
            return Ok(());
        }
        self.insert(
            path,
            Node {
                kind: Kind::Dir {
                    children: BTreeMap::new(),
                },
                mode,
                xattrs,
                nlink: 1,
                path: path.to_string(),
            },
        )
        .map(|_| ())
    }

    /// Adds a regular file with permission bits `mode` (masked with 0o7777).
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        xattrs: Vec<(String, Vec<u8>)>,
        src: Source,
    ) -> Result<()> {
        let xattrs = check_xattrs(path, xattrs)?;
        self.insert(
            path,
            Node {
                kind: Kind::File { src: Some(src) },
                mode: (mode & 0o7777) as u16,
                xattrs,
                nlink: 1,
                path: path.to_string(),
            },
        )
        .map(|_| ())
    }

    /// Adds a symlink (mode 0o777) pointing at `target`.
    pub fn symlink(
        &mut self,
        path: &str,
        target: &str,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let xattrs = check_xattrs(path, xattrs)?;
        if target.is_empty() || target.len() > 4095 || target.contains('\0') {
            return Err(SquashfsError::Limit {
                path: path.to_string(),
                reason: "a symlink target must be 1 to 4095 bytes without NUL",
            });
        }
        self.insert(
            path,
            Node {
                kind: Kind::Symlink {
                    target: target.to_string(),
                },
                mode: 0o777,
                xattrs,
                nlink: 1,
                path: path.to_string(),
            },
        )
        .map(|_| ())
    }

    /// Makes `path` another directory entry for the inode of the already-added file (or
    /// symlink) `existing`; the inode's link count grows by one.
    pub fn hardlink(&mut self, path: &str, existing: &str) -> Result<()> {
        let err = |reason| SquashfsError::HardLink {
            path: path.to_string(),
            existing: existing.to_string(),
            reason,
        };
        let Some(id) = self.lookup(existing).filter(|_| !existing.is_empty()) else {
            return Err(err("has not been added"));
        };
        if matches!(self.nodes[id].kind, Kind::Dir { .. }) {
            return Err(err("is a directory"));
        }
        let (parent, name) = split(path)?;
        self.link(path, parent, name, id)?;
        self.nodes[id].nlink += 1;
        Ok(())
    }

    /// Adds the host directory `host` and everything below it under `prefix` ("" = the root):
    /// a walk sorted by name bytes; permission bits (suid/sgid/sticky included) from the host,
    /// the prefix directory itself taking `host`'s (it is created when missing, its parent must
    /// exist); symlinks as symlinks; files sharing a device and inode number as hard links.
    /// Host owners, times and xattrs are not copied. Device nodes, fifos and sockets are
    /// refused with an error naming the path, as are names that are not UTF-8.
    pub fn add_dir_tree(&mut self, host: &Path, prefix: &str) -> Result<()> {
        fn io_err<'p>(
            p: &'p Path,
            what: &'static str,
        ) -> impl FnOnce(io::Error) -> SquashfsError + 'p {
            move |source| SquashfsError::Io {
                path: p.display().to_string(),
                what,
                source,
            }
        }
        let meta = fs::metadata(host).map_err(io_err(host, "reading the directory"))?;
        if !meta.is_dir() {
            return Err(SquashfsError::Io {
                path: host.display().to_string(),
                what: "not a directory",
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        match self.lookup(prefix) {
            Some(id) if matches!(self.nodes[id].kind, Kind::Dir { .. }) => {
                self.nodes[id].mode = mode as u16;
            }
            Some(_) => {
                return Err(SquashfsError::Duplicate {
                    path: prefix.to_string(),
                });
            }
            None => self.dir(prefix, mode, Vec::new())?,
        }
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        // explicit stack of (host dir, image path) for deep trees
        let mut stack = vec![(host.to_path_buf(), prefix.to_string())];
        while let Some((dir, ipath)) = stack.pop() {
            let mut names = Vec::new();
            for e in fs::read_dir(&dir).map_err(io_err(&dir, "reading the directory"))? {
                let e = e.map_err(io_err(&dir, "reading the directory"))?;
                names.push(e.file_name());
            }
            names.sort();
            let mut subdirs = Vec::new();
            for name in names {
                let hpath = dir.join(&name);
                let Some(name) = name.to_str() else {
                    return Err(SquashfsError::InvalidPath {
                        path: hpath.display().to_string(),
                        reason: "name is not UTF-8",
                    });
                };
                let child = if ipath.is_empty() {
                    name.to_string()
                } else {
                    format!("{ipath}/{name}")
                };
                let m = fs::symlink_metadata(&hpath).map_err(io_err(&hpath, "reading metadata"))?;
                let ft = m.file_type();
                let mode = m.permissions().mode() & 0o7777;
                let hard = |links: &mut HashMap<(u64, u64), String>| {
                    if m.nlink() > 1 {
                        if let Some(first) = links.get(&(m.dev(), m.ino())) {
                            return Some(first.clone());
                        }
                        links.insert((m.dev(), m.ino()), child.clone());
                    }
                    None
                };
                if ft.is_dir() {
                    self.dir(&child, mode, Vec::new())?;
                    subdirs.push((hpath, child));
                } else if ft.is_file() {
                    match hard(&mut links) {
                        Some(first) => self.hardlink(&child, &first)?,
                        None => self.file(&child, mode, Vec::new(), Source::Path(hpath))?,
                    }
                } else if ft.is_symlink() {
                    match hard(&mut links) {
                        Some(first) => self.hardlink(&child, &first)?,
                        None => {
                            let t = fs::read_link(&hpath)
                                .map_err(io_err(&hpath, "reading the symlink"))?;
                            let Some(t) = t.to_str() else {
                                return Err(SquashfsError::InvalidPath {
                                    path: hpath.display().to_string(),
                                    reason: "symlink target is not UTF-8",
                                });
                            };
                            self.symlink(&child, t, Vec::new())?;
                        }
                    }
                } else {
                    use std::os::unix::fs::FileTypeExt;
                    let kind = if ft.is_block_device() {
                        "block device"
                    } else if ft.is_char_device() {
                        "character device"
                    } else if ft.is_fifo() {
                        "fifo"
                    } else if ft.is_socket() {
                        "socket"
                    } else {
                        "unknown"
                    };
                    return Err(SquashfsError::Unsupported {
                        path: hpath.display().to_string(),
                        kind,
                    });
                }
            }
            // pushed in reverse so that they are walked in name order
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Writes the image at the current position of `out` (offsets in the image are relative
    /// to it) and leaves `out` positioned after the padded image.
    pub fn write<W: Write + Seek>(self, mut out: W) -> Result<Stats> {
        let opts = self.opts.clone();
        if !(4096..=1 << 20).contains(&opts.block_size) || !opts.block_size.is_power_of_two() {
            return Err(SquashfsError::Options(format!(
                "block size {} is not a power of two from 4096 to 1048576",
                opts.block_size
            )));
        }
        if let Compression::Zstd {
            level: level @ (i32::MIN..=0 | 23..),
        } = opts.compression
        {
            return Err(SquashfsError::Options(format!(
                "zstd level {level} is not 1 to 22"
            )));
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut nodes = self.nodes;
        let base = out.stream_position().map_err(SquashfsError::Write)?;
        // superblock placeholder and compressor options
        let mut head = vec![0u8; format::SUPERBLOCK_SIZE];
        let mut flags =
            format::FLAG_DUPLICATES | format::FLAG_EXPORTABLE | format::FLAG_ALWAYS_FRAGMENTS;
        let compression_id = match opts.compression {
            Compression::Zstd { level } => {
                if level != 15 {
                    flags |= format::FLAG_COMPRESSOR_OPTIONS;
                    head.extend_from_slice(&format::metadata_header(4, false).to_le_bytes());
                    head.extend_from_slice(&(level as u32).to_le_bytes());
                }
                format::COMP_ZSTD
            }
            Compression::Xz => format::COMP_XZ,
        };
        out.write_all(&head).map_err(SquashfsError::Write)?;

        let order = meta::data_order(&nodes);
        let sources = order
            .iter()
            .map(|&id| match &mut nodes[id].kind {
                Kind::File { src } => (src.take(), nodes[id].path.clone()),
                _ => (None, String::new()),
            })
            .collect::<Vec<_>>();
        let data = data::write_data(&opts, threads, sources, &mut out, head.len() as u64)?;

        let mut comp = compress::BlockCompressor::new(&opts.compression, opts.block_size)?;
        let tables = meta::write_tables(&nodes, &order, &data, &opts, &mut comp)?;
        let mut pos = data.end;
        fn put<W: Write>(out: &mut W, pos: &mut u64, bytes: &[u8]) -> Result<u64> {
            let at = *pos;
            out.write_all(bytes).map_err(SquashfsError::Write)?;
            *pos += bytes.len() as u64;
            Ok(at)
        }
        let inode_table_start = put(&mut out, &mut pos, &tables.inodes)?;
        let directory_table_start = put(&mut out, &mut pos, &tables.dirs)?;
        let (frag, fragment_table_start) =
            format::indexed_table(&tables.fragment_entries, pos, &mut comp)?;
        put(&mut out, &mut pos, &frag)?;
        let (export, export_table_start) =
            format::indexed_table(&tables.export_entries, pos, &mut comp)?;
        put(&mut out, &mut pos, &export)?;
        let (ids, id_table_start) = format::indexed_table(&0u32.to_le_bytes(), pos, &mut comp)?;
        put(&mut out, &mut pos, &ids)?;
        let xattr_id_table_start = if tables.xattr_ids.is_empty() {
            flags |= format::FLAG_NO_XATTRS;
            format::INVALID_BLK
        } else {
            let kv_start = put(&mut out, &mut pos, &tables.xattr_kv)?;
            let (ids, index) = format::indexed_table(&tables.xattr_ids, pos, &mut comp)?;
            // the id table header sits where the index starts: kv start, count, unused
            let (blocks, index) = ids.split_at((index - pos) as usize);
            put(&mut out, &mut pos, blocks)?;
            let count = (tables.xattr_ids.len() / 16) as u32;
            let mut hdr = kv_start.to_le_bytes().to_vec();
            hdr.extend_from_slice(&count.to_le_bytes());
            hdr.extend_from_slice(&0u32.to_le_bytes());
            hdr.extend_from_slice(index);
            put(&mut out, &mut pos, &hdr)?
        };
        let bytes_used = pos;
        let padded = bytes_used.div_ceil(4096) * 4096;
        out.write_all(&vec![0u8; (padded - bytes_used) as usize])
            .map_err(SquashfsError::Write)?;
        let sb = format::Superblock {
            inode_count: tables.inode_count,
            mkfs_time: opts.mtime,
            block_size: opts.block_size,
            fragment_count: data.fragments.len() as u32,
            compression_id,
            flags,
            id_count: 1,
            root_inode: tables.root_ref,
            bytes_used,
            id_table_start,
            xattr_id_table_start,
            inode_table_start,
            directory_table_start,
            fragment_table_start,
            export_table_start,
        };
        out.seek(io::SeekFrom::Start(base))
            .map_err(SquashfsError::Write)?;
        out.write_all(&sb.to_bytes())
            .map_err(SquashfsError::Write)?;
        out.seek(io::SeekFrom::Start(base + padded))
            .map_err(SquashfsError::Write)?;
        out.flush().map_err(SquashfsError::Write)?;
        Ok(Stats {
            bytes: padded,
            inodes: tables.inode_count,
            data_blocks: data.data_blocks,
            fragments: data.fragments.len() as u32,
            duplicate_files: data.duplicate_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        let mut b = Builder::new(Options::default());
        assert!(matches!(
            b.file("a/b", 0o644, vec![], Source::Bytes(vec![])),
            Err(SquashfsError::MissingParent { .. })
        ));
        b.dir("a", 0o755, vec![]).unwrap();
        b.file("a/b", 0o644, vec![], Source::Bytes(vec![])).unwrap();
        let e = b
            .file("a/b", 0o644, vec![], Source::Bytes(vec![]))
            .unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
        for bad in ["/x", "a//c", "a/./c", "a/../c", "a/"] {
            assert!(
                matches!(
                    b.dir(bad, 0o755, vec![]),
                    Err(SquashfsError::InvalidPath { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            b.file("a/b/c", 0o644, vec![], Source::Bytes(vec![])),
            Err(SquashfsError::ParentNotDirectory { .. })
        ));
        assert!(b.hardlink("a/c", "a").is_err());
        assert!(b.hardlink("a/c", "nope").is_err());
        b.hardlink("a/c", "a/b").unwrap();
        assert!(b.dir("x", 0o755, vec![("os.foo".into(), vec![])]).is_err());
    }
}
