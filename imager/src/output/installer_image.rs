//! The `installer` output kind (docs/formats/outputs.md "Installer OCI image").
//!
//! In: the base installer image (registry or OCI layout), the boot assets of this build
//! (kernel, the possibly rebuilt initramfs, systemd-boot) and SOURCE_DATE_EPOCH. Out:
//! `installer-<arch>.tar` (an archive that is both a `docker save` tarball tagged with the base
//! installer's reference and an OCI layout archive) and the same image as an OCI layout
//! directory `installer-<arch>/`; optionally pushed (`--push REF`) and cosign-signed.
//!
//! Steps, as Talos: keep only the first layer of a two-layer base (the second is the old
//! artifacts layer); a new OCI config with `architecture`, `os` and the base's runtime
//! `config`; the base layers, then one gzip artifacts layer whose tar headers carry only name,
//! mode and size (uid/gid 0, mtime 0, mode 0: Talos's `filemap`). Unlike Talos, `created` is
//! SOURCE_DATE_EPOCH, so two builds give the same manifest digest. The artifacts layer carries
//! `usr/install/<arch>/{vmlinuz.efi,systemd-boot.efi}` (a UKI, [`super::uki`]) from Talos 1.10
//! on, and `usr/install/<arch>/{vmlinuz,initramfs.xz,systemd-boot.efi,version}` before (the
//! `version` file is this project's: the installer reads the target version from it).

use super::{Artifact, Writer};
use crate::error::{Error, ExitCode, Result, WithCode};
use crate::inputs::base::BaseImage;
use crate::profile::Profile;
use oci::types::{
    Descriptor, ImageConfig, Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RootFs,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Docker's gzip layer type, rewritten to its OCI equivalent (same bytes).
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The assembled image (files in the output dir's staging and the cache).
#[derive(Debug)]
pub struct Assembled {
    /// Manifest descriptor, bytes and blobs.
    pub files: oci::layout::ImageFiles,
    /// Holds the artifacts layer and the config until written.
    _work: tempfile::TempDir,
}

/// Assembles the installer image.
pub fn assemble(
    p: &Profile,
    w: &Writer,
    base: &BaseImage,
    boot: &super::efi::EfiInputs<'_>,
    cmdline: &str,
    overlay: Option<&crate::inputs::overlay::Overlay>,
) -> Result<Assembled> {
    let what = format!("input.baseInstaller {}", base.source);
    let mut layers = base.manifest.layers.clone();
    if layers.len() == 2 {
        layers.truncate(1);
    }
    let diff_ids = &base.config.rootfs.diff_ids;
    if diff_ids.len() != base.manifest.layers.len() {
        return Err(Error::invalid(format!(
            "{what}: the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            base.manifest.layers.len()
        )));
    }
    let mut diff_ids: Vec<String> = diff_ids[..layers.len()].to_vec();
    for l in &mut layers {
        if l.media_type == DOCKER_LAYER_GZIP {
            l.media_type = OCI_LAYER_GZIP.into();
        }
        l.annotations.clear();
    }
    let work = tempfile::Builder::new()
        .prefix(".installer.")
        .tempdir_in(&w.tmp)
        .code(ExitCode::Io, || "creating the artifacts layer".to_string())?;
    let arch = &p.arch;
    let set = super::efi::prepare(p, cmdline, boot, work.path(), w.epoch)?;
    let mut sources: Vec<(&str, PathBuf)> = Vec::new();
    match &set.uki {
        Some(uki) => sources.push(("vmlinuz.efi", uki.clone())),
        None => {
            sources.push(("vmlinuz", boot.kernel.to_path_buf()));
            sources.push(("initramfs.xz", boot.initramfs.to_path_buf()));
            // without a UKI (whose .osrel says it), the installer learns the version here
            // (docs/formats/install.md)
            let v = work.path().join("version");
            std::fs::write(&v, format!("{}\n", p.version))
                .code(ExitCode::Io, || "writing the version file".to_string())?;
            sources.push(("version", v));
        }
    }
    sources.push(("systemd-boot.efi", set.sd_boot.clone()));
    let files: Vec<oci::layout::LayerFile> = sources
        .into_iter()
        .map(|(name, src)| oci::layout::LayerFile {
            path: format!("usr/install/{arch}/{name}"),
            mode: 0,
            source: src,
        })
        .collect();
    let tmp_path = work.path().join("layer");
    let mut f = std::fs::File::create(&tmp_path)
        .code(ExitCode::Io, || "creating the artifacts layer".to_string())?;
    let layer = oci::layout::write_layer(&mut f, &files, 0, 1).map_err(|e| {
        Error::new(
            ExitCode::Io,
            anyhow::anyhow!("writing the artifacts layer: {e}"),
        )
    })?;
    drop(f);
    let base_layers = layers.len();
    diff_ids.push(layer.diff_id.to_string());
    layers.push(layer.descriptor.clone());
    let mut new_blobs = vec![(layer.descriptor.digest.clone(), tmp_path)];
    // the board overlay, as Talos bakes it: overlay/{artifacts/**, installers/default,
    // extra-options} (and overlay.yaml for a declarative one)
    if let Some(o) = overlay.filter(|o| !o.layer.is_empty()) {
        let opts_path = work.path().join("extra-options");
        let opts = serde_json::to_vec(&p.overlay.clone().unwrap_or_default().options)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("overlay.options: {e}")))?;
        std::fs::write(&opts_path, opts).code(ExitCode::Io, || "writing extra-options".into())?;
        let mut files: Vec<oci::layout::LayerFile> = o
            .layer
            .iter()
            .map(|(path, src, mode)| oci::layout::LayerFile {
                path: format!("overlay/{path}"),
                mode: *mode,
                source: src.clone(),
            })
            .collect();
        files.push(oci::layout::LayerFile {
            path: "overlay/extra-options".into(),
            mode: 0o644,
            source: opts_path,
        });
        let mut dirs: Vec<(String, u32)> = vec![("overlay".into(), 0o755)];
        dirs.extend(o.layer_dirs.iter().map(|d| (format!("overlay/{d}"), 0o755)));
        let path = work.path().join("overlay-layer");
        let mut f = std::fs::File::create(&path)
            .code(ExitCode::Io, || "creating the overlay layer".to_string())?;
        let l = oci::layout::write_layer_with_dirs(&mut f, &dirs, &files, 0, 1).map_err(|e| {
            Error::new(
                ExitCode::Io,
                anyhow::anyhow!("writing the overlay layer: {e}"),
            )
        })?;
        diff_ids.push(l.diff_id.to_string());
        layers.push(l.descriptor.clone());
        new_blobs.push((l.descriptor.digest.clone(), path));
    }
    let config = ImageConfig {
        architecture: arch.to_string(),
        os: "linux".into(),
        created: Some(civil::rfc3339(w.epoch)),
        config: base.config.config.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: Vec::new(),
    };
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("config: {e}")))?;
    let config_desc = Descriptor::of(OCI_CONFIG, &config_bytes);
    let config_path = work.path().join("config");
    std::fs::write(&config_path, &config_bytes).code(ExitCode::Io, || {
        format!("writing {}", config_path.display())
    })?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: config_desc.clone(),
        layers: layers.clone(),
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("manifest: {e}")))?;
    let mut blobs: BTreeMap<oci::Digest, PathBuf> = BTreeMap::new();
    for l in &base.manifest.layers[..base_layers] {
        let p = base
            .files
            .blobs
            .get(&l.digest)
            .ok_or_else(|| Error::invalid(format!("{what}: layer {} missing", l.digest)))?;
        blobs.insert(l.digest.clone(), p.clone());
    }
    blobs.extend(new_blobs);
    blobs.insert(config_desc.digest.clone(), config_path);
    let mut annotations = BTreeMap::new();
    if let Some(t) = base_tag(base) {
        annotations.insert("org.opencontainers.image.ref.name".to_string(), t);
    }
    Ok(Assembled {
        files: oci::layout::ImageFiles {
            descriptor: Descriptor {
                annotations,
                ..Descriptor::linux_manifest(&manifest_bytes, arch.as_str(), None)
            },
            manifest: manifest_bytes,
            blobs,
        },
        _work: work,
    })
}

fn base_tag(base: &BaseImage) -> Option<String> {
    oci::Reference::parse(&base.source)
        .ok()
        .map(|r| r.to_string())
}

/// Writes the tar and the layout directory; returns their artifacts.
pub fn write(p: &Profile, w: &Writer, base: &BaseImage, a: &Assembled) -> Result<Vec<Artifact>> {
    let name = p.output_name();
    let tags: Vec<String> = base_tag(base).into_iter().collect();
    let epoch = u64::try_from(w.epoch).unwrap_or(0);
    let tar = w.file("installer", &name, p.output.out_format, |f| {
        oci::layout::write_archive(f, &a.files, &tags, epoch)
            .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("writing {name}: {e}")))
    })?;
    // the layout directory: written aside, then renamed into place
    let dir_name = format!(
        "installer-{}{}",
        p.arch,
        if p.is_secureboot() { "-secureboot" } else { "" }
    );
    let final_dir = w.dir(&dir_name, |tmp| {
        oci::layout::write_layout(tmp, std::slice::from_ref(&a.files))
            .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("writing {dir_name}: {e}")))
    })?;
    let dir = Artifact {
        kind: "oci-layout",
        path: final_dir,
        size: a.files.descriptor.size,
        sha256: Some(a.files.descriptor.digest.hex().to_string()),
    };
    eprintln!("imager: installer image {}", a.files.descriptor.digest);
    Ok(vec![tar, dir])
}
