//! Deterministic ISO 9660 writer with Rock Ridge, El Torito (BIOS and UEFI) and hybrid
//! MBR/GPT boot, replacing `xorrisofs` / `grub-mkrescue` (docs/formats/iso.md).
//!
//! In: a staged tree ([`IsoBuilder::add_dir`], [`IsoBuilder::add_file`]; files from host paths
//! or bytes), boot options (a BIOS no-emulation image in the tree with boot info table, an EFI
//! System Partition image appended as partition 2, GRUB's hybrid MBR code), a timestamp
//! (`SOURCE_DATE_EPOCH`), volume id and volume set id. Out: an `.iso` written sequentially
//! into a `Write + Seek` sink; file contents are streamed through a fixed buffer.
//!
//! Layout (mirrors xorriso 1.5 with `-partition_offset 16 -partition_cyl_align all`):
//! system area (blocks 0..16: MBR, GPT), PVD at 16, El Torito boot record, terminator, a second
//! PVD + terminator at block 32 (for the partition starting at block 16), path tables and
//! directories for both superblocks, the boot catalog, file data, padding to 1 MiB, the
//! appended ESP, 300 KiB of padding and the backup GPT. The same inputs always give the same
//! bytes: every date comes from the timestamp and GUIDs from [`gpt::guid_from_label`].

#![deny(missing_docs)]

mod names;
mod tree;
mod writer;

use std::path::PathBuf;

pub use names::volume_id;
pub use tree::IsoBuilder;
pub use writer::patch_boot_info_table;

/// Everything that can go wrong while building or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// A path or name in the tree is not acceptable.
    #[error("invalid path '{path}': {reason}")]
    InvalidPath {
        /// Path inside the image.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The same name was added twice to one directory.
    #[error("duplicate entry '{path}'")]
    Duplicate {
        /// Path inside the image.
        path: String,
    },
    /// A path component is a file where a directory is needed.
    #[error("'{path}' is not a directory")]
    NotADirectory {
        /// Path inside the image.
        path: String,
    },
    /// Directory nesting deeper than ISO 9660 allows (8 levels, root included); xorriso
    /// would relocate such directories to `RR_MOVED`, this writer refuses them.
    #[error("'{path}' is nested deeper than the 8 directory levels of ISO 9660")]
    TooDeep {
        /// Path inside the image.
        path: String,
    },
    /// A file of 4 GiB or more (would need multi-extent files).
    #[error("'{path}' is {size} bytes; files of 4 GiB or more are not supported")]
    TooLarge {
        /// Path inside the image (or the EFI image source).
        path: String,
        /// Its size.
        size: u64,
    },
    /// A boot option is inconsistent (missing boot file, bad image size, ...).
    #[error("boot configuration: {0}")]
    Boot(String),
    /// A source changed size between being added and being written.
    #[error("source '{path}' changed size while the image was written")]
    SourceChanged {
        /// Host path.
        path: String,
    },
    /// The image would exceed the 32-bit block addresses of ISO 9660.
    #[error("image too large for ISO 9660")]
    ImageTooLarge,
    /// An I/O error on a host path or on the output (named `<output>`).
    #[error("I/O error on '{path}': {source}")]
    Io {
        /// Host path, or `<output>`.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The GPT could not be built or written.
    #[error("GPT: {0}")]
    Gpt(#[from] gpt::GptError),
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A regular file on the host, streamed when the image is written.
    Path(PathBuf),
    /// Contents held in memory.
    Bytes(Vec<u8>),
}

/// Image-wide options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoOptions {
    /// Volume identifier (d-characters, at most 32; see [`volume_id`]).
    pub volume_id: String,
    /// Volume set identifier (at most 128 bytes, written as given).
    pub volume_set_id: String,
    /// Unix seconds used for every date (UTC, offset 0).
    pub timestamp: i64,
    /// Data preparer identifier written into the PVD (at most 128 bytes).
    pub preparer_id: String,
}

impl IsoOptions {
    /// Options with the given volume id, volume set id and timestamp.
    pub fn new(volume_id: &str, volume_set_id: &str, timestamp: i64) -> Self {
        IsoOptions {
            volume_id: volume_id.to_string(),
            volume_set_id: volume_set_id.to_string(),
            timestamp,
            preparer_id: "TALOS-RS ISO9660".to_string(),
        }
    }
}

/// The BIOS El Torito entry: a no-emulation image that is a file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosBoot {
    /// Path of the boot image in the tree (e.g. `boot/grub/i386-pc/eltorito.img`).
    pub path: String,
    /// Sectors (512 bytes) loaded by the BIOS (4 for GRUB).
    pub load_size: u16,
    /// Patch a boot info table at byte 8 of the image (`-boot-info-table`).
    pub boot_info_table: bool,
    /// Patch the image's 512-byte LBA + 5 as LE64 at byte 2548 (`--grub2-boot-info`).
    pub grub2_boot_info: bool,
}

impl BiosBoot {
    /// GRUB's settings: load size 4, boot info table and grub2 boot info.
    pub fn grub(path: &str) -> Self {
        BiosBoot {
            path: path.to_string(),
            load_size: 4,
            boot_info_table: true,
            grub2_boot_info: true,
        }
    }
}

/// How the system area (first 32 KiB) describes the image as a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTable {
    /// No partition table (a plain CD image; hybrid MBR code, if any, is still written).
    None,
    /// MBR: partition 1 (type 0x83) = the ISO data from block 16, partition 2 (0xEF) = the
    /// appended ESP (`xorrisofs -append_partition 2 0xef … -partition_offset 16
    /// -iso_mbr_part_type 0x83`).
    Mbr,
    /// Protective MBR (0xEE) and a GPT with `ISO9660` (basic data, read-only) and `Appended2`
    /// (ESP) partitions (`-appended_part_as_gpt`, grub-mkrescue's `--protective-msdos-label`).
    Gpt,
}

/// Facts about a written image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoStats {
    /// Total size of the image in bytes.
    pub size: u64,
    /// Blocks (2048 bytes) of the ISO 9660 data (before alignment padding and the ESP).
    pub iso_blocks: u32,
    /// Block of the boot catalog, if El Torito is used.
    pub catalog_lba: Option<u32>,
    /// Block of the BIOS boot image, if any.
    pub bios_image_lba: Option<u32>,
    /// Byte offset and size of the appended ESP, if any.
    pub esp: Option<(u64, u64)>,
}
