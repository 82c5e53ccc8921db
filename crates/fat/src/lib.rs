//! Deterministic FAT32 filesystem writer, pure Rust, no external tools.
//!
//! In: a [`Tree`] of directories and files (file contents come from host paths or in-memory
//! bytes), [`FatOptions`] (label, volume id, sector size, cluster size, one timestamp), and a
//! `Write + Seek` sink with a byte offset and a size. Out: a FAT32 filesystem written into
//! `[offset, offset + size)` of the sink, laid out like `mkfs.fat -F 32` and populated the way
//! `mcopy` would, plus [`FatStats`] describing the result.
//!
//! The sink is usually a sparse disk image: the caller guarantees that the target range already
//! reads as zeros, and the writer never writes the large all-zero regions (free clusters, the
//! unused tail of both FATs). File contents are streamed through a fixed buffer, so memory use
//! does not depend on file sizes. The same inputs always give the same bytes.
//!
//! [`read::FatReader`] is a small independent reader used to verify images.

#![deny(missing_docs)]

mod layout;
mod names;
pub mod read;
mod tree;
mod writer;

use std::path::PathBuf;

pub use layout::MIN_FAT32_CLUSTERS;
pub use tree::{Source, Tree};
pub use writer::write_fat32;

/// Everything that can go wrong while building a tree, writing or reading a filesystem.
///
/// Each variant names the path (inside the FAT tree, or on the host) at fault.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// The options are unusable (bad label, sector size, cluster size, volume size).
    #[error("invalid FAT options: {0}")]
    InvalidOptions(String),
    /// The volume gives fewer clusters than FAT32 requires.
    #[error(
        "volume of {size_bytes} bytes is too small for FAT32: {clusters} clusters with \
         {sectors_per_cluster} sector(s) per cluster, at least {} needed",
        MIN_FAT32_CLUSTERS
    )]
    TooSmall {
        /// Requested volume size in bytes.
        size_bytes: u64,
        /// Cluster count that size would give.
        clusters: u64,
        /// Sectors per cluster that was tried last.
        sectors_per_cluster: u8,
    },
    /// The content does not fit into the volume.
    #[error("'{path}' does not fit: needs {needed} more cluster(s), only {free} free")]
    NoSpace {
        /// Tree path of the file or directory that could not be allocated.
        path: String,
        /// Clusters it needs.
        needed: u64,
        /// Clusters still free at that point.
        free: u64,
    },
    /// A path component is not a valid FAT long file name.
    #[error("invalid name '{path}': {reason}")]
    InvalidName {
        /// Tree path containing the bad component.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries of one directory compare equal the way FAT compares (case-insensitively).
    #[error("duplicate name '{path}' (FAT names are case-insensitive)")]
    Duplicate {
        /// Tree path of the second entry.
        path: String,
    },
    /// A path goes through something that is a file, not a directory.
    #[error("'{path}' is a file, not a directory")]
    NotADirectory {
        /// Tree path of the file in the way.
        path: String,
    },
    /// A file is larger than FAT32 can store (4 GiB - 1).
    #[error("file '{path}' is {size} bytes, FAT32 files are limited to 4294967295 bytes")]
    FileTooLarge {
        /// Tree or host path of the file.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A directory holds more entries than FAT allows (65536 slots).
    #[error("directory '{path}' has too many entries for FAT")]
    DirectoryTooLarge {
        /// Tree path of the directory.
        path: String,
    },
    /// A host path is a symlink or a special file, which a FAT tree cannot hold.
    #[error("unsupported file type at '{}': {kind}", path.display())]
    Unsupported {
        /// Host path.
        path: PathBuf,
        /// What it is (symlink, socket, ...).
        kind: &'static str,
    },
    /// A source file changed size between being added to the tree and being written.
    #[error("source '{path}' changed size while the filesystem was written")]
    SourceChanged {
        /// Host path.
        path: String,
    },
    /// An I/O error on a host path or on the output sink (named `<output>`).
    #[error("I/O error on '{path}': {source}")]
    Io {
        /// Host path, or `<output>` for the sink.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The reader found something that is not a valid FAT32 structure.
    #[error("corrupt FAT32 filesystem: {0}")]
    Corrupt(String),
}

/// Parameters of the filesystem to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatOptions {
    /// Volume label, at most 11 characters of printable ASCII allowed in short names; it is
    /// upper-cased. Empty means no label (`NO NAME` in the boot sector, no label entry).
    pub label: String,
    /// Volume serial number (the caller derives it deterministically).
    pub volume_id: u32,
    /// Logical sector size: 512, 1024, 2048 or 4096.
    pub sector_size: u16,
    /// Sectors per cluster (power of two, 1..=128); `None` picks mkfs.fat's default for the size.
    pub sectors_per_cluster: Option<u8>,
    /// Unix seconds used for every date/time field (interpreted as UTC, clamped to 1980..=2107).
    pub timestamp: i64,
    /// Accept fewer than [`MIN_FAT32_CLUSTERS`] clusters, like `mkfs.fat -F 32` does on small
    /// images (it only warns). Such volumes are NOT readable by UEFI firmware: EDK2 (OVMF)
    /// takes the FAT type from the cluster count, as the FAT specification says, and sees
    /// FAT16; an ESP must therefore be at least about 33 MiB with 512-byte clusters.
    pub allow_small: bool,
}

impl FatOptions {
    /// Options with 512-byte sectors, default cluster size and strict FAT32 cluster counts.
    pub fn new(label: &str, volume_id: u32, timestamp: i64) -> Self {
        FatOptions {
            label: label.to_string(),
            volume_id,
            sector_size: 512,
            sectors_per_cluster: None,
            timestamp,
            allow_small: false,
        }
    }
}

/// Layout facts about a written filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatStats {
    /// Logical sector size in bytes.
    pub sector_size: u16,
    /// Sectors per cluster.
    pub sectors_per_cluster: u8,
    /// Reserved sectors before the first FAT.
    pub reserved_sectors: u32,
    /// Sectors of one FAT.
    pub fat_sectors: u32,
    /// Total sectors of the volume.
    pub total_sectors: u32,
    /// Number of data clusters.
    pub total_clusters: u32,
    /// Clusters used by directories and files (including the root directory).
    pub used_clusters: u32,
    /// Byte offset of cluster 2 from the start of the volume.
    pub data_offset: u64,
}

impl FatStats {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.sector_size) * u64::from(self.sectors_per_cluster)
    }
}
