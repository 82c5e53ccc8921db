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
