//! Virtual disk formats written from a sparse raw disk image, deterministically.
//!
//! In: a raw disk image ([`std::fs::File`], usually a multi-GiB sparse file holding tens of MB of
//! data) and [`Options`] (a SOURCE_DATE_EPOCH `timestamp` and a `label` that seeds every UUID).
//! Out: one file per call in the formats Talos produces with `qemu-img convert` and open-vmdk's
//! `vmdk-convert` (docs/formats/outputs.md, "Disk format conversion"):
//!
//! - [`write_qcow2`]: qcow2 v3, like `qemu-img convert -O qcow2 -o cluster_size=N`
//!   (options parsed by [`parse_qcow2_options`]);
//! - [`write_vhd_fixed`]: fixed VHD under Azure's rules, like
//!   `qemu-img convert -O vpc -o subformat=fixed,force_size` (options checked by
//!   [`parse_vhd_options`]), size rounded up to a whole MiB;
//! - [`write_vmdk_stream`]: a VMware streamOptimized sparse extent (deflate-compressed grains,
//!   markers, grain directory at the end), the kind `vmdk-convert` writes;
//! - [`write_ova`]: a ustar archive of `disk.ovf`, `disk.mf` and `disk.vmdk`
//!   (docs/formats/outputs.md, Talos' `pkg/imager/ova`).
//!
//! The input is read only where it holds data (`SEEK_DATA`/`SEEK_HOLE`), and all-zero clusters
//! or grains inside data extents are not stored either. Memory stays flat: the image is streamed
//! in chunks of about 1 MiB. The same input and options always give the same output bytes: no
//! clock, no randomness; anything that looks like a time comes from [`Options::timestamp`] and
//! any UUID or content ID from a SHA-256 of [`Options::label`].

mod ova;
mod qcow2;
mod scan;
mod vhd;
mod vmdk;

pub use ova::{OvaStats, OvfOptions, render_ovf, write_ova};
pub use qcow2::{DEFAULT_CLUSTER_SIZE, parse_qcow2_options, write_qcow2};
pub use vhd::{
    VHD_MAX_SIZE, VhdSubformat, chs_geometry, parse_vhd_options, write_vhd_dynamic, write_vhd_fixed,
};
pub use vmdk::write_vmdk_stream;

use sha2::{Digest, Sha256};
use std::io;

/// Options shared by every writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Seconds since the Unix epoch (SOURCE_DATE_EPOCH) for every timestamp a format carries
    /// (the VHD footer, the OVA's tar headers). Values before the format's epoch are clamped.
    pub timestamp: i64,
    /// Seeds the UUIDs and content IDs the formats need (VHD unique id, VMDK CID): the same
    /// label gives the same IDs, so callers pass something that names the image, e.g.
    /// `"azure-amd64.vhd"`.
    pub label: String,
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Size of the virtual disk, in bytes, as the output format records it.
    pub virtual_size: u64,
    /// Bytes of input stored in the output, before compression: the non-zero clusters, blocks
    /// or grains (whole units, so a little more than the non-zero bytes).
    pub data_bytes: u64,
    /// Size of the output, in bytes.
    pub output_size: u64,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum DiskFmtError {
    /// An I/O operation failed; `what` says which (and where).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. "reading the raw image at byte 4096".
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A format option string named a key this crate does not know.
    #[error("{format} option {key:?}: unknown option (supported: {supported})")]
    UnknownOption {
        /// The output format, e.g. "qcow2".
        format: &'static str,
        /// The offending key.
        key: String,
        /// The keys that are accepted.
        supported: &'static str,
    },
    /// A format option had a value this crate cannot use.
    #[error("{format} option {key}={value:?}: {reason}")]
    BadOption {
        /// The output format, e.g. "qcow2".
        format: &'static str,
        /// The option key.
        key: String,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The image does not fit the limits of the output format.
    #[error("image of {size} bytes is too large for {format}: {limit}")]
    TooLarge {
        /// The output format.
        format: &'static str,
        /// The size that was asked for, in bytes.
        size: u64,
        /// Which limit is exceeded.
        limit: String,
    },
}

/// Wraps an I/O error with a description of what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DiskFmtError {
    let what = what.into();
    move |source| DiskFmtError::Io { what, source }
}

/// 32 bytes derived from the label for one purpose (`domain` keeps the purposes apart).
pub(crate) fn derive(label: &str, domain: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"talos-rs diskfmt\0");
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(label.as_bytes());
    h.finalize().into()
}

/// A name-based UUID (RFC 9562 version 8, SHA-256 of the label) in big-endian byte order.
pub(crate) fn derive_uuid(label: &str, domain: &str) -> [u8; 16] {
    let d = derive(label, domain);
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Rounds `v` up to a multiple of `to` (a power of two), `None` on overflow.
pub(crate) fn round_up(v: u64, to: u64) -> Option<u64> {
    Some(v.checked_add(to - 1)? & !(to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_v8_and_stable() {
        let a = derive_uuid("x", "vhd");
        assert_eq!(a, derive_uuid("x", "vhd"));
        assert_ne!(a, derive_uuid("y", "vhd"));
        assert_ne!(a, derive_uuid("x", "other"));
        assert_eq!(a[6] >> 4, 8);
        assert_eq!(a[8] >> 6, 0b10);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 512), Some(0));
        assert_eq!(round_up(1, 512), Some(512));
        assert_eq!(round_up(512, 512), Some(512));
        assert_eq!(round_up(u64::MAX, 512), None);
    }
}
