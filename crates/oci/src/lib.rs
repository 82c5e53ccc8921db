//! OCI images for the imager: references, manifests and indexes, a registry client (pull by
//! tag or digest, `linux/<arch>` from an index, auth, mirrors with fallback, TLS with extra
//! CAs, retries), a content-addressed blob cache safe under concurrent builds, and writers for
//! OCI layouts, docker-archive tarballs and gzip layers.
//!
//! Nothing here knows about Talos; the imager composes it (container assets in
//! docs/formats/profile.md, the installer image in docs/formats/outputs.md).

pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod digest;
pub mod layout;
pub mod proxy;
pub mod reference;
pub mod types;

pub use cache::Cache;
pub use client::{Client, ClientOptions, Image};
pub use config::RegistriesConfig;
pub use digest::Digest;
pub use reference::Reference;

/// Errors. Messages name the image, blob, endpoint or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed reference.
    #[error("image reference {reference:?}: {why}")]
    Reference {
        /// The input.
        reference: String,
        /// Why.
        why: String,
    },
    /// A malformed digest.
    #[error("malformed digest {0:?}: not sha256:<64 lowercase hex>")]
    Digest(String),
    /// A malformed manifest.
    #[error("{what}: {why}")]
    Manifest {
        /// Which.
        what: String,
        /// Why.
        why: String,
    },
    /// No manifest for the platform.
    #[error("{what}: no image for {wanted} (the index has: {have})")]
    Platform {
        /// Which image.
        what: String,
        /// Wanted platform.
        wanted: String,
        /// Platforms present.
        have: String,
    },
    /// Content does not match its digest.
    #[error("digest mismatch: expected {expected}, got {got}")]
    Mismatch {
        /// Expected.
        expected: Digest,
        /// Computed.
        got: Digest,
    },
    /// Content does not have its size.
    #[error(
        "blob {digest}: size mismatch: expected {expected} bytes, got {got}{}",
        if got < expected { " (truncated)" } else { "" }
    )]
    Size {
        /// Digest.
        digest: Digest,
        /// Expected.
        expected: u64,
        /// Actual.
        got: u64,
    },
    /// Over a size limit.
    #[error("{what}: larger than the {max}-byte limit")]
    TooLarge {
        /// Which.
        what: String,
        /// Limit.
        max: u64,
    },
    /// A cached blob is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// Registry config or flag problem.
    #[error("{0}")]
    Config(String),
    /// Authentication failed.
    #[error("authentication: {0}")]
    Auth(String),
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// Another registry error.
    #[error("registry: {0}")]
    Registry(String),
    /// A transfer failed after retries.
    #[error("{0}")]
    Transfer(String),
    /// Every endpoint failed.
    #[error("{reference}: every endpoint failed: {errors}")]
    Endpoints {
        /// The reference.
        reference: String,
        /// Per-endpoint errors.
        errors: String,
    },
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the registry said the thing does not exist (on every endpoint).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::Endpoints { errors, .. } => {
                errors.split("; ").all(|e| e.contains("not found: "))
            }
            _ => false,
        }
    }

    /// For optional lookups (signature and referrer tags): whether some endpoint said the
    /// thing does not exist, whatever the others did (a mirror without it while the
    /// registry behind it is unreachable, as on air-gapped sites). Safe for signatures only
    /// because a missing signature fails verification closed.
    pub fn is_absent(&self) -> bool {
        match self {
            Error::Endpoints { errors, .. } => {
                errors.split("; ").any(|e| e.contains("not found: "))
            }
            e => e.is_not_found(),
        }
    }
}
