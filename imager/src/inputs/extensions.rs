//! System extension inputs (docs/formats/extensions.md): OCI layouts (`ociPath`, or pulled
//! `imageRef`s written as layouts into staging), tarballs (`tarballPath`) and the embedded
//! machine configuration → flattened, validated trees with their manifests.
//!
//! Every archive is hostile: it is applied to an in-memory [`Tree`] whose file contents go
//! only to numbered blobs in the build's staging directory (see `tree`).

use super::tree::{self, Kind, Tree};
use crate::error::{Error, ExitCode, Result, WithCode};
use crate::io::open_decompressed;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Default bound on the file contents of one extension image (16 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// Paths an extension may contain when content validation is on (docs/formats/extensions.md, `AllowedPaths`).
const ALLOWED_PATHS: &[&str] = &[
    "/etc/cri/conf.d",
    "/usr/lib/firmware",
    "/usr/lib/modules",
    "/usr/lib/ld-linux-x86-64.so.2",
    "/usr/lib/ld-linux-aarch64.so.1",
    "/usr/bin/ldconfig",
    "/etc/ld.so.conf",
    "/etc/ld.so.cache",
    "/usr/bin/nvidia-modprobe",
    "/usr/bin/nvidia-pcc",
    "/usr/bin/nvidia-smi",
    "/usr/bin/nvidia-ctk",
    "/usr/bin/nvidia-cdi-hook",
    "/usr/bin/nvme",
    "/usr/lib/udev/rules.d",
    "/usr/local",
    "/usr/share/glvnd",
    "/usr/share/egl",
    "/etc/vulkan",
];

/// SELinux label of the embedded machine configuration (docs/formats/extensions.md).
const EMBEDDED_CONFIG_LABEL: &str = "system_u:object_r:system_state_t:s0";

/// How extensions are checked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Content validation (docs/formats/extensions.md) (allowed paths, no world-writable files).
    pub validate_contents: bool,
    /// Extensions (by manifest name) allowed to carry setuid/setgid files.
    pub allow_setuid: Vec<String>,
    /// Bound on the file contents of one extension image.
    pub max_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            validate_contents: false,
            allow_setuid: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// An extension, flattened and validated.
#[derive(Debug)]
pub struct Extension {
    /// Staging directory name (`0`, `1`, …, `modules.dep`): the squashfs is `<dir>.sqsh`.
    pub dir: String,
    /// What the user gave (for messages).
    pub source: String,
    /// The manifest.
    pub manifest: sysext::Manifest,
    /// The image tree (`manifest.yaml` and `rootfs/…`).
    pub tree: Tree,
}

/// Where one extension's bytes are, once pulled.
#[derive(Debug, Clone)]
pub enum Archive {
    /// A plain filesystem tarball, optionally gzip/zstd/xz.
    Tarball(PathBuf),
    /// An OCI image layout directory.
    Layout(PathBuf),
}

/// One extension input: its archive and how to name it in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// `input.systemExtensions[i] (tarballPath …|ociPath …|imageRef …)`.
    pub label: String,
    /// The archive.
    pub archive: Archive,
}

fn invalid(source: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{source}: {msg}"))
}

fn tree_err(source: &str, e: tree::TreeError) -> Error {
    Error::from_tree(source, e)
}

/// Flattens one input into a tree under `staging`.
pub(crate) fn extract(src: &Source, arch: &str, staging: &Path, opts: &Options) -> Result<Tree> {
    let source = src.label.as_str();
    let cap = opts.max_bytes.saturating_add(256 << 20);
    let mut t = Tree::new(staging, opts.max_bytes).map_err(|e| tree_err(source, e))?;
    match &src.archive {
        Archive::Tarball(p) => {
            let r = open_decompressed(p, cap, source)?;
            t.apply_tar(r, 0, false).map_err(|e| tree_err(source, e))?;
        }
        Archive::Layout(root) => {
            // the layout is user input: whatever is wrong with it is invalid input
            let files = oci::layout::read_layout(root, arch).map_err(|e| invalid(source, e))?;
            for (i, (digest, path)) in layers(&files, source)?.iter().enumerate() {
                let what = format!("{source}: layer {digest}");
                let r = open_decompressed(path, cap, &what)?;
                t.apply_tar(r, i, true).map_err(|e| tree_err(&what, e))?;
            }
        }
    }
    Ok(t)
}

/// The layer blobs of an image read from a layout (every blob already checked against its
/// descriptor), in order; anything but a layer media type is refused.
fn layers(files: &oci::layout::ImageFiles, source: &str) -> Result<Vec<(oci::Digest, PathBuf)>> {
    let m =
        match oci::types::parse_document(&files.manifest, &files.descriptor.media_type, "manifest")
            .map_err(|e| invalid(source, e))?
        {
            oci::types::Document::Manifest(m) => m,
            oci::types::Document::Index(_) => {
                return Err(invalid(source, "expected an image manifest"));
            }
        };
    m.layers
        .iter()
        .map(|d| {
            if !d.media_type.is_empty()
                && !d.media_type.contains("layer")
                && !d.media_type.contains("rootfs.diff")
            {
                return Err(invalid(
                    source,
                    format!(
                        "layer {}: unexpected media type {:?}",
                        d.digest, d.media_type
                    ),
                ));
            }
            let path = files
                .blobs
                .get(&d.digest)
                .ok_or_else(|| invalid(source, format!("layer {}: blob missing", d.digest)))?;
            Ok((d.digest.clone(), path.clone()))
        })
        .collect()
}

/// Checks the top-level layout and reads the manifest (Talos `Load`).
fn load_manifest(t: &Tree, source: &str) -> Result<sysext::Manifest> {
    let mut manifest = None;
    let mut rootfs = false;
    for (k, n) in t.entries() {
        if k.contains('/') {
            continue;
        }
        match (k.as_str(), &n.kind) {
            ("manifest.yaml", Kind::File { blob, size }) => {
                if *size > 1 << 20 {
                    return Err(invalid(source, "manifest.yaml is larger than 1 MiB"));
                }
                let text = std::fs::read(blob).code(ExitCode::Io, || source.to_string())?;
                let text = String::from_utf8(text)
                    .map_err(|_| invalid(source, "manifest.yaml is not UTF-8"))?;
                manifest = Some(
                    sysext::Manifest::parse(&text)
                        .map_err(|e| invalid(source, format!("manifest.yaml: {e}")))?,
                );
            }
            ("manifest.yaml", _) => {
                return Err(invalid(source, "manifest.yaml is not a regular file"));
            }
            ("rootfs", Kind::Dir) => rootfs = true,
            ("rootfs", _) => return Err(invalid(source, "rootfs is not a directory")),
            (other, _) => {
                return Err(invalid(
                    source,
                    format!(
                        "unexpected file {other:?} at the top level (an extension holds exactly \
                         manifest.yaml and rootfs/)"
                    ),
                ));
            }
        }
    }
    let m = manifest.ok_or_else(|| invalid(source, "extension manifest is missing"))?;
    if !rootfs {
        return Err(invalid(source, "extension rootfs is missing"));
    }
    Ok(m)
}

/// Setuid/setgid bits and (optionally) the content rules of docs/formats/extensions.md.
fn check_contents(e: &Extension, opts: &Options) -> Result<()> {
    let name = &e.manifest.metadata.name;
    for (rel, n) in e.tree.under("rootfs") {
        let shown = format!("/{rel}");
        if n.mode & 0o6000 != 0
            && !matches!(n.kind, Kind::Symlink(_))
            && !opts.allow_setuid.iter().any(|a| a == name)
        {
            return Err(invalid(
                &e.source,
                format!(
                    "rootfs{shown}: setuid/setgid bits (mode {:04o}) are not allowed \
                     (--extension-allow-setuid {name} allows them)",
                    n.mode
                ),
            ));
        }
        if !opts.validate_contents {
            continue;
        }
        if n.mode & 0o002 != 0 && !matches!(n.kind, Kind::Symlink(_)) {
            return Err(invalid(
                &e.source,
                format!("world-writeable files are not allowed: {shown:?}"),
            ));
        }
        if n.kind != Kind::Dir && !ALLOWED_PATHS.iter().any(|a| shown.starts_with(a)) {
            return Err(invalid(
                &e.source,
                format!("path {shown:?} is not allowed in extensions"),
            ));
        }
    }
    Ok(())
}

/// The virtual `embedded-config` extension (docs/formats/extensions.md).
fn embedded_config_tree(config: &str, staging: &Path, opts: &Options) -> Result<Tree> {
    let mut t = Tree::new(staging, opts.max_bytes)
        .map_err(|e| tree_err("customization.embeddedMachineConfiguration", e))?;
    let digest = hex::encode(Sha256::digest(config.as_bytes()));
    let manifest = sysext::Manifest {
        version: sysext::MANIFEST_VERSION.into(),
        metadata: sysext::Metadata {
            name: "embedded-config".into(),
            version: digest,
            author: "Imager".into(),
            description: "Virtual extension which embeds the machine configuration.".into(),
            compatibility: sysext::Compatibility {
                talos: sysext::Constraint {
                    version: ">= 1.0.0".into(),
                },
            },
            extra_info: String::new(),
        },
    };
    let text = serde_saphyr::to_string(&manifest)
        .map_err(|e| Error::new(ExitCode::Assembly, anyhow::anyhow!("embedded config: {e}")))?;
    let err = |e| tree_err("customization.embeddedMachineConfiguration", e);
    let (blob, size) = t.blob(text.as_bytes(), "manifest.yaml").map_err(err)?;
    t.insert("manifest.yaml", Kind::File { blob, size }, 0o644, None);
    for d in [
        "rootfs",
        "rootfs/usr",
        "rootfs/usr/local",
        "rootfs/usr/local/etc",
        "rootfs/usr/local/etc/talos",
    ] {
        t.insert(d, Kind::Dir, 0o755, None);
    }
    let (blob, size) = t.blob(config.as_bytes(), "config.yaml").map_err(err)?;
    t.insert(
        "rootfs/usr/local/etc/talos/config.yaml",
        Kind::File { blob, size },
        0o400,
        Some(EMBEDDED_CONFIG_LABEL.as_bytes().to_vec()),
    );
    Ok(t)
}

/// Loads, flattens and validates every extension (plus the embedded config), in Talos's
/// order: staging directories `0, 1, …` listed in string order. `version` is the profile's
/// Talos version (compatibility checks).
pub fn load(
    sources: &[Source],
    embedded_config: &str,
    arch: &str,
    version: &str,
    staging: &Path,
    opts: &Options,
) -> Result<Vec<Extension>> {
    let mut exts = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let tree = extract(src, arch, &staging.join(format!("blobs-{i}")), opts)?;
        let source = src.label.clone();
        let manifest = load_manifest(&tree, &source)?;
        manifest.check_compatibility(version).map_err(|e| {
            invalid(
                &source,
                format!("extension {:?}: {e}", manifest.metadata.name),
            )
        })?;
        let e = Extension {
            dir: i.to_string(),
            source,
            manifest,
            tree,
        };
        check_contents(&e, opts)?;
        exts.push(e);
    }
    if !embedded_config.is_empty() {
        let i = exts.len();
        let source = "customization.embeddedMachineConfiguration".to_string();
        let tree =
            embedded_config_tree(embedded_config, &staging.join(format!("blobs-{i}")), opts)?;
        let manifest = load_manifest(&tree, &source)?;
        exts.push(Extension {
            dir: i.to_string(),
            source,
            manifest,
            tree,
        });
    }
    exts.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(exts)
}
