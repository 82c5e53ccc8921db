//! `base-assets publish`: the base assets as a Talos-style base installer image.
//!
//! In: an assets directory (`<dir>/<arch>/{vmlinuz, initramfs.xz, systemd-boot.efi,
//! systemd-stub.efi, grub/…}`), SOURCE_DATE_EPOCH. Out: an OCI layout directory and/or a push
//! to a registry. The image has two layers, as Talos's installer images do: the base
//! (`usr/install/<arch>/` bootloaders and GRUB images, and with `--installer` the
//! `/usr/bin/installer` entrypoint) and the artifacts (`vmlinuz`,
//! `initramfs.xz`), which the imager's installer output replaces (docs/formats/outputs.md,
//! "Installer image"). Reproducible: sorted tar entries, uid/gid 0, mtime and config `created` =
//! SOURCE_DATE_EPOCH.

use anyhow::{Context, Result, bail};
use clap::Parser;
use oci::layout::{ImageFiles, LayerFile, write_layer, write_layout};
use oci::types::{Descriptor, ImageConfig, Manifest, OCI_CONFIG, OCI_MANIFEST, RootFs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "base-assets publish",
    about = "Publish the base assets as a base installer image"
)]
struct Args {
    /// Assets directory (holds `<arch>/`).
    #[arg(long)]
    assets: PathBuf,
    /// Architecture.
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// Write an OCI image layout here.
    #[arg(long = "oci-layout")]
    oci_layout: Option<PathBuf>,
    /// Push to this reference.
    #[arg(long)]
    push: Option<String>,
    /// Plain HTTP for --push.
    #[arg(long)]
    insecure: bool,
    /// The static `installer` binary for the architecture: the image's entrypoint,
    /// `/usr/bin/installer` (docs/formats/install.md).
    #[arg(long)]
    installer: Option<PathBuf>,
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let r = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            walk(&p, &r, out)?;
        } else if e.file_type()?.is_file() {
            out.push((r, p));
        }
    }
    Ok(())
}

/// Runs `base-assets publish ARGS`.
pub fn main(args: impl Iterator<Item = String>) -> Result<()> {
    let a = Args::parse_from(args);
    let epoch = crate::epoch()?;
    let src = a.assets.join(&a.arch);
    let prefix = format!("usr/install/{}", a.arch);
    let mut base_files = Vec::new();
    let mut art_files = Vec::new();
    let mut all = Vec::new();
    walk(&src, &prefix, &mut all)?;
    for (path, source) in all {
        let f = LayerFile {
            path: path.clone(),
            mode: 0o644,
            source,
        };
        if path.ends_with("/vmlinuz") || path.ends_with("/initramfs.xz") {
            art_files.push(f);
        } else {
            base_files.push(f);
        }
    }
    if let Some(bin) = &a.installer {
        base_files.push(LayerFile {
            path: "usr/bin/installer".into(),
            mode: 0o755,
            source: bin.clone(),
        });
    }
    if art_files.len() != 2 {
        bail!("{}: vmlinuz and initramfs.xz are required", src.display());
    }
    let work = tempfile::tempdir().context("creating a work dir")?;
    let mut layers = Vec::new();
    let mut blobs: BTreeMap<oci::Digest, PathBuf> = BTreeMap::new();
    for (i, files) in [base_files, art_files].iter().enumerate() {
        let p = work.path().join(format!("layer{i}"));
        let mut f = std::fs::File::create(&p)?;
        let l = write_layer(&mut f, files, epoch as u64, 6).map_err(|e| anyhow::anyhow!("{e}"))?;
        blobs.insert(l.descriptor.digest.clone(), p);
        layers.push(l);
    }
    let config = ImageConfig {
        architecture: a.arch.clone(),
        os: "linux".into(),
        created: Some(civil::rfc3339(epoch)),
        config: match &a.installer {
            Some(_) => serde_json::json!({
                "Entrypoint": ["/usr/bin/installer"],
                "Labels": {"org.opencontainers.image.title": "talos-rs installer-base"},
            }),
            None => {
                serde_json::json!({"Labels": {"org.opencontainers.image.title": "talos-rs installer-base"}})
            }
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.to_string()).collect(),
        },
        history: Vec::new(),
    };
    let cbytes = serde_json::to_vec(&config)?;
    let cpath = work.path().join("config");
    std::fs::write(&cpath, &cbytes)?;
    let cdesc = Descriptor::of(OCI_CONFIG, &cbytes);
    blobs.insert(cdesc.digest.clone(), cpath);
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: cdesc,
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: BTreeMap::new(),
    };
    let mbytes = serde_json::to_vec(&m)?;
    let img = ImageFiles {
        descriptor: Descriptor::linux_manifest(&mbytes, &a.arch, None),
        manifest: mbytes.clone(),
        blobs,
    };
    if let Some(dir) = &a.oci_layout {
        let _ = std::fs::remove_dir_all(dir);
        write_layout(dir, std::slice::from_ref(&img)).map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "base-assets: wrote {} ({})",
            dir.display(),
            img.descriptor.digest
        );
    }
    if let Some(r) = &a.push {
        let target = oci::Reference::parse(r).map_err(|e| anyhow::anyhow!("--push: {e}"))?;
        let cache =
            oci::Cache::open(&work.path().join("cache")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut opts = oci::ClientOptions::default();
        opts.keychain.use_env = true;
        let c = oci::Client::new(opts, cache).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut list = Vec::new();
        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
            list.push((d.clone(), img.blobs[&d.digest].clone()));
        }
        let d = c
            .push(&target, a.insecure, &mbytes, OCI_MANIFEST, &list)
            .map_err(|e| anyhow::anyhow!("--push {target}: {e}"))?;
        eprintln!("base-assets: pushed {}@{d}", target.name());
    }
    if a.oci_layout.is_none() && a.push.is_none() {
        bail!("nothing to do: give --oci-layout DIR and/or --push REF");
    }
    Ok(())
}
