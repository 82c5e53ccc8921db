//! Reading an OCI image layout directory (`ociPath`): `oci-layout`, `index.json`, nested
//! indexes, the manifest for `linux/<arch>`, and its layers — every blob checked against its
//! descriptor's size and sha256 before it is parsed or extracted.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// JSON documents are read into memory: cap them.
const MAX_JSON: u64 = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (in indexes).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// `platform` of an index entry or the os/architecture of an image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Platform {
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `amd64`, `arm64`.
    #[serde(default)]
    pub architecture: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

/// A verified layer blob, ready to be extracted.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Blob file.
    pub path: PathBuf,
    /// Its digest.
    pub digest: String,
}

/// The blob file of `digest`, refusing anything but `sha256:<64 lowercase hex>` (so that a
/// digest can never name a path outside `blobs/`).
fn blob_path(root: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unsupported digest {digest:?} (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("malformed digest {digest:?}"));
    }
    Ok(root.join("blobs").join("sha256").join(hex))
}

/// Checks a blob's size and sha256 against `d` by streaming it.
pub fn verify_blob(root: &Path, d: &Descriptor) -> Result<PathBuf, String> {
    let path = blob_path(root, &d.digest)?;
    let mut f = std::fs::File::open(&path).map_err(|e| format!("blob {}: {e}", d.digest))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("blob {}: {e}", d.digest))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        if n_total > d.size {
            break;
        }
        h.update(&buf[..n]);
    }
    if n_total != d.size {
        return Err(if n_total > d.size {
            format!(
                "blob {}: size mismatch (descriptor says {} bytes, the file is larger)",
                d.digest, d.size
            )
        } else {
            format!(
                "blob {}: size mismatch (descriptor says {} bytes, the file has {n_total}: truncated)",
                d.digest, d.size
            )
        });
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if got != d.digest {
        return Err(format!(
            "blob {}: digest mismatch (content is {got})",
            d.digest
        ));
    }
    Ok(path)
}

fn read_json<T: for<'de> Deserialize<'de>>(
    root: &Path,
    d: &Descriptor,
    what: &str,
) -> Result<T, String> {
    if d.size > MAX_JSON {
        return Err(format!(
            "{what} {} is {} bytes, more than {MAX_JSON}",
            d.digest, d.size
        ));
    }
    let path = verify_blob(root, d)?;
    let text = std::fs::read(&path).map_err(|e| format!("{what} {}: {e}", d.digest))?;
    serde_json::from_slice(&text).map_err(|e| format!("{what} {}: {e}", d.digest))
}

/// Resolves the layers of the `linux/<arch>` image of the layout at `root`.
pub fn layers(root: &Path, arch: &str) -> Result<Vec<Layer>, String> {
    let layout = root.join("oci-layout");
    let text = std::fs::read(&layout)
        .map_err(|e| format!("{}: {e} (not an OCI image layout)", layout.display()))?;
    let l: Layout = serde_json::from_slice(&text).map_err(|e| format!("oci-layout: {e}"))?;
    if l.version != "1.0.0" {
        return Err(format!(
            "oci-layout: unsupported imageLayoutVersion {:?}",
            l.version
        ));
    }
    let ipath = root.join("index.json");
    let meta = std::fs::metadata(&ipath).map_err(|e| format!("index.json: {e}"))?;
    if meta.len() > MAX_JSON {
        return Err("index.json: too large".into());
    }
    let text = std::fs::read(&ipath).map_err(|e| format!("index.json: {e}"))?;
    let index: Index = serde_json::from_slice(&text).map_err(|e| format!("index.json: {e}"))?;
    let mut seen = Vec::new();
    let found = find_manifest(root, &index.manifests, arch, 0, &mut seen)?;
    let Some(m) = found else {
        seen.sort();
        seen.dedup();
        return Err(format!(
            "no image for linux/{arch} in the layout (found: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ));
    };
    m.layers
        .iter()
        .map(|d| {
            if !d.media_type.is_empty()
                && !d.media_type.contains("layer")
                && !d.media_type.contains("rootfs.diff")
            {
                return Err(format!(
                    "layer {}: unexpected media type {:?}",
                    d.digest, d.media_type
                ));
            }
            Ok(Layer {
                path: verify_blob(root, d)?,
                digest: d.digest.clone(),
            })
        })
        .collect()
}

fn find_manifest(
    root: &Path,
    list: &[Descriptor],
    arch: &str,
    depth: usize,
    seen: &mut Vec<String>,
) -> Result<Option<Manifest>, String> {
    if depth > 4 {
        return Err("index nesting is too deep".into());
    }
    for d in list {
        if let Some(p) = &d.platform
            && (p.os != "linux" || p.architecture != arch)
        {
            seen.push(format!("{}/{}", p.os, p.architecture));
            continue;
        }
        match d.media_type.as_str() {
            MT_OCI_INDEX | MT_DOCKER_LIST => {
                let i: Index = read_json(root, d, "index")?;
                if let Some(m) = find_manifest(root, &i.manifests, arch, depth + 1, seen)? {
                    return Ok(Some(m));
                }
            }
            MT_OCI_MANIFEST | MT_DOCKER_MANIFEST | "" => {
                let m: Manifest = read_json(root, d, "manifest")?;
                if !m.media_type.is_empty()
                    && m.media_type != MT_OCI_MANIFEST
                    && m.media_type != MT_DOCKER_MANIFEST
                {
                    return Err(format!(
                        "manifest {}: media type {:?}",
                        d.digest, m.media_type
                    ));
                }
                let c: Platform = read_json(root, &m.config, "config")?;
                if c.os == "linux" && c.architecture == arch {
                    return Ok(Some(m));
                }
                seen.push(format!("{}/{}", c.os, c.architecture));
            }
            other => {
                return Err(format!(
                    "descriptor {}: unsupported media type {other:?}",
                    d.digest
                ));
            }
        }
    }
    Ok(None)
}
