//! The base installer image (`input.baseInstaller`): from a registry or an OCI layout, its
//! manifest and config, and its `usr/install/` tree (the boot assets) extracted with the same
//! hostile-archive rules as extensions (docs/formats/outputs.md, installer image).

use super::registry::{Fetcher, image_files, oci_err};
use crate::error::{Error, ExitCode, Result, WithCode};
use crate::profile::ContainerAsset;
use std::path::{Path, PathBuf};

/// A base image: its files and parsed manifest/config, from a registry or an OCI layout.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Files.
    pub files: oci::layout::ImageFiles,
    /// Manifest.
    pub manifest: oci::types::Manifest,
    /// Config JSON.
    pub config: oci::types::ImageConfig,
    /// Where it came from (for messages).
    pub source: String,
}

/// Loads `input.baseInstaller` (`imageRef` via the registry, or `ociPath`); `tarballPath` is
/// refused, as in Talos (a plain tar cannot be pulled).
pub fn base_image(f: Option<&Fetcher>, a: &ContainerAsset, arch: &str) -> Result<BaseImage> {
    let field = "input.baseInstaller";
    let (files, source) = if !a.oci_path.is_empty() {
        let files = oci::layout::read_layout(Path::new(&a.oci_path), arch)
            .map_err(|e| oci_err(&format!("{field}.ociPath {}", a.oci_path), e))?;
        (files, a.oci_path.clone())
    } else if !a.tarball_path.is_empty() {
        return Err(Error::invalid(format!(
            "{field}.tarballPath: a plain tarball cannot serve as the base installer; give imageRef or ociPath"
        )));
    } else {
        let f = super::registry::required(f)?;
        let img = f.pull(field, &a.image_ref, a.force_insecure, arch)?;
        (image_files(&img), a.image_ref.clone())
    };
    let manifest =
        match oci::types::parse_document(&files.manifest, &files.descriptor.media_type, &source)
            .map_err(|e| oci_err(field, e))?
        {
            oci::types::Document::Manifest(m) => m,
            oci::types::Document::Index(_) => {
                return Err(Error::invalid(format!(
                    "{field} {source}: expected an image manifest"
                )));
            }
        };
    let cpath = files
        .blobs
        .get(&manifest.config.digest)
        .ok_or_else(|| Error::invalid(format!("{field} {source}: config blob missing")))?;
    let cbytes = std::fs::read(cpath).code(ExitCode::Io, || format!("{field} {source}: config"))?;
    let config: oci::types::ImageConfig = serde_json::from_slice(&cbytes)
        .map_err(|e| Error::invalid(format!("{field} {source}: config: {e}")))?;
    Ok(BaseImage {
        files,
        manifest,
        config,
        source,
    })
}

/// Extracts `usr/install/` of the base image (layers flattened, whiteouts applied, hostile
/// entries refused) under `staging`; returns the directory that replaces `/usr/install`.
pub fn extract_install_dir(base: &BaseImage, staging: &Path, max_bytes: u64) -> Result<PathBuf> {
    let field = format!("input.baseInstaller {}", base.source);
    let blobs = staging.join("blobs");
    std::fs::create_dir_all(&blobs)
        .code(ExitCode::Io, || format!("creating {}", blobs.display()))?;
    let mut t =
        super::tree::Tree::new(&blobs, max_bytes).map_err(|e| Error::from_tree(&field, e))?;
    let cap = max_bytes.saturating_add(256 << 20);
    for (i, l) in base.manifest.layers.iter().enumerate() {
        let p = base
            .files
            .blobs
            .get(&l.digest)
            .ok_or_else(|| Error::invalid(format!("{field}: layer {} missing", l.digest)))?;
        let r = crate::io::open_decompressed(p, cap, &format!("{field}: layer {}", l.digest))?;
        t.apply_tar(r, i, true)
            .map_err(|e| Error::from_tree(&format!("{field}: layer {}", l.digest), e))?;
    }
    let root = staging.join("root");
    let install = root.join("usr/install");
    let mut n = 0;
    for (rel, node) in t.under("usr/install") {
        let dst = install.join(rel);
        match &node.kind {
            super::tree::Kind::Dir => {
                std::fs::create_dir_all(&dst)
                    .code(ExitCode::Io, || format!("creating {}", dst.display()))?;
            }
            super::tree::Kind::File { blob, size } => {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .code(ExitCode::Io, || format!("creating {}", parent.display()))?;
                }
                // empty files share one blob: each gets a file of its own
                let placed = if *size == 0 {
                    std::fs::File::create(&dst).map(drop)
                } else {
                    std::fs::rename(blob, &dst)
                };
                placed.code(ExitCode::Io, || format!("placing {}", dst.display()))?;
                n += 1;
            }
            // asset paths are plain files in Talos images; links are not followed
            _ => {}
        }
    }
    if n == 0 {
        return Err(Error::invalid(format!(
            "{field}: the image has no files under /usr/install"
        )));
    }
    split_ukis(&install, &field)?;
    Ok(install)
}

/// Bound on a UKI read to take its kernel and initramfs out.
const MAX_UKI: u64 = 1 << 30;

/// An installer image (rather than an installer-base) carries the UKI `<arch>/vmlinuz.efi`
/// where a base has `vmlinuz` and `initramfs.xz`: those are taken out of its `.linux` and
/// `.initrd` sections, so that any installer image serves as a base (docs/formats/outputs.md,
/// "Installer image").
fn split_ukis(install: &Path, field: &str) -> Result<()> {
    for arch in ["amd64", "arm64"] {
        let dir = install.join(arch);
        let uki = dir.join("vmlinuz.efi");
        if !uki.is_file() || dir.join("vmlinuz").exists() || dir.join("initramfs.xz").exists() {
            continue;
        }
        let what = format!("{field}: usr/install/{arch}/vmlinuz.efi");
        let data = crate::io::read_bytes(&uki, MAX_UKI, &what, ExitCode::InvalidInput)?;
        let pe = pe::Pe::parse(&data).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
        for (section, file) in [(".linux", "vmlinuz"), (".initrd", "initramfs.xz")] {
            let s = pe
                .section(section)
                .ok_or_else(|| Error::invalid(format!("{what}: no {section} section")))?;
            let data = pe.section_data(s);
            if data.is_empty() {
                return Err(Error::invalid(format!(
                    "{what}: its {section} section is empty or outside the file"
                )));
            }
            let out = dir.join(file);
            std::fs::write(&out, data)
                .code(ExitCode::Io, || format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}
