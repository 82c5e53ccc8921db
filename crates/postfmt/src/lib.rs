//! Post-processing formats of the imager (docs/formats/outputs.md, Talos `pkg/imager/post.go`):
//! `.xz`, `.gz`, `.zst` and `.tar.gz` of a finished disk image.
//!
//! In: a path to a (usually sparse, 2–11 GB) file. Out: the compressed bytes, written to any
//! [`std::io::Write`]. Every writer here is
//!
//! - **streaming**: memory is bounded by a few chunks per thread (128 KiB for gzip, 1 MiB blocks
//!   for xz preset 0), never the whole input — plus what a codec itself needs (libzstd at level
//!   18 uses on the order of 100 MiB per worker, as the `zstd` CLI does);
//! - **multithreaded**: `threads` workers (0 = all cores, like Talos' `-T0`);
//! - **deterministic**: the output is a function of the input *content* and the level only, never
//!   of the thread count, the filesystem's hole layout or the clock;
//! - **sparse-aware**: holes are found with `lseek(SEEK_DATA/SEEK_HOLE)` and never read; all-zero
//!   4 KiB blocks (at multiples of 4 KiB) inside data extents are treated exactly like holes,
//!   so the output is the same for a sparse file and a dense copy of it.
//!
//! Talos runs `xz -0 -T0`, `pigz -6 --no-time`, `zstd -T0 -18` and
//! `tar --sparse … disk.raw | pigz -6 --no-time`; [`Format::default_level`] and [`Options`]
//! carry those defaults, and [`compress`] dispatches on [`Format`]. Compatibility: `.xz` is
//! byte-identical to `xz -0 -T2` (any thread count ≥ 2 of xz); the `.tar` inside `.tar.gz` is
//! byte-identical to GNU tar's when the file's holes are exactly its zero blocks; `.gz` and
//! `.zst` decode with gzip/pigz and zstd but are not byte-identical to pigz and zstd (different
//! deflate implementation; zero runs as separate zstd frames, 4 MiB jobs).

mod gz;
mod pool;
mod scan;
mod tar;
mod xz;
mod zst;

use std::io::{self, Write};
use std::path::Path;

pub use gz::{CHUNK_SIZE as GZ_CHUNK_SIZE, ParallelGzEncoder, gzip};
pub use tar::{tar_gz_sparse, tar_sparse};
pub use xz::{xz, xz_block_size};
pub use zst::{ZERO_FRAME_MIN, zstd};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the input or writing the output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `reading /tmp/disk.raw`.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A parameter is out of range (level, member name, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an [`io::Error`] with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Resolves a thread count: 0 means "all cores" (`available_parallelism`), like `-T0`.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// A post-processing format (the suffix appended to the output file name, docs/formats/outputs.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `.xz`: xz container, LZMA2, CRC64 (Talos: `xz -0 -T0`).
    Xz,
    /// `.gz`: one gzip member, pigz-style parallel deflate (Talos: `pigz -6 --no-time`).
    Gz,
    /// `.zst`: zstd frames with checksums (Talos: `zstd -T0 -18`).
    Zst,
    /// `.tar.gz`: a GNU sparse tar holding one member, gzipped (Talos: `tar --sparse … | pigz -6`).
    TarGz,
}

impl Format {
    /// The file-name suffix, with its dot: `.xz`, `.gz`, `.zst`, `.tar.gz`.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Xz => ".xz",
            Format::Gz => ".gz",
            Format::Zst => ".zst",
            Format::TarGz => ".tar.gz",
        }
    }

    /// Parses a suffix or name as used by the benchmark example: `xz`, `gz`, `zst`, `tar.gz`
    /// (a leading dot is accepted).
    pub fn from_suffix(s: &str) -> Option<Format> {
        match s.strip_prefix('.').unwrap_or(s) {
            "xz" => Some(Format::Xz),
            "gz" => Some(Format::Gz),
            "zst" => Some(Format::Zst),
            "tar.gz" => Some(Format::TarGz),
            _ => None,
        }
    }

    /// The level Talos uses: xz preset 0, gzip level 6 (also for `.tar.gz`), zstd level 18.
    pub fn default_level(self) -> i32 {
        match self {
            Format::Xz => 0,
            Format::Gz | Format::TarGz => 6,
            Format::Zst => 18,
        }
    }
}

/// The tar member name Talos uses for `.tar.gz` (GCP imports it under this name).
pub const DEFAULT_MEMBER_NAME: &str = "disk.raw";

/// Options of [`compress`]; [`Options::default`] is Talos-compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Timestamp for `.tar.gz` member headers (`SOURCE_DATE_EPOCH`; 0 if unset). The gzip
    /// header's mtime is always 0 (`pigz --no-time`).
    pub epoch: u64,
    /// Worker threads; 0 = all cores. Never changes the output bytes.
    pub threads: usize,
    /// Name of the single `.tar.gz` member (default `disk.raw`).
    pub member_name: String,
    /// Compression level; `None` = [`Format::default_level`].
    pub level: Option<i32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            epoch: 0,
            threads: 0,
            member_name: DEFAULT_MEMBER_NAME.to_string(),
            level: None,
        }
    }
}

/// Compresses the file at `src` into `dst` in format `fmt` (docs/formats/outputs.md,
/// post-processing).
///
/// `dst` is written sequentially and flushed at the end; wrap nothing, the writers buffer.
pub fn compress<W: Write>(fmt: Format, src: &Path, dst: &mut W, opts: &Options) -> Result<()> {
    let level = opts.level.unwrap_or(fmt.default_level());
    let unsigned = |l: i32| {
        u32::try_from(l).map_err(|_| Error::InvalidArgument(format!("level {l} for {fmt:?}")))
    };
    match fmt {
        Format::Xz => xz(src, dst, unsigned(level)?, opts.threads),
        Format::Gz => gzip(src, dst, unsigned(level)?, opts.threads),
        Format::Zst => zstd(src, dst, level, opts.threads),
        Format::TarGz => tar_gz_sparse(
            src,
            &opts.member_name,
            dst,
            opts.epoch,
            unsigned(level)?,
            opts.threads,
        ),
    }
}
