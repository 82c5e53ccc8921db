//! The installer registry frontend (docs/formats/factory.md, "Installer registry"): a
//! read-only OCI distribution API under `/v2/` serving
//! `<platform>-installer[-secureboot]/<schematic>:<version>` (and upstream's legacy
//! `installer[-secureboot]/<schematic>`, meaning `metal`).
//!
//! A manifest asked for by tag is an index of one installer image per architecture the
//! version's installer-base has. It lives in the internal repository
//! (`artifacts.installer.internal`, else beside the cache), signed with the cache key; a
//! request finds it there and verifies its signature, or builds it once: each architecture's
//! installer tarball through the asset cache (`<platform>-installer-<arch>.tar`, shared with
//! `/image/…`), its image pushed by digest, the index pushed under the version and signed.
//! Manifests by digest and blobs are read from the internal repository and streamed through
//! (digests checked), so clients need to reach only the factory.

use crate::service::{Factory, FactoryError, clip};
use oci::types::{Descriptor, Document, OCI_INDEX, Platform};
use oci::{Digest, Reference};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Bound on a blob streamed through.
const MAX_BLOB: u64 = 16 << 30;
/// Bound on an installer tarball unpacked for pushing.
const MAX_TAR_ENTRIES: usize = 1024;

/// A manifest or index as served.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// A parsed repository name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerName {
    /// `metal`, `aws`, …
    pub platform: String,
    /// `-secureboot`.
    pub secureboot: bool,
    /// The schematic ID.
    pub schematic: String,
    /// The first path component as asked (`metal-installer`, `installer`).
    pub component: String,
}

/// Parses `<platform>-installer[-secureboot]/<schematic>` or `installer[-secureboot]/<id>`.
pub fn parse_name(name: &str) -> Option<InstallerName> {
    let (component, schematic) = name.split_once('/')?;
    if schematic.contains('/') {
        return None;
    }
    let (rest, secureboot) = match component.strip_suffix("-secureboot") {
        Some(r) => (r, true),
        None => (component, false),
    };
    let platform = if rest == "installer" {
        "metal".to_string()
    } else {
        let p = rest.strip_suffix("-installer")?;
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return None;
        }
        p.to_string()
    };
    Some(InstallerName {
        platform,
        secureboot,
        schematic: schematic.to_string(),
        component: component.to_string(),
    })
}

fn unavailable(x: impl std::fmt::Display) -> FactoryError {
    FactoryError::Unavailable(x.to_string())
}

fn internal(x: impl std::fmt::Display) -> FactoryError {
    FactoryError::Internal(x.to_string())
}

/// The internal repository of `n` and whether it is plain HTTP.
fn internal_repo(f: &Factory, n: &InstallerName) -> Result<(Reference, bool), FactoryError> {
    let i = &f.cfg.artifacts.installer.internal;
    let (registry, namespace, insecure) = if i.registry.is_empty() {
        let c = &f.cfg.cache.oci;
        (
            c.registry.clone(),
            format!("{}/installer", c.namespace.trim_matches('/')),
            c.insecure,
        )
    } else {
        (i.registry.clone(), i.namespace.clone(), i.insecure)
    };
    let mut name = registry;
    for part in [namespace.as_str(), &n.component, &n.schematic] {
        let part = part.trim_matches('/');
        if !part.is_empty() {
            name.push('/');
            name.push_str(part);
        }
    }
    let r = Reference::parse(&name).map_err(|e| FactoryError::BadRequest(e.to_string()))?;
    Ok((r, insecure))
}

/// The architectures (amd64, arm64) of the image `top` (resolved from `r`): an index's linux
/// platforms, or a single manifest's config architecture — then with the config's bytes
/// (read whole, at most `MAX_CONFIG`, digest checked).
pub fn platforms(
    client: &oci::Client,
    r: &Reference,
    top: &oci::client::Resolved,
    insecure: bool,
) -> Result<(Vec<&'static str>, Option<Vec<u8>>), FactoryError> {
    let doc = oci::types::parse_document(&top.bytes, &top.media_type, &r.to_string())
        .map_err(|e| unavailable(format!("{r}: {e}")))?;
    let (found, config): (Vec<String>, Option<Vec<u8>>) = match doc {
        Document::Index(ix) => (
            ix.manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .filter(|p| p.os == "linux")
                .map(|p| p.architecture.clone())
                .collect(),
            None,
        ),
        Document::Manifest(m) => {
            if m.config.size > oci::types::MAX_CONFIG {
                return Err(unavailable(format!("{r}: its config is too large")));
            }
            let mut cfg = Vec::new();
            client
                .open_blob(r, insecure, &m.config)
                .map_err(|e| unavailable(format!("{r}: {e}")))?
                .read_to_end(&mut cfg)
                .map_err(|e| unavailable(format!("{r}: {e}")))?;
            let v: serde_json::Value =
                serde_json::from_slice(&cfg).map_err(|e| unavailable(format!("{r}: {e}")))?;
            (
                vec![v["architecture"].as_str().unwrap_or_default().to_string()],
                Some(cfg),
            )
        }
    };
    let out = ["amd64", "arm64"]
        .into_iter()
        .filter(|a| found.iter().any(|x| x == a))
        .collect();
    Ok((out, config))
}

/// The architectures `version`'s installer-base has, after its signature is verified.
fn archs(f: &Factory, version: &str) -> Result<Vec<&'static str>, FactoryError> {
    let r = f.core_ref(&f.cfg.artifacts.core.components.installer_base, version)?;
    let insecure = f.cfg.artifacts.core.insecure;
    let fetcher = f.store().fetcher();
    let (top, _) = fetcher
        .resolve_verified("installer-base", &r, insecure)
        .map_err(|e| unavailable(format!("{e:#}")))?;
    let (out, _) = platforms(
        fetcher.client(),
        &r.with_digest(top.digest.clone()),
        &top,
        insecure,
    )?;
    if out.is_empty() {
        return Err(FactoryError::NotFound(format!(
            "the installer-base of {version} has no amd64 or arm64 image"
        )));
    }
    Ok(out)
}

/// The signed index of `n`:`version` in the internal repository, if it verifies.
fn lookup(f: &Factory, r: &Reference, insecure: bool) -> Result<Option<Manifest>, FactoryError> {
    let client = f.store().fetcher().client();
    let top = match client.resolve(r, insecure) {
        Ok(t) => t,
        Err(e) if e.is_absent() => return Ok(None),
        Err(e) => return Err(unavailable(format!("{r}: {e}"))),
    };
    let refuse = |why: &str| {
        crate::log::warn(
            "installer index refused",
            &[("ref", &r.to_string()), ("why", why)],
        );
        Ok(None)
    };
    if let Err(why) = f
        .store()
        .verify(r, insecure, &top.digest)
        .map_err(unavailable)?
    {
        return refuse(&why);
    }
    // the signature covers the index, not the tag: the index names the tag it was built for
    let v: serde_json::Value = serde_json::from_slice(&top.bytes).unwrap_or_default();
    if v["annotations"][crate::store::KEY_ANNOTATION].as_str() != Some(r.to_string().as_str()) {
        return refuse("the index was built for another version or repository");
    }
    Ok(Some(Manifest {
        bytes: top.bytes,
        media_type: top.media_type,
        digest: top.digest,
    }))
}

/// Unpacks an installer tarball (an OCI archive: `oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`; its docker-archive `manifest.json` is skipped) into `dir`; anything
/// else is refused.
fn unpack(tar_path: &Path, dir: &Path) -> Result<(), FactoryError> {
    let file = std::fs::File::open(tar_path).map_err(internal)?;
    let mut ar = tar::Archive::new(file);
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(internal)?;
    for (i, e) in ar.entries().map_err(internal)?.enumerate() {
        if i >= MAX_TAR_ENTRIES {
            return Err(internal("the installer tarball has too many entries"));
        }
        let mut e = e.map_err(internal)?;
        let path = e.path().map_err(internal)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        let kind = e.header().entry_type();
        // directories, and the docker-archive description beside the OCI one
        if kind.is_dir() || path == "manifest.json" || path == "repositories" {
            continue;
        }
        let ok = path == "oci-layout"
            || path == "index.json"
            || path
                .strip_prefix("blobs/sha256/")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok || !kind.is_file() {
            return Err(internal(format!(
                "unexpected entry {:?} in the installer tarball",
                clip(path)
            )));
        }
        let mut out = std::fs::File::create(dir.join(path)).map_err(internal)?;
        std::io::copy(&mut e, &mut out).map_err(internal)?;
    }
    Ok(())
}

/// Builds and pushes the index of `n`:`version` (see the module's description).
fn build(
    f: &Arc<Factory>,
    n: &InstallerName,
    version: &str,
    r: &Reference,
    insecure: bool,
) -> Result<Manifest, FactoryError> {
    // another request (or instance) may have finished it meanwhile
    if let Some(m) = lookup(f, r, insecure)? {
        return Ok(m);
    }
    let mut descs = Vec::new();
    let work = f.work().join("installers").join(format!(
        "{}-{}-{}",
        n.schematic,
        std::process::id(),
        descs_seq()
    ));
    let _ = std::fs::remove_dir_all(&work);
    let res = (|| {
        for arch in archs(f, version)? {
            let asset = format!(
                "{}-installer-{arch}{}.tar",
                n.platform,
                if n.secureboot { "-secureboot" } else { "" }
            );
            let entry = f.asset(&n.schematic, version, &asset)?;
            let dir = work.join(arch);
            std::fs::create_dir_all(&dir).map_err(internal)?;
            let tar_path = work.join(format!("{arch}.tar"));
            let mut out = std::fs::File::create(&tar_path).map_err(internal)?;
            let mut rd = f.store().open(&entry).map_err(unavailable)?;
            std::io::copy(&mut rd, &mut out).map_err(unavailable)?;
            unpack(&tar_path, &dir)?;
            let img = oci::layout::read_layout(&dir, arch).map_err(internal)?;
            let d = f
                .store()
                .fetcher()
                .push(
                    &r.with_digest(img.descriptor.digest.clone()),
                    insecure,
                    &img,
                )
                .map_err(|e| unavailable(format!("{e:#}")))?;
            descs.push(Descriptor {
                media_type: img.descriptor.media_type.clone(),
                digest: d,
                size: img.manifest.len() as u64,
                platform: Some(Platform {
                    architecture: arch.to_string(),
                    os: "linux".into(),
                    variant: None,
                }),
                annotations: Default::default(),
            });
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descs,
            "annotations": {crate::store::KEY_ANNOTATION: r.to_string()},
        }))
        .map_err(internal)?;
        let files = oci::layout::ImageFiles {
            descriptor: Descriptor {
                media_type: OCI_INDEX.into(),
                digest: Digest::of(&index),
                size: index.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            manifest: index.clone(),
            blobs: Default::default(),
        };
        let pushed = f
            .store()
            .push_signed(r, insecure, &files, true)
            .map_err(unavailable)?;
        let d = pushed
            .digest
            .clone()
            .unwrap_or_else(|| files.descriptor.digest.clone());
        crate::log::info("installer index pushed", &[("ref", &format!("{r}@{d}"))]);
        Ok(Manifest {
            bytes: index,
            media_type: OCI_INDEX.into(),
            digest: d,
        })
    })();
    let _ = std::fs::remove_dir_all(&work);
    res
}

fn descs_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The manifest of `name` at `reference` (a version tag, or a digest).
pub fn manifest(f: &Arc<Factory>, name: &str, reference: &str) -> Result<Manifest, FactoryError> {
    let n = parse_name(name).ok_or_else(|| {
        FactoryError::NotFound(format!("repository {:?} is not served here", clip(name)))
    })?;
    f.schematic(&n.schematic)?;
    let (repo, insecure) = internal_repo(f, &n)?;
    if let Ok(d) = Digest::parse(reference) {
        let client = f.store().fetcher().client();
        return match client.resolve(&repo.with_digest(d.clone()), insecure) {
            Ok(t) => Ok(Manifest {
                bytes: t.bytes,
                media_type: t.media_type,
                digest: t.digest,
            }),
            Err(e) if e.is_absent() => Err(FactoryError::NotFound(format!("manifest {d} unknown"))),
            Err(e) => Err(unavailable(e)),
        };
    }
    f.check_version(reference)?;
    let r = repo.with_tag(reference);
    if let Some(m) = lookup(f, &r, insecure)? {
        return Ok(m);
    }
    let key = r.to_string();
    let version = reference.to_string();
    f.single_flight(
        |f| &f.installer_flights,
        &key,
        &key,
        move |me| build(me, &n, &version, &r, insecure),
    )
}

/// A blob of `name`, streamed from the internal repository.
pub fn blob(
    f: &Arc<Factory>,
    name: &str,
    digest: &str,
) -> Result<(u64, oci::client::BlobReader), FactoryError> {
    let n = parse_name(name).ok_or_else(|| {
        FactoryError::NotFound(format!("repository {:?} is not served here", clip(name)))
    })?;
    let d = Digest::parse(digest).map_err(|e| FactoryError::BadRequest(e.to_string()))?;
    let (repo, insecure) = internal_repo(f, &n)?;
    f.store()
        .fetcher()
        .client()
        .open_blob_by_digest(&repo, insecure, &d, MAX_BLOB)
        .map_err(|e| {
            if e.is_absent() {
                FactoryError::NotFound(format!("blob {d} unknown"))
            } else {
                unavailable(e)
            }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        let id = "a".repeat(64);
        let n = parse_name(&format!("metal-installer/{id}")).unwrap();
        assert_eq!((n.platform.as_str(), n.secureboot), ("metal", false));
        let n = parse_name(&format!("digital-ocean-installer-secureboot/{id}")).unwrap();
        assert_eq!((n.platform.as_str(), n.secureboot), ("digital-ocean", true));
        let n = parse_name(&format!("installer/{id}")).unwrap();
        assert_eq!(
            (n.platform.as_str(), n.component.as_str()),
            ("metal", "installer")
        );
        assert!(parse_name(&format!("siderolabs/installer/{id}")).is_none());
        assert!(parse_name("metal/abc").is_none());
        assert!(parse_name(&format!("-installer/{id}")).is_none());
    }
}
