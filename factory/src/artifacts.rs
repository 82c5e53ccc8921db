//! The factory's inputs (docs/formats/factory.md, "Inputs"): the versions offered (the tags of the
//! installer-base repository), and per version the official extensions and overlays (the
//! catalog images' `image-digests`, `descriptions.yaml` and `overlays.yaml`).

use serde::Serialize;
use std::io::Read;

/// Bound on a catalog file.
const MAX_CATALOG_FILE: u64 = 4 << 20;
/// Bound on the number of entries in a catalog.
const MAX_ENTRIES: usize = 4096;

/// A version tag `vMAJOR.MINOR.PATCH[-PRE]` (semver's order: sysext's, the one extension
/// compatibility checks use).
pub fn version(tag: &str) -> Option<sysext::constraint::Version> {
    let v = tag.strip_prefix('v')?;
    if v.len() > 64 {
        return None;
    }
    sysext::constraint::Version::parse(v).ok()
}

/// The versions offered among `tags`: `v`-prefixed versions at or above `min`, not in
/// `broken`, oldest first.
pub fn offered(tags: &[String], min: &str, broken: &[String]) -> Vec<String> {
    let min = sysext::constraint::Version::parse_tolerant(min).ok();
    let mut v: Vec<(sysext::constraint::Version, String)> = tags
        .iter()
        .filter(|t| !broken.iter().any(|b| b == *t))
        .filter_map(|t| Some((version(t)?, t.clone())))
        .filter(|(v, _)| min.as_ref().is_none_or(|m| v >= m))
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.1 == b.1);
    v.into_iter().map(|(_, t)| t).collect()
}

/// An official extension (the JSON of `/version/:v/extensions/official`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionRef {
    /// `siderolabs/gvisor`: the name schematics use.
    pub name: String,
    /// The tagged reference as the catalog lists it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:…`.
    pub digest: String,
    /// From `descriptions.yaml`.
    pub author: String,
    /// From `descriptions.yaml`.
    pub description: String,
}

/// An official overlay (the JSON of `/version/:v/overlays/official`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayRef {
    /// `rpi_generic`.
    pub name: String,
    /// `siderolabs/sbc-raspberrypi`.
    pub image: String,
    /// The tagged reference.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:…`.
    pub digest: String,
}

/// A catalog that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("catalog {what}: {why}")]
pub struct CatalogError {
    /// Which catalog.
    pub what: String,
    /// Why.
    pub why: String,
}

/// `registry/path:tag@sha256:hex` → (path, tag, digest).
fn split_line(line: &str) -> Option<(String, String, String)> {
    let (tagged, digest) = line.split_once('@')?;
    let d = oci::Digest::parse(digest).ok()?;
    let r = oci::Reference::parse(tagged).ok()?;
    Some((r.repository.clone(), r.tag.clone()?, d.to_string()))
}

/// The files of a catalog layer (a tar, gzip-compressed or not) whose names are in `names`.
pub fn layer_files(
    layer: &std::path::Path,
    names: &[&str],
    what: &str,
) -> Result<std::collections::BTreeMap<String, String>, CatalogError> {
    let bad = |why: String| CatalogError {
        what: what.to_string(),
        why,
    };
    let mut f = std::fs::File::open(layer).map_err(|e| bad(e.to_string()))?;
    let mut magic = [0u8; 2];
    let gz = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let f = std::fs::File::open(layer).map_err(|e| bad(e.to_string()))?;
    let r: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for (i, e) in ar.entries().map_err(|e| bad(e.to_string()))?.enumerate() {
        if i > 10_000 {
            return Err(bad("more than 10,000 entries".into()));
        }
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        let path = e.path().map_err(|e| bad(e.to_string()))?;
        let name = path.to_string_lossy().trim_start_matches("./").to_string();
        if !names.contains(&name.as_str()) || !e.header().entry_type().is_file() {
            continue;
        }
        let mut text = String::new();
        (&mut e)
            .take(MAX_CATALOG_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if text.len() as u64 > MAX_CATALOG_FILE {
            return Err(bad(format!("{name}: larger than 4 MiB")));
        }
        out.insert(name, text);
    }
    Ok(out)
}

/// The extensions of a catalog: `image-digests` lines (`registry/path:tag@sha256:…`), with
/// authors and descriptions from `descriptions.yaml` (keyed by the whole line).
pub fn extensions(
    files: &std::collections::BTreeMap<String, String>,
    what: &str,
) -> Result<Vec<ExtensionRef>, CatalogError> {
    let bad = |why: String| CatalogError {
        what: what.to_string(),
        why,
    };
    let digests = files
        .get("image-digests")
        .ok_or_else(|| bad("no image-digests file".into()))?;
    let descriptions: serde_json::Value = match files.get("descriptions.yaml") {
        Some(t) => serde_saphyr::from_str(t).map_err(|e| bad(format!("descriptions.yaml: {e}")))?,
        None => serde_json::Value::Null,
    };
    let mut out = Vec::new();
    for line in digests.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if out.len() >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} extensions")));
        }
        let (name, _tag, digest) = split_line(line)
            .ok_or_else(|| bad(format!("image-digests: bad line {:?}", clip(line))))?;
        let d = &descriptions[line];
        out.push(ExtensionRef {
            reference: line.split_once('@').map_or(line, |x| x.0).to_string(),
            name,
            digest,
            author: d["author"].as_str().unwrap_or_default().to_string(),
            description: d["description"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(out)
}

/// The overlays of a catalog: `overlays.yaml` (`overlays: [{name, image, digest}]`).
pub fn overlays(
    files: &std::collections::BTreeMap<String, String>,
    what: &str,
) -> Result<Vec<OverlayRef>, CatalogError> {
    let bad = |why: String| CatalogError {
        what: what.to_string(),
        why,
    };
    let text = files
        .get("overlays.yaml")
        .ok_or_else(|| bad("no overlays.yaml file".into()))?;
    let v: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| bad(format!("overlays.yaml: {e}")))?;
    let mut out = Vec::new();
    for o in v["overlays"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_ENTRIES)
    {
        let image = o["image"].as_str().unwrap_or_default();
        let digest = o["digest"].as_str().unwrap_or_default();
        let r = oci::Reference::parse(image).map_err(|e| bad(format!("overlays.yaml: {e}")))?;
        oci::Digest::parse(digest).map_err(|e| bad(format!("overlays.yaml: {e}")))?;
        out.push(OverlayRef {
            name: o["name"].as_str().unwrap_or_default().to_string(),
            image: r.repository.clone(),
            reference: image.to_string(),
            digest: digest.to_string(),
        });
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars().take(120).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_in_semver_order() {
        let tags: Vec<String> = [
            "v1.14.0",
            "v1.9.2",
            "v1.15.0-alpha.1",
            "v1.15.0",
            "latest",
            "v1.1.0",
            "v1.15.0-beta.0",
            "sha256-ab.sig",
            "v1.14.0",
            "1.13.0",
            "v1.12.1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            offered(&tags, "1.2.0", &["v1.12.1".into()]),
            [
                "v1.9.2",
                "v1.14.0",
                "v1.15.0-alpha.1",
                "v1.15.0-beta.0",
                "v1.15.0"
            ]
        );
        assert!(version("v1.2").is_none());
        assert!(version("1.2.3").is_none());
        assert!(version("v1.2.3-a..b").is_none());
        assert!(version("v01.2.3").is_none());
    }

    #[test]
    fn extension_catalog() {
        let line = "ghcr.io/siderolabs/gvisor:20231214.0@sha256:5ab365f2b98ab885b1d9a6ebb2e2b06d0a7887d2c173a2b7d3f9e0e4f2f4f1cb";
        let files = [
            ("image-digests".to_string(), format!("{line}\n\n127.0.0.1:5000/siderolabs/zfs:2.2.2@sha256:6f9e2d0c8a9d18b9a54c3d0f7c6b3a2f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b\n")),
            (
                "descriptions.yaml".to_string(),
                format!("\"{line}\":\n  author: Sidero Labs\n  description: gVisor container runtime\n"),
            ),
        ]
        .into_iter()
        .collect();
        let e = extensions(&files, "x").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "siderolabs/gvisor");
        assert_eq!(e[0].reference, "ghcr.io/siderolabs/gvisor:20231214.0");
        assert_eq!(e[0].author, "Sidero Labs");
        assert_eq!(e[1].name, "siderolabs/zfs");
        assert_eq!(e[1].reference, "127.0.0.1:5000/siderolabs/zfs:2.2.2");
        assert_eq!(e[1].description, "");
        let bad = [(
            "image-digests".to_string(),
            "ghcr.io/x:1@md5:00\n".to_string(),
        )]
        .into_iter()
        .collect();
        assert!(
            extensions(&bad, "x")
                .unwrap_err()
                .to_string()
                .contains("bad line")
        );
    }
}
