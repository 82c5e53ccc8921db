//! The pipeline, orchestrated: resolved profile → [`inputs::resolve`] → [`assemble::assemble`]
//! → [`output::write`] → signing. Each stage takes plain data and returns plain data; this
//! module only sequences them and owns the build's private staging directory.

use crate::error::{ExitCode, Result, WithCode};
use crate::output::{Artifact, Writer};
use crate::profile::Resolved;
use crate::{assemble, inputs, output};
use std::path::PathBuf;

/// Build-wide options.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub output_dir: PathBuf,
    /// SOURCE_DATE_EPOCH.
    pub epoch: i64,
    /// Compute sha256 of each artifact.
    pub digests: bool,
    /// How inputs are fetched and checked.
    pub inputs: inputs::Options,
    /// `--push REF` (installer output): target reference and plain HTTP.
    pub push: Option<(oci::Reference, bool)>,
    /// `--sign-key`: signs pushed images (cosign) and written files (Sigstore bundles).
    pub sign: Option<SignKey>,
}

/// A signing key (Debug prints only its public key id).
#[derive(Clone)]
pub struct SignKey(pub std::sync::Arc<cosign::SigningKey>);

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignKey({})", hex::encode(self.0.public_key().key_id()))
    }
}

/// Builds every artifact of `r`, then signs the written files when a key is given.
pub fn build(r: &Resolved, o: &BuildOptions) -> Result<Vec<Artifact>> {
    let p = &r.profile;
    // what the profile alone decides (META fits, the cmdline fits) is checked before any
    // input is read or fetched
    let decided = assemble::from_profile(p)?;
    // every temporary file lives in the build's private directory inside the output
    // directory (same filesystem: blobs and artifacts are renamed, not copied)
    let work = output::workdir::WorkDir::create(&o.output_dir)?;
    let staging = if inputs::needs_staging(r) {
        let s = work.path().join("staging");
        std::fs::create_dir(&s).code(ExitCode::Io, || format!("creating {}", s.display()))?;
        Some(s)
    } else {
        None
    };
    let staging_path = staging.as_deref();
    let mut inputs = inputs::resolve(r, &o.inputs, staging_path)?;
    let assembly = assemble::assemble(
        p,
        decided,
        &mut inputs,
        &o.inputs.extensions,
        staging_path,
        o.epoch,
    )?;
    let w = Writer {
        dir: o.output_dir.clone(),
        tmp: work.path().to_path_buf(),
        epoch: o.epoch,
        digests: o.digests,
    };
    let key = o.sign.as_ref().map(|k| k.0.as_ref());
    let mut artifacts = output::write(p, &inputs, &assembly, &w, o.push.as_ref(), key)?;
    if let Some(k) = key {
        let sigs = output::sign::sign_files(k, &artifacts, &w)?;
        artifacts.extend(sigs);
    }
    Ok(artifacts)
}

/// A UKI made elsewhere (an installer image's `vmlinuz.efi`), booted as it is.
#[derive(Debug, Clone, Copy)]
pub struct PrebuiltUki<'a> {
    /// The UKI.
    pub path: &'a std::path::Path,
    /// Its `.cmdline`, which GRUB layouts boot the kernel and initramfs taken out of it with.
    pub cmdline: &'a str,
}

/// An installation's disk layout (docs/formats/install.md): the image `r` describes (kind
/// `image`), with STATE and EPHEMERAL whatever the version's image quirks say, written into
/// `out` (truncated to `disk_size` first, so it reads as zeros but for what is written). With
/// `uki`, systemd-boot boots that UKI instead of one assembled here. `tmp` holds the staging
/// files. Returns the layout; STATE and EPHEMERAL are left for the caller to format.
pub fn install(
    r: &Resolved,
    o: &BuildOptions,
    disk_size: u64,
    out: &mut std::fs::File,
    tmp: &std::path::Path,
    uki: Option<PrebuiltUki<'_>>,
) -> Result<installer::Layout> {
    let p = &r.profile;
    let decided = assemble::from_profile(p)?;
    let staging = if inputs::needs_staging(r) {
        let s = tmp.join("staging");
        std::fs::create_dir(&s).code(ExitCode::Io, || format!("creating {}", s.display()))?;
        Some(s)
    } else {
        None
    };
    let mut inputs = inputs::resolve(r, &o.inputs, staging.as_deref())?;
    let assembly = assemble::assemble(
        p,
        decided,
        &mut inputs,
        &o.inputs.extensions,
        staging.as_deref(),
        o.epoch,
    )?;
    let mut spec = output::disk::image_spec(p, &inputs, &assembly)?;
    spec.data_partitions = true;
    spec.disk_size = disk_size;
    spec.epoch = o.epoch;
    if let Some(u) = uki {
        spec.cmdline = u.cmdline.to_string();
    }
    installer::table(&spec).map_err(|e| {
        crate::error::Error::new(
            ExitCode::Assembly,
            anyhow::anyhow!("a disk of {disk_size} bytes cannot hold the installation: {e}"),
        )
    })?;
    let layout = output::disk::write_into(
        p,
        &mut spec,
        inputs.sd_stub.as_deref(),
        uki.map(|u| u.path),
        tmp,
        out,
    )?;
    // an installation's META is always initialized, values or not
    if spec.meta.is_empty()
        && let Some(m) = layout.by_name("META")
    {
        use std::io::{Seek, SeekFrom, Write};
        out.seek(SeekFrom::Start(m.offset(spec.sector_size)))
            .and_then(|_| out.write_all(&adv::Adv::new().to_partition()))
            .code(ExitCode::Io, || "writing META".to_string())?;
    }
    Ok(layout)
}
