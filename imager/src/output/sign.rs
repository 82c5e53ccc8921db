//! Signing written files: a detached Sigstore bundle `<file>.sigstore.json` (key mode) next to
//! every file artifact, written by the same atomic writer as the artifacts.

use super::{Artifact, Writer};
use crate::error::Result;

/// Writes `<file>.sigstore.json` next to every file artifact; returns the new artifacts.
pub fn sign_files(
    key: &cosign::SigningKey,
    artifacts: &[Artifact],
    w: &Writer,
) -> Result<Vec<Artifact>> {
    // the --json report lists no digest for signatures: none is computed
    let w = Writer {
        digests: false,
        ..w.clone()
    };
    let mut out = Vec::new();
    for a in artifacts {
        if !a.path.is_file() {
            continue;
        }
        let digest = crate::io::sha256_file(&a.path)?;
        let bundle = cosign::sign_blob_bundle(key, &digest);
        let mut name = a.path.file_name().unwrap_or_default().to_os_string();
        name.push(".sigstore.json");
        out.push(w.bytes("signature", &name.to_string_lossy(), bundle.as_bytes())?);
    }
    Ok(out)
}
