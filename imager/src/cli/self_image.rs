//! `imager self-image`: this imager and its install directory as the imager container image
//! (docs/formats/imager-image.md), reproducible, optionally pushed and signed.

use crate::error::{Error, ExitCode, Result, WithCode};
use crate::output::imager_image::{self, Platform};
use crate::output::{Artifact, Writer};
use std::path::PathBuf;

/// Arguments of `imager self-image`.
#[derive(clap::Args, Debug)]
pub struct SelfImageArgs {
    /// Output directory (created if missing): `imager-image/` (OCI layout, multi-platform
    /// index) and `imager-image.tar` (`podman load`/`docker load` archive).
    #[arg(long)]
    output: PathBuf,

    /// Architecture of the binary and of the assets taken (amd64 or arm64).
    #[arg(long, default_value = super::host_arch())]
    arch: String,

    /// The imager binary to package (statically linked) [default: this executable].
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,

    /// Directory holding the base assets as `<arch>/…`; `<arch>/` becomes
    /// `/usr/install/<arch>/` in the image.
    #[arg(
        long = "install-dir",
        env = "IMAGER_INSTALL_DIR",
        default_value = "/usr/install"
    )]
    install_dir: PathBuf,

    /// The tag recorded in the archive for `podman load`/`docker load`.
    #[arg(long, default_value = "localhost/imager:latest")]
    tag: String,

    /// Push the image (its index and every platform manifest) to REF.
    #[arg(long, value_name = "REF")]
    push: Option<String>,

    /// Plain HTTP / no TLS verification for --push.
    #[arg(long)]
    insecure: bool,

    #[command(flatten)]
    access: super::RegistryAccess,

    /// Sign: `<file>.sigstore.json` next to the archive, and a cosign signature for a pushed
    /// image (cosign/PKCS#8 EC P-256 PEM; COSIGN_PASSWORD decrypts it).
    #[arg(long = "sign-key", env = "IMAGER_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,

    /// Print the artifacts as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `imager self-image`.
pub fn run(a: &SelfImageArgs) -> Result<()> {
    if !matches!(a.arch.as_str(), "amd64" | "arm64") {
        return Err(Error::invalid(format!(
            "--arch {}: amd64 or arm64",
            crate::error::printable(&a.arch)
        )));
    }
    crate::progress::init(a.json);
    let epoch = super::epoch()?;
    let push = a
        .push
        .as_deref()
        .map(|r| crate::inputs::registry::parse_ref("--push", r))
        .transpose()?;
    let key = super::load_sign_key(a.sign_key.as_deref())?;
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().code(ExitCode::Environment, || {
            "finding this executable (give --binary)".to_string()
        })?,
    };
    let platforms = [Platform {
        arch: a.arch.clone(),
        binary,
        assets: a.install_dir.join(&a.arch),
    }];
    crate::output::workdir::handle_signals();
    let start = std::time::Instant::now();
    let work = crate::output::workdir::WorkDir::create(&a.output)?;
    let w = Writer {
        dir: a.output.clone(),
        tmp: work.path().to_path_buf(),
        epoch,
        digests: true,
    };
    let img = imager_image::assemble(&w, &platforms)?;
    let mut arts = imager_image::write(&w, &img, &a.tag)?;
    if let Some(target) = &push {
        let f = crate::inputs::registry::Fetcher::new(&a.access.fetch_options()?)?;
        let d = f.push_index(target, a.insecure, &img.images, &img.index)?;
        if let Some(k) = &key {
            f.push_signature(target, a.insecure, &d, &k.0)?;
        }
        arts.push(Artifact {
            kind: "pushed",
            path: PathBuf::from(format!("{}@{d}", target.name())),
            size: img.index.len() as u64,
            sha256: Some(d.hex().to_string()),
        });
    }
    if let Some(k) = &key {
        let sigs = crate::output::sign::sign_files(&k.0, &arts, &w)?;
        arts.extend(sigs);
    }
    drop(work);
    let secs = start.elapsed().as_secs_f64();
    super::report(&arts, secs, a.json, false);
    eprintln!(
        "imager: image {} in {secs:.1} s",
        oci::Digest::of(&img.index)
    );
    Ok(())
}
