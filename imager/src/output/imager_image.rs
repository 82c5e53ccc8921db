//! The imager's own container image (`imager self-image`, docs/formats/imager-image.md):
//! this (static) imager binary at `/usr/bin/imager` and the install directory's
//! `<arch>/…` at `/usr/install/<arch>/`, `FROM scratch`, written with our own OCI writer so
//! that the same binary, assets and SOURCE_DATE_EPOCH always give the same index digest.
//!
//! In: the binary, the install directory, the architectures, the epoch. Out: an OCI layout
//! directory `imager-image/` whose `index.json` is a multi-platform image index (one manifest
//! per architecture), the same image as `imager-image.tar` (an OCI layout archive that is
//! also a `docker load`/`podman load` archive), optionally pushed (the platform manifests by
//! digest, then the index under the tag) and cosign-signed.

use super::{Artifact, Writer};
use crate::error::{Error, ExitCode, Result, WithCode};
use oci::types::{Descriptor, ImageConfig, Manifest, OCI_CONFIG, OCI_MANIFEST, RootFs};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most files taken from the install directory (a bound on a directory walk).
const MAX_ASSET_FILES: usize = 10_000;
/// Deepest directory nesting taken from the install directory.
const MAX_DEPTH: usize = 8;

/// One architecture's image: the binary and its assets.
#[derive(Debug, Clone)]
pub struct Platform {
    /// `amd64` or `arm64`.
    pub arch: String,
    /// A statically linked imager for `arch`.
    pub binary: PathBuf,
    /// `<install-dir>/<arch>`.
    pub assets: PathBuf,
}

/// Refuses a binary that needs a dynamic loader (the image has no libc) or is not ELF.
pub fn check_static(binary: &Path) -> Result<()> {
    check_static_as(binary, &format!("imager binary {}", binary.display()), None)
}

/// [`check_static`] naming the binary `what` in errors; with `machine`, the ELF `e_machine`
/// must be that one (62 x86-64, 183 AArch64).
pub fn check_static_as(binary: &Path, what: &str, machine: Option<u16>) -> Result<()> {
    let what = what.to_string();
    let f = crate::io::open_regular(binary, &what, ExitCode::Io)?;
    let mut head = Vec::new();
    f.take(64 * 1024)
        .read_to_end(&mut head)
        .code(ExitCode::Io, || format!("reading {what}"))?;
    let bad = |why: &str| Error::invalid(format!("{what}: {why}"));
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF executable"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    if let Some(m) = machine.filter(|m| u16_at(18) != usize::from(*m)) {
        return Err(bad(&format!(
            "built for ELF machine {}, and this host runs {m}",
            u16_at(18)
        )));
    }
    let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(ph) = head.get(o..o.saturating_add(4)) else {
            return Err(bad("program headers beyond the first 64 KiB"));
        };
        // PT_INTERP: the kernel would need a dynamic loader the image does not have
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            return Err(bad(
                "dynamically linked (it names an interpreter), and where it runs (the imager \
                 image FROM scratch, an overlay's sandbox) there is no dynamic loader: it must \
                 be statically linked",
            ));
        }
    }
    Ok(())
}

/// Every regular file under `root` (sorted, relative paths), and every directory.
fn walk(root: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let mut names: Vec<(String, std::fs::FileType)> = Vec::new();
        for e in
            std::fs::read_dir(&dir).code(ExitCode::Io, || format!("reading {}", dir.display()))?
        {
            let e = e.code(ExitCode::Io, || format!("reading {}", dir.display()))?;
            let name = e.file_name().into_string().map_err(|n| {
                Error::invalid(format!(
                    "{}: a file name is not UTF-8: {n:?}",
                    dir.display()
                ))
            })?;
            let t = e
                .file_type()
                .code(ExitCode::Io, || format!("stat {}", e.path().display()))?;
            names.push((name, t));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in names {
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if t.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(Error::invalid(format!(
                        "{}: nested deeper than {MAX_DEPTH} directories",
                        root.join(&r).display()
                    )));
                }
                dirs.push(r.clone());
                stack.push((dir.join(&name), r, depth + 1));
            } else if t.is_file() {
                files.push(r);
            } else {
                return Err(Error::invalid(format!(
                    "{}: only regular files and directories go into the image",
                    root.join(&r).display()
                )));
            }
            if files.len() + dirs.len() > MAX_ASSET_FILES {
                return Err(Error::invalid(format!(
                    "{}: more than {MAX_ASSET_FILES} entries",
                    root.display()
                )));
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

fn layer(
    w: &Writer,
    work: &Path,
    name: &str,
    dirs: &[(String, u32)],
    files: &[oci::layout::LayerFile],
) -> Result<(oci::layout::Layer, PathBuf)> {
    let path = work.join(name);
    let mut f = std::fs::File::create(&path)
        .code(ExitCode::Io, || format!("creating {}", path.display()))?;
    let epoch = u64::try_from(w.epoch).unwrap_or(0);
    let l = oci::layout::write_layer_with_dirs(&mut f, dirs, files, epoch, 6).map_err(|e| {
        Error::new(
            ExitCode::Io,
            anyhow::anyhow!("writing the {name} layer: {e}"),
        )
    })?;
    Ok((l, path))
}

fn json_blob(work: &Path, name: &str, v: &impl serde::Serialize) -> Result<(Vec<u8>, PathBuf)> {
    let bytes = serde_json::to_vec(v)
        .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("{name}: {e}")))?;
    let path = work.join(name);
    std::fs::write(&path, &bytes).code(ExitCode::Io, || format!("writing {}", path.display()))?;
    Ok((bytes, path))
}

/// Assembles one platform's image in `work`.
fn platform_image(w: &Writer, work: &Path, p: &Platform) -> Result<oci::layout::ImageFiles> {
    check_static(&p.binary)?;
    let arch = &p.arch;
    let work = work.join(arch);
    std::fs::create_dir_all(&work).code(ExitCode::Io, || format!("creating {}", work.display()))?;
    // layer 1: the binary, and the writable places a non-root user may need
    let base_dirs: Vec<(String, u32)> = [
        ("out", 0o1777),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
    ]
    .map(|(d, m)| (d.to_string(), m))
    .to_vec();
    let bin = [oci::layout::LayerFile {
        path: "usr/bin/imager".into(),
        mode: 0o755,
        source: p.binary.clone(),
    }];
    let (l1, l1_path) = layer(w, &work, "binary", &base_dirs, &bin)?;
    // layer 2: the install directory
    if !p.assets.is_dir() {
        return Err(Error::new(
            ExitCode::Io,
            anyhow::anyhow!(
                "{}: no such directory (the install directory's {arch}/)",
                p.assets.display()
            ),
        ));
    }
    let (files, dirs) = walk(&p.assets)?;
    let prefix = format!("usr/install/{arch}");
    let mut asset_dirs: Vec<(String, u32)> =
        vec![("usr/install".into(), 0o755), (prefix.clone(), 0o755)];
    asset_dirs.extend(dirs.iter().map(|d| (format!("{prefix}/{d}"), 0o755)));
    let asset_files: Vec<oci::layout::LayerFile> = files
        .iter()
        .map(|f| oci::layout::LayerFile {
            path: format!("{prefix}/{f}"),
            mode: 0o644,
            source: p.assets.join(f),
        })
        .collect();
    let (l2, l2_path) = layer(w, &work, "assets", &asset_dirs, &asset_files)?;
    let created = civil::rfc3339(w.epoch);
    let config = ImageConfig {
        architecture: arch.clone(),
        os: "linux".into(),
        created: Some(created.clone()),
        config: serde_json::json!({
            "Entrypoint": ["/usr/bin/imager"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/out",
            "Labels": {
                "org.opencontainers.image.title": "imager",
                "org.opencontainers.image.version": env!("CARGO_PKG_VERSION"),
            },
        }),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![l1.diff_id.to_string(), l2.diff_id.to_string()],
        },
        history: vec![
            serde_json::json!({"created": created, "created_by": "imager self-image: /usr/bin/imager"}),
            serde_json::json!({"created": created, "created_by": format!("imager self-image: /usr/install/{arch}")}),
        ],
    };
    let (config_bytes, config_path) = json_blob(&work, "config", &config)?;
    let config_desc = Descriptor::of(OCI_CONFIG, &config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: config_desc.clone(),
        layers: vec![l1.descriptor.clone(), l2.descriptor.clone()],
        annotations: BTreeMap::new(),
    };
    let (manifest_bytes, _) = json_blob(&work, "manifest", &manifest)?;
    let mut blobs = BTreeMap::new();
    blobs.insert(config_desc.digest, config_path);
    blobs.insert(l1.descriptor.digest, l1_path);
    blobs.insert(l2.descriptor.digest, l2_path);
    Ok(oci::layout::ImageFiles {
        descriptor: Descriptor::linux_manifest(
            &manifest_bytes,
            arch,
            (arch == "arm64").then_some("v8"),
        ),
        manifest: manifest_bytes,
        blobs,
    })
}

/// The assembled image: one manifest per platform and the index listing them.
#[derive(Debug)]
pub struct ImagerImage {
    /// Per-platform images.
    pub images: Vec<oci::layout::ImageFiles>,
    /// The image index (`index.json`'s bytes; its digest is the image's).
    pub index: Vec<u8>,
}

/// Assembles the image for `platforms` in `w`'s private directory.
pub fn assemble(w: &Writer, platforms: &[Platform]) -> Result<ImagerImage> {
    let work = w.tmp.join("imager-image");
    std::fs::create_dir_all(&work).code(ExitCode::Io, || format!("creating {}", work.display()))?;
    let images = platforms
        .iter()
        .map(|p| platform_image(w, &work, p))
        .collect::<Result<Vec<_>>>()?;
    let descs: Vec<Descriptor> = images.iter().map(|i| i.descriptor.clone()).collect();
    let index = oci::layout::index_json(&descs)
        .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("index: {e}")))?;
    Ok(ImagerImage { images, index })
}

/// Writes `imager-image/` (the multi-platform layout) and `imager-image.tar` (the first
/// platform's image as an OCI/docker archive tagged `tag`).
pub fn write(w: &Writer, img: &ImagerImage, tag: &str) -> Result<Vec<Artifact>> {
    let epoch = u64::try_from(w.epoch).unwrap_or(0);
    let first = img
        .images
        .first()
        .ok_or_else(|| Error::invalid("self-image: no platform"))?;
    // podman/docker name the loaded image after the ref.name annotation (OCI archive) or
    // the tag (docker archive)
    let mut named = first.clone();
    named.descriptor.annotations.insert(
        "org.opencontainers.image.ref.name".to_string(),
        tag.to_string(),
    );
    let tar = w.file(
        "imager-image",
        "imager-image.tar",
        crate::profile::OutFormat::Raw,
        |f| {
            oci::layout::write_archive(f, &named, &[tag.to_string()], epoch).map_err(|e| {
                Error::new(
                    ExitCode::Io,
                    anyhow::anyhow!("writing imager-image.tar: {e}"),
                )
            })
        },
    )?;
    let dir = w.dir("imager-image", |tmp| {
        oci::layout::write_layout(tmp, &img.images)
            .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("writing imager-image/: {e}")))
    })?;
    let digest = oci::Digest::of(&img.index);
    Ok(vec![
        tar,
        Artifact {
            kind: "oci-layout",
            path: dir,
            size: img.index.len() as u64,
            sha256: Some(digest.hex().to_string()),
        },
    ])
}
