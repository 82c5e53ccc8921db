//! Sigstore bundles: detached bundles (v0.3) for files, as
//! `cosign sign-blob --key k --bundle f.sigstore.json --tlog-upload=false` writes them, and
//! the image-signature bundles cosign v3 attaches as OCI 1.1 referrers
//! ([`verify_image_bundle`], docs/formats/signatures.md).
//!
//! In: a signing key or a verifier, and the file's SHA-256 (files are hashed by the caller,
//! streamed, never loaded here). Out: the bundle JSON, or [`Verified`] / an [`Error`].
//! The signature is ECDSA-P256-SHA256 over the file contents, i.e. over the prehash.

use serde::Serialize;

use crate::verify::Verified;
use crate::{Error, SigningKey, Verifier};

/// Media type written by [`sign_blob_bundle`].
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

const ACCEPTED_MEDIA_TYPES: &[&str] = &[
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: &'static str,
    verification_material: VerificationMaterial,
    message_signature: MessageSignature,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    public_key: Hint,
}

#[derive(Serialize)]
struct Hint {
    hint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: MessageDigest,
    signature: String,
}

#[derive(Serialize)]
struct MessageDigest {
    algorithm: &'static str,
    digest: String,
}

/// A v0.3 bundle (pretty JSON, deterministic) signing the file whose SHA-256 is `file_sha256`.
pub fn sign_blob_bundle(key: &SigningKey, file_sha256: &[u8; 32]) -> String {
    let b = Bundle {
        media_type: BUNDLE_MEDIA_TYPE,
        verification_material: VerificationMaterial {
            public_key: Hint {
                hint: crate::b64(&key.public_key().key_id()),
            },
        },
        message_signature: MessageSignature {
            message_digest: MessageDigest {
                algorithm: "SHA2_256",
                digest: crate::b64(file_sha256),
            },
            signature: crate::b64(&key.sign_prehash(file_sha256)),
        },
    };
    // Plain strings always serialize.
    serde_json::to_string_pretty(&b).unwrap_or_default()
}

/// Verifies a bundle against the file whose SHA-256 is `file_sha256`: a key-signed bundle
/// under a key verifier (its transparency-log entries, if any, are not checked: the key is the
/// trust), a certificate-signed one under a keyless verifier (certificate, SCT, log entries and
/// timestamps: see the `keyless` module). DSSE bundles are [`Error::Unsupported`] here.
pub fn verify_blob_bundle(
    verifier: &Verifier,
    bundle_json: &[u8],
    file_sha256: &[u8; 32],
) -> Result<Verified, Error> {
    let v: serde_json::Value =
        serde_json::from_slice(bundle_json).map_err(|e| Error::Bundle(format!("not JSON: {e}")))?;
    let s = |ptr: &str| v.pointer(ptr).and_then(|x| x.as_str());
    let media_type = s("/mediaType").unwrap_or("");
    if !ACCEPTED_MEDIA_TYPES.contains(&media_type) {
        return Err(Error::Bundle(format!(
            "unsupported mediaType {media_type:?}"
        )));
    }
    let material = v
        .get("verificationMaterial")
        .ok_or_else(|| Error::Bundle("missing verificationMaterial".into()))?;
    if v.get("dsseEnvelope").is_some() {
        return Err(Error::Unsupported(
            "DSSE (attestation) bundles are not supported".into(),
        ));
    }
    let keyless =
        material.get("certificate").is_some() || material.get("x509CertificateChain").is_some();
    let algorithm = s("/messageSignature/messageDigest/algorithm")
        .ok_or_else(|| Error::Bundle("missing messageSignature.messageDigest.algorithm".into()))?;
    if algorithm != "SHA2_256" {
        return Err(Error::Unsupported(format!(
            "message digest algorithm {algorithm}"
        )));
    }
    let digest = s("/messageSignature/messageDigest/digest")
        .ok_or_else(|| Error::Bundle("missing messageSignature.messageDigest.digest".into()))
        .and_then(|d| {
            crate::unb64(d).map_err(|e| Error::Bundle(format!("messageDigest.digest: {e}")))
        })?;
    if digest != file_sha256 {
        return Err(Error::Bundle(format!(
            "message digest sha256:{} does not match the file's sha256:{}",
            hex::encode(&digest),
            hex::encode(file_sha256)
        )));
    }
    let sig = s("/messageSignature/signature")
        .ok_or_else(|| Error::Bundle("missing messageSignature.signature".into()))
        .and_then(|d| {
            crate::unb64(d).map_err(|e| Error::Bundle(format!("messageSignature.signature: {e}")))
        })?;
    let (path, key) = match verifier {
        Verifier::Key { path, key } if !keyless => (path, key),
        _ => {
            let (identity, issuer, trust_root) = keyless_rule(verifier, keyless)?;
            let content = crate::keyless::Content::Message {
                sha256: file_sha256,
            };
            let description =
                crate::keyless::verify(&v, &content, &sig, identity, issuer, trust_root)?;
            return Ok(Verified { description });
        }
    };
    key.verify_prehash(file_sha256, &sig).map_err(|e| match e {
        Error::BadSignature => {
            let hint = s("/verificationMaterial/publicKey/hint").unwrap_or("");
            let mine = crate::b64(&key.key_id());
            let signer = if !hint.is_empty() && hint != mine {
                format!("key {path} (the bundle names key hint {hint}, not {mine})")
            } else {
                format!("key {path}")
            };
            Error::SignatureMismatch { signer }
        }
        e => e,
    })?;
    Ok(Verified {
        description: format!("signed by key {path}"),
    })
}

/// The keyless rule's parts for a keyless (`keyless`: certificate-signed) bundle; a
/// certificate-signed bundle under a key, or a key-signed one under a keyless rule, is
/// refused.
fn keyless_rule(
    verifier: &Verifier,
    keyless: bool,
) -> Result<(&crate::Identity, &crate::Issuer, &crate::TrustRoot), Error> {
    match verifier {
        Verifier::Keyless {
            identity,
            issuer,
            trust_root,
        } if keyless => Ok((identity, issuer, trust_root)),
        Verifier::Keyless { .. } => Err(Error::Bundle(
            "a key-signed bundle has no certificate to check a keyless rule's identity against"
                .into(),
        )),
        Verifier::Key { .. } => Err(Error::Unsupported(
            "a certificate-signed (keyless) bundle under a key: verify it with an identity, \
             issuer and trusted root"
                .into(),
        )),
    }
}

/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type cosign v3 gives an image signature's statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// DSSE's pre-authentication encoding, the bytes a DSSE signature covers.
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies an image signature stored the cosign v3 way (an OCI 1.1 referrer holding a
/// Sigstore bundle v0.3; docs/formats/signatures.md): a DSSE envelope over an in-toto
/// Statement v1 whose predicate type is cosign's signature predicate and whose subjects
/// include `manifest_digest`, signed with the policy's key, or keyless under a keyless rule
/// (certificate, SCT, log entries and timestamps: see the `keyless` module).
pub fn verify_image_bundle(
    verifier: &Verifier,
    manifest_digest: &str,
    bundle_json: &[u8],
) -> Result<Verified, Error> {
    let v: serde_json::Value =
        serde_json::from_slice(bundle_json).map_err(|e| Error::Bundle(format!("not JSON: {e}")))?;
    let s = |ptr: &str| v.pointer(ptr).and_then(|x| x.as_str());
    let media_type = s("/mediaType").unwrap_or("");
    if !ACCEPTED_MEDIA_TYPES[..2].contains(&media_type) {
        return Err(Error::Bundle(format!(
            "image signature bundles must be v0.3, not {media_type:?}"
        )));
    }
    if v.get("messageSignature").is_some() {
        return Err(Error::Unsupported(
            "message-signature image bundles (cosign v3 signs a DSSE statement)".into(),
        ));
    }
    let env = v
        .get("dsseEnvelope")
        .ok_or_else(|| Error::Bundle("missing dsseEnvelope".into()))?;
    let payload_type = env["payloadType"].as_str().unwrap_or_default();
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Error::Bundle(format!(
            "DSSE payloadType {payload_type:?}, expected {IN_TOTO_PAYLOAD_TYPE}"
        )));
    }
    let payload = env["payload"]
        .as_str()
        .ok_or_else(|| Error::Bundle("missing dsseEnvelope.payload".into()))
        .and_then(|p| crate::unb64(p).map_err(|e| Error::Bundle(format!("payload: {e}"))))?;
    let sigs = env["signatures"].as_array().cloned().unwrap_or_default();
    let [sig] = sigs.as_slice() else {
        return Err(Error::Bundle(format!(
            "a bundle's DSSE envelope carries exactly one signature, not {}",
            sigs.len()
        )));
    };
    let sig = sig["sig"]
        .as_str()
        .ok_or_else(|| Error::Bundle("missing signatures[0].sig".into()))
        .and_then(|p| crate::unb64(p).map_err(|e| Error::Bundle(format!("sig: {e}"))))?;
    // the signature first: nothing of an unsigned payload is interpreted
    let keyless = v.pointer("/verificationMaterial/publicKey").is_none();
    let description = match verifier {
        Verifier::Key { path, key } if !keyless => {
            key.verify(&dsse_pae(payload_type, &payload), &sig)
                .map_err(|e| match e {
                    Error::BadSignature => Error::SignatureMismatch {
                        signer: format!("key {path}"),
                    },
                    e => e,
                })?;
            format!("signed by key {path} (cosign v3 bundle)")
        }
        _ => {
            let (identity, issuer, trust_root) = keyless_rule(verifier, keyless)?;
            let content = crate::keyless::Content::Dsse {
                payload_type,
                payload: &payload,
            };
            let d = crate::keyless::verify(&v, &content, &sig, identity, issuer, trust_root)?;
            format!("{d} (cosign v3 bundle)")
        }
    };
    let st: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| Error::Bundle(format!("statement: not JSON: {e}")))?;
    if st["_type"] != "https://in-toto.io/Statement/v1" {
        return Err(Error::Bundle(format!(
            "statement _type {}, expected https://in-toto.io/Statement/v1",
            st["_type"]
        )));
    }
    if st["predicateType"] != COSIGN_SIGN_PREDICATE {
        return Err(Error::Bundle(format!(
            "predicateType {} is not a signature ({COSIGN_SIGN_PREDICATE})",
            st["predicateType"]
        )));
    }
    let hex = manifest_digest
        .strip_prefix("sha256:")
        .unwrap_or(manifest_digest);
    let subjects = st["subject"].as_array().cloned().unwrap_or_default();
    if !subjects
        .iter()
        .any(|sub| sub["digest"]["sha256"].as_str() == Some(hex))
    {
        return Err(Error::Bundle(format!(
            "the statement's subjects do not include {manifest_digest}"
        )));
    }
    Ok(Verified { description })
}
