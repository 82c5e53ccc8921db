//! The in-memory description of what goes into the filesystem.
//!
//! In: directories and files added by `/`-separated path (files from host paths or bytes), or
//! whole host directories. Out: a sorted tree ([`BTreeMap`] per directory) that the writer walks.
//! Names are validated as FAT long names and checked for case-insensitive duplicates when they
//! are added, so every error names the offending path early. Only file sizes are read here;
//! contents are read when the filesystem is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::FatError;
use crate::names::{fold, validate_long_name};

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A regular file on the host, streamed when the filesystem is written.
    Path(PathBuf),
    /// Contents held in memory.
    Bytes(Vec<u8>),
}

/// A file in the tree.
#[derive(Debug, Clone)]
pub(crate) struct FileNode {
    pub src: Source,
    pub size: u32,
    pub read_only: bool,
}

/// A node of the tree: a directory or a file.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Dir(Dir),
    File(FileNode),
}

/// A directory: children sorted by exact name, plus their case-folded names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dir {
    pub entries: BTreeMap<String, Node>,
    folded: BTreeSet<String>,
}

impl Dir {
    /// Registers a new child name, refusing one that equals an existing name case-insensitively.
    fn claim(&mut self, name: &str, path: &str) -> Result<(), FatError> {
        if self.entries.contains_key(name) || !self.folded.insert(fold(name)) {
            return Err(FatError::Duplicate {
                path: path.to_string(),
            });
        }
        Ok(())
    }
}

/// Directories and files to put into a FAT filesystem, addressed by `/`-separated paths
/// (leading and trailing `/` are ignored; `""` is the root).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    root: Dir,
}

/// Splits and validates a tree path.
fn components(path: &str) -> Result<Vec<&str>, FatError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for part in &parts {
        validate_long_name(part).map_err(|reason| FatError::InvalidName {
            path: trimmed.to_string(),
            reason,
        })?;
    }
    Ok(parts)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FatError + '_ {
    move |source| FatError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Tree {
    /// An empty tree (just the root directory).
    pub fn new() -> Self {
        Self::default()
    }

    /// The root directory, for the writer.
    pub(crate) fn root(&self) -> &Dir {
        &self.root
    }

    /// Walks to (creating as needed) the directory named by `parts`.
    fn ensure_dir(&mut self, parts: &[&str]) -> Result<&mut Dir, FatError> {
        let mut dir = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            let here = parts[..=i].join("/");
            if !dir.entries.contains_key(*part) {
                dir.claim(part, &here)?;
            }
            let node = dir
                .entries
                .entry((*part).to_string())
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => return Err(FatError::NotADirectory { path: here }),
            };
        }
        Ok(dir)
    }

    /// Adds a directory and any missing parents; adding an existing directory is a no-op.
    pub fn add_dir(&mut self, path: &str) -> Result<(), FatError> {
        let parts = components(path)?;
        self.ensure_dir(&parts).map(|_| ())
    }

    /// Adds a file (and any missing parent directories). For [`Source::Path`] the size is
    /// taken from the host file's metadata now and must not change before writing.
    pub fn add_file(&mut self, path: &str, src: Source, read_only: bool) -> Result<(), FatError> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(FatError::InvalidName {
                path: path.to_string(),
                reason: "a file needs a name".into(),
            });
        };
        let full = parts.join("/");
        let size = match &src {
            Source::Bytes(b) => b.len() as u64,
            Source::Path(p) => {
                let md = fs::metadata(p).map_err(io_err(p))?;
                if !md.is_file() {
                    return Err(FatError::Unsupported {
                        path: p.clone(),
                        kind: "not a regular file",
                    });
                }
                md.len()
            }
        };
        let size = u32::try_from(size).map_err(|_| FatError::FileTooLarge {
            path: full.clone(),
            size,
        })?;
        let dir = self.ensure_dir(parents)?;
        dir.claim(name, &full)?;
        dir.entries.insert(
            (*name).to_string(),
            Node::File(FileNode {
                src,
                size,
                read_only,
            }),
        );
        Ok(())
    }

    /// Adds the contents of host directory `fs_path` under tree path `at`, recursively, in
    /// sorted name order. Files are added writable; symlinks and special files are refused.
    pub fn add_host_dir(&mut self, fs_path: &Path, at: &str) -> Result<(), FatError> {
        let md = fs::metadata(fs_path).map_err(io_err(fs_path))?;
        if !md.is_dir() {
            return Err(FatError::Unsupported {
                path: fs_path.to_path_buf(),
                kind: "not a directory",
            });
        }
        self.add_dir(at)?;
        let mut children = Vec::new();
        for entry in fs::read_dir(fs_path).map_err(io_err(fs_path))? {
            children.push(entry.map_err(io_err(fs_path))?.file_name());
        }
        children.sort();
        let at = at.trim_matches('/');
        for name in children {
            let host = fs_path.join(&name);
            let Some(name) = name.to_str() else {
                return Err(FatError::InvalidName {
                    path: host.display().to_string(),
                    reason: "name is not valid UTF-8".into(),
                });
            };
            let inner = if at.is_empty() {
                name.to_string()
            } else {
                format!("{at}/{name}")
            };
            let md = fs::symlink_metadata(&host).map_err(io_err(&host))?;
            if md.is_dir() {
                self.add_host_dir(&host, &inner)?;
            } else if md.is_file() {
                self.add_file(&inner, Source::Path(host), false)?;
            } else {
                let kind = if md.file_type().is_symlink() {
                    "symbolic link"
                } else {
                    "special file"
                };
                return Err(FatError::Unsupported { path: host, kind });
            }
        }
        Ok(())
    }
}
