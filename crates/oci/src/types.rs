//! OCI / Docker v2 manifest, index and descriptor types (image-spec v1.1), and picking the
//! `linux/<arch>` manifest out of an index.
//!
//! Manifests are always kept as the registry's raw bytes next to their parsed form: digests are
//! computed over the bytes, never over a re-serialisation.

use crate::Error;
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (bytes); registries commonly cap at 4 MiB.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Media types of Sigstore bundles (`application/vnd.dev.sigstore.bundle.v0.3+json`, …).
pub const SIGSTORE_BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Largest image config accepted (bytes).
pub const MAX_CONFIG: u64 = 8 << 20;

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The descriptor of `bytes` with `media_type` (no platform, no annotations).
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The index entry of an OCI image manifest for `linux/<arch>[/variant]`.
    pub fn linux_manifest(bytes: &[u8], arch: &str, variant: Option<&str>) -> Self {
        Self {
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(str::to_string),
            }),
            ..Self::of(OCI_MANIFEST, bytes)
        }
    }
}

/// A platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// OS (`linux`).
    #[serde(default)]
    pub os: String,
    /// Variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a manifest document is.
#[derive(Debug, Clone)]
pub enum Document {
    /// An image manifest.
    Manifest(Manifest),
    /// An index.
    Index(Index),
}

/// Parses a manifest or index; `media_type` (the Content-Type, possibly empty) or the
/// document's own `mediaType` decides which.
pub fn parse_document(bytes: &[u8], media_type: &str, what: &str) -> Result<Document, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let bad = |e: serde_json::Error| Error::Manifest {
        what: what.to_string(),
        why: e.to_string(),
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(bad)?;
    let mt = probe.media_type.clone().unwrap_or_else(|| {
        media_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    let is_index =
        mt == OCI_INDEX || mt == DOCKER_INDEX || (mt.is_empty() && probe.manifests.is_some());
    if is_index {
        Ok(Document::Index(serde_json::from_slice(bytes).map_err(bad)?))
    } else if mt == OCI_MANIFEST || mt == DOCKER_MANIFEST || mt.is_empty() {
        let m: Manifest = serde_json::from_slice(bytes).map_err(bad)?;
        if m.schema_version != 2 {
            return Err(Error::Manifest {
                what: what.to_string(),
                why: format!("schemaVersion {} is not supported", m.schema_version),
            });
        }
        Ok(Document::Manifest(m))
    } else {
        Err(Error::Manifest {
            what: what.to_string(),
            why: format!("unsupported media type {mt:?}"),
        })
    }
}

/// The media type a document declares (falling back to what its shape says).
pub fn document_media_type(doc: &Document) -> String {
    let declared = match doc {
        Document::Manifest(m) => m.media_type.clone(),
        Document::Index(i) => i.media_type.clone(),
    };
    declared.unwrap_or_else(|| match doc {
        Document::Manifest(_) => OCI_MANIFEST.into(),
        Document::Index(_) => OCI_INDEX.into(),
    })
}

/// Picks the `linux/<arch>` image manifest of an index (attestation manifests, which have
/// platform `unknown/unknown`, never match).
pub fn select_platform<'a>(
    index: &'a Index,
    arch: &str,
    what: &str,
) -> Result<&'a Descriptor, Error> {
    let found: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                && (d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
        })
        .collect();
    // arm64: prefer no variant or v8, as containerd does
    found
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("v8") | Some("")))
        })
        .or(found.first())
        .copied()
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            Error::Platform {
                what: what.to_string(),
                wanted: format!("linux/{arch}"),
                have: have.join(", "),
            }
        })
}

/// Checks that an image config (JSON) is for `linux/<arch>`: a manifest reached without a
/// platform in an index (a single-manifest reference or layout) must say so in its config.
/// A config without an architecture is accepted.
pub fn check_config_platform(config: &[u8], arch: &str, what: &str) -> Result<(), Error> {
    if let Ok(c) = serde_json::from_slice::<ImageConfig>(config)
        && !c.architecture.is_empty()
        && (c.architecture != arch || (!c.os.is_empty() && c.os != "linux"))
    {
        return Err(Error::Platform {
            what: what.to_string(),
            wanted: format!("linux/{arch}"),
            have: format!("{}/{}", c.os, c.architecture),
        });
    }
    Ok(())
}

/// An image config (only the fields the imager reads or writes; the rest is kept as JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The runtime config (Entrypoint, Env, Labels, …), copied verbatim.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
    /// Layer diff ids.
    #[serde(default)]
    pub rootfs: RootFs,
    /// History, copied verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each uncompressed layer.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}
