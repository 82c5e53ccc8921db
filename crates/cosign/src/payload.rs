//! The cosign "simple signing" payload and signature-image annotations.
//!
//! In: a docker reference + manifest digest (to write a payload), payload bytes (to parse one),
//! a [`SigningKey`] (to sign). Out: the exact payload bytes cosign writes, a parsed [`Payload`],
//! and the annotation map of a key-mode signature layer.

use std::collections::BTreeMap;

use crate::{Error, SigningKey};

/// Media type of the signature layer blob (the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 DER signature over the payload bytes.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Annotation holding the PEM leaf certificate (keyless).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Annotation holding the PEM chain above the leaf (keyless).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Annotation holding the Rekor bundle (SET + entry) as JSON.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// The `type` of a cosign container image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Go `encoding/json` string encoding (HTML-safe escapes included), so bytes match cosign.
fn go_json_string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The payload bytes `cosign sign` writes for `docker_reference` (repository name, no tag) and
/// `manifest_digest` (`sha256:…`).
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\"image\":{{\"docker-manifest-digest\":{}}},\"type\":\"{PAYLOAD_TYPE}\"}},\"optional\":null}}",
        go_json_string(docker_reference),
        go_json_string(manifest_digest)
    )
    .into_bytes()
}

/// The signed claims of a simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: String,
}

/// Parses a simple-signing payload; `critical.type` must be [`PAYLOAD_TYPE`], `optional` may
/// be anything.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, Error> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Payload(format!("not JSON: {e}")))?;
    let critical = v
        .get("critical")
        .filter(|c| c.is_object())
        .ok_or_else(|| Error::Payload("missing object \"critical\"".into()))?;
    let string_at = |path: &[&str]| -> Result<String, Error> {
        let mut cur = critical;
        for k in path {
            cur = cur
                .get(k)
                .ok_or_else(|| Error::Payload(format!("missing critical.{}", path.join("."))))?;
        }
        cur.as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Payload(format!("critical.{} is not a string", path.join("."))))
    };
    let ty = string_at(&["type"])?;
    if ty != PAYLOAD_TYPE {
        return Err(Error::Payload(format!(
            "critical.type is {ty:?}, want {PAYLOAD_TYPE:?}"
        )));
    }
    Ok(Payload {
        docker_reference: string_at(&["identity", "docker-reference"])?,
        manifest_digest: string_at(&["image", "docker-manifest-digest"])?,
    })
}

/// One layer of a cosign signature image (`<repo>:sha256-<hex>.sig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The layer blob: the payload that was signed.
    pub payload: Vec<u8>,
    /// The layer's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Key-mode annotations for `payload`, as `cosign sign --key` writes them: only
/// [`SIGNATURE_ANNOTATION`] = base64 of the DER signature over the payload bytes.
pub fn sign_payload(key: &SigningKey, payload: &[u8]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        SIGNATURE_ANNOTATION.to_string(),
        crate::b64(&key.sign(payload)),
    );
    m
}
