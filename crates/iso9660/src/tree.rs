//! The image description: a sorted tree of directories and files plus boot options.
//!
//! In: `/`-separated paths with [`Source`]s and modes, boot settings. Out: an [`IsoBuilder`]
//! whose tree the writer walks. Names are checked when added (no empty, `.`, `..`, NUL or
//! over-long names; no duplicates; at most 8 directory levels; files below 4 GiB), so every
//! error names the offending path early. Only sizes are read here.

use std::collections::BTreeMap;
use std::fs;

use crate::{BiosBoot, IsoError, IsoOptions, PartitionTable, Source};

/// A file in the tree.
#[derive(Debug, Clone)]
pub(crate) struct FileNode {
    pub src: Source,
    pub size: u32,
    pub mode: u32,
}

/// A node: directory or file.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Dir(DirNode),
    File(FileNode),
}

/// A directory, children sorted by original name.
#[derive(Debug, Clone)]
pub(crate) struct DirNode {
    pub entries: BTreeMap<String, Node>,
    pub mode: u32,
}

impl DirNode {
    fn new(mode: u32) -> Self {
        DirNode {
            entries: BTreeMap::new(),
            mode,
        }
    }
}

/// Maximum directory levels, root included (ECMA-119 §6.8.2.1).
const MAX_LEVELS: usize = 8;

/// Builds an ISO image: tree, boot options, then [`IsoBuilder::write`].
#[derive(Debug, Clone)]
pub struct IsoBuilder {
    pub(crate) opts: IsoOptions,
    pub(crate) root: DirNode,
    pub(crate) bios: Option<BiosBoot>,
    pub(crate) efi: Option<(Source, u64)>,
    pub(crate) mbr_code: Option<[u8; 446]>,
    pub(crate) table: PartitionTable,
    pub(crate) catalog_name: Option<String>,
}

fn components(path: &str) -> Result<Vec<&str>, IsoError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for p in &parts {
        let reason = if p.is_empty() || *p == "." || *p == ".." {
            Some("empty, '.' or '..' component")
        } else if p.len() > 255 {
            Some("component longer than 255 bytes")
        } else if p.contains('\0') {
            Some("NUL in name")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(IsoError::InvalidPath {
                path: trimmed.to_string(),
                reason,
            });
        }
    }
    Ok(parts)
}

pub(crate) fn source_size(src: &Source) -> Result<u64, IsoError> {
    match src {
        Source::Bytes(b) => Ok(b.len() as u64),
        Source::Path(p) => {
            let m = fs::metadata(p).map_err(|source| IsoError::Io {
                path: p.display().to_string(),
                source,
            })?;
            if !m.is_file() {
                return Err(IsoError::InvalidPath {
                    path: p.display().to_string(),
                    reason: "source is not a regular file",
                });
            }
            Ok(m.len())
        }
    }
}

impl IsoBuilder {
    /// An empty image with the given options (no boot, no partition table).
    pub fn new(opts: IsoOptions) -> Self {
        IsoBuilder {
            opts,
            root: DirNode::new(0o755),
            bios: None,
            efi: None,
            mbr_code: None,
            table: PartitionTable::None,
            catalog_name: Some("boot.catalog".to_string()),
        }
    }

    fn ensure_dir(&mut self, parts: &[&str]) -> Result<&mut DirNode, IsoError> {
        if parts.len() >= MAX_LEVELS {
            return Err(IsoError::TooDeep {
                path: parts.join("/"),
            });
        }
        let mut dir = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            let node = dir
                .entries
                .entry((*part).to_string())
                .or_insert_with(|| Node::Dir(DirNode::new(0o755)));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => {
                    return Err(IsoError::NotADirectory {
                        path: parts[..=i].join("/"),
                    });
                }
            };
        }
        Ok(dir)
    }

    /// Adds a directory (mode 0755) and any missing parents; an existing directory is kept.
    pub fn add_dir(&mut self, path: &str) -> Result<(), IsoError> {
        let parts = components(path)?;
        self.ensure_dir(&parts).map(|_| ())
    }

    /// Adds a directory with a permission mode (e.g. `0o700`), creating missing parents.
    pub fn add_dir_mode(&mut self, path: &str, mode: u32) -> Result<(), IsoError> {
        let parts = components(path)?;
        let d = self.ensure_dir(&parts)?;
        d.mode = mode & 0o7777;
        Ok(())
    }

    /// Adds a file with mode 0644 (and missing parent directories).
    pub fn add_file(&mut self, path: &str, src: Source) -> Result<(), IsoError> {
        self.add_file_mode(path, src, 0o644)
    }

    /// Adds a file with a permission mode (e.g. `0o444`). For [`Source::Path`] the size is read
    /// now and must not change before writing. Files of 4 GiB or more are refused.
    pub fn add_file_mode(&mut self, path: &str, src: Source, mode: u32) -> Result<(), IsoError> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(IsoError::InvalidPath {
                path: path.to_string(),
                reason: "a file needs a name",
            });
        };
        let size = source_size(&src)?;
        let size = u32::try_from(size).map_err(|_| IsoError::TooLarge {
            path: parts.join("/"),
            size,
        })?;
        let dir = self.ensure_dir(parents)?;
        if dir.entries.contains_key(*name) {
            return Err(IsoError::Duplicate {
                path: parts.join("/"),
            });
        }
        dir.entries.insert(
            (*name).to_string(),
            Node::File(FileNode {
                src,
                size,
                mode: mode & 0o7777,
            }),
        );
        Ok(())
    }

    /// Adds a BIOS (platform 0x00) no-emulation El Torito entry for a file of the tree.
    pub fn bios_boot(&mut self, boot: BiosBoot) -> &mut Self {
        self.bios = Some(boot);
        self
    }

    /// Appends an EFI System Partition image after the ISO data as partition 2 and adds a
    /// UEFI (platform 0xEF) El Torito entry for it. Its size must be a non-zero multiple of
    /// 512 bytes.
    pub fn efi_image(&mut self, src: Source) -> Result<&mut Self, IsoError> {
        let size = source_size(&src)?;
        if size == 0 || size % 512 != 0 {
            return Err(IsoError::Boot(format!(
                "EFI image size {size} is not a non-zero multiple of 512"
            )));
        }
        self.efi = Some((src, size));
        Ok(self)
    }

    /// GRUB's `boot_hybrid.img` code (its first 446 bytes) for sector 0; the BIOS image's
    /// 512-byte LBA + 4 is patched at byte 432 (`--grub2-mbr`).
    pub fn hybrid_mbr(&mut self, code: Option<[u8; 446]>) -> &mut Self {
        self.mbr_code = code;
        self
    }

    /// Name of the El Torito boot catalog as a read-only file in the root directory
    /// (xorriso's `/boot.catalog`, the default), or `None` to keep it out of the tree.
    pub fn boot_catalog(&mut self, name: Option<&str>) -> &mut Self {
        self.catalog_name = name.map(str::to_string);
        self
    }

    /// Chooses the partition table of the system area.
    pub fn partition_table(&mut self, table: PartitionTable) -> &mut Self {
        self.table = table;
        self
    }
}
