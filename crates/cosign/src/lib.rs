//! Offline cosign / Sigstore verification and signing, in pure Rust (no network, no tools).
//!
//! What flows in: PEM keys, cosign signature-image layers (payload blob + annotations), a
//! Sigstore `trusted_root.json`, an image policy in YAML, Sigstore blob bundles.
//! What flows out: signatures and annotation maps (signing side), [`Verified`] descriptions or
//! an [`Error`] that names what failed (verification side).
//!
//! - [`keys`]: [`PublicKey`] (ECDSA P-256/P-384, Ed25519) / [`SigningKey`] (P-256; PKCS#8,
//!   SEC1, SPKI and cosign's encrypted key format).
//! - [`payload`]: the cosign "simple signing" payload and the annotation names.
//! - [`trust`]: the Sigstore [`TrustRoot`] (Fulcio CAs, Rekor and CT log keys, timestamp
//!   authorities, each with its validity window).
//! - [`policy`]: the image [`Policy`] (glob → key or keyless verifier).
//! - [`verify`]: [`verify_image`], the key and keyless (Fulcio certificate + SCT + Rekor SET)
//!   checks of cosign's annotation format.
//! - [`bundle`]: Sigstore bundles: for files ([`sign_blob_bundle`], [`verify_blob_bundle`]) and
//!   cosign v3 image referrers ([`verify_image_bundle`]); keyless ones go through `keyless`
//!   (log entries with SETs, inclusion proofs and checkpoints; `tsa`: RFC 3161 timestamps;
//!   `sct`: certificate transparency; `merkle`: proofs and checkpoints).
//! - `testing` (feature `testing`): a deterministic offline Fulcio, CT log, Rekor v1/v2 and
//!   TSA for tests.

pub mod bundle;
mod keyless;
pub mod keys;
mod merkle;
pub mod payload;
mod pem;
pub mod policy;
mod sct;
pub mod trust;
mod tsa;
pub mod verify;
mod x509;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use bundle::{sign_blob_bundle, verify_blob_bundle, verify_image_bundle};

/// The DER of every certificate of a PEM text, in order: every block must be a `CERTIFICATE`
/// that parses as X.509 (text around the blocks is ignored); none is an empty list.
pub fn certificates_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    Ok(x509::Cert::all_from_pem(text)?
        .into_iter()
        .map(|c| c.der)
        .collect())
}
pub use keys::{PublicKey, SigningKey};
pub use payload::{
    BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, Payload, SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE, SignatureLayer, parse_payload, sign_payload, simple_signing_payload,
};
pub use policy::{Identity, Issuer, Policy, Rule, Verifier, glob_match};
pub use trust::TrustRoot;
pub use verify::{Verified, verify_image, verify_image_then_referrers, verify_image_with_bundles};

/// Errors of this crate; every message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM document is malformed or of the wrong type.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A key does not parse, is not ECDSA P-256, or cannot be decrypted.
    #[error("invalid key: {0}")]
    Key(String),
    /// A signature is not ASN.1 DER (nor 64-byte r||s) ECDSA.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// A well-formed signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// A signature does not verify under the key or certificate named by `signer`
    /// (e.g. `key cosign.pub`, `certificate alice@example.com`).
    #[error("signature by {signer} does not verify")]
    SignatureMismatch {
        /// Who was supposed to have signed.
        signer: String,
    },
    /// A simple-signing payload does not parse or has the wrong shape.
    #[error("invalid payload: {0}")]
    Payload(String),
    /// The payload signs another image.
    #[error("payload digest {got} does not match image digest {want}")]
    DigestMismatch {
        /// Digest in the payload.
        got: String,
        /// Digest of the image being verified.
        want: String,
    },
    /// The payload signs another repository.
    #[error("payload docker-reference {got} does not match repository {want}")]
    ReferenceMismatch {
        /// `docker-reference` of the payload.
        got: String,
        /// Repository being verified.
        want: String,
    },
    /// A signature layer lacks a required annotation.
    #[error("missing annotation {0}")]
    MissingAnnotation(&'static str),
    /// An annotation is present but malformed.
    #[error("invalid annotation {name}: {msg}")]
    Annotation {
        /// Annotation name.
        name: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// `trusted_root.json` does not parse or holds unusable material.
    #[error("invalid trusted root: {0}")]
    TrustRoot(String),
    /// The policy does not parse or is inconsistent.
    #[error("policy: {0}")]
    Policy(String),
    /// A certificate does not parse or lacks something required.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// The certificate chain does not end at a CA of the trust root.
    #[error("certificate chain does not lead to the trusted root: {0}")]
    Chain(String),
    /// No SAN of the leaf certificate matches the policy identity.
    #[error("certificate identity {got} does not match {want}")]
    Identity {
        /// The certificate's identities (SAN emails / URIs), comma-separated.
        got: String,
        /// The expected identity, or `regexp '…'`.
        want: String,
    },
    /// The OIDC issuer of the leaf certificate does not match the policy issuer.
    #[error("issuer {got} does not match {want}")]
    Issuer {
        /// The certificate's issuer.
        got: String,
        /// The expected issuer, or `regexp '…'`.
        want: String,
    },
    /// The certificate's signed certificate timestamps (certificate transparency) are
    /// missing or do not verify.
    #[error("certificate transparency: {0}")]
    Sct(String),
    /// An RFC 3161 signed timestamp does not verify.
    #[error("signed timestamp: {0}")]
    Timestamp(String),
    /// The Rekor bundle (SET, body, time) is wrong.
    #[error("transparency log entry: {0}")]
    Tlog(String),
    /// There are no signature layers at all.
    #[error("no signatures found")]
    NoSignatures,
    /// None of the signature layers verifies; one reason per layer.
    #[error("no valid signature among {} layer(s): {}", .0.len(), .0.join("; "))]
    NoneVerified(Vec<String>),
    /// A Sigstore bundle does not parse or does not match.
    #[error("invalid bundle: {0}")]
    Bundle(String),
    /// Something valid but not supported by this implementation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A file named by the policy cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Standard base64 (with padding), as Go's `encoding/base64.StdEncoding`.
pub(crate) fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64, ignoring ASCII whitespace.
pub(crate) fn unb64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| format!("invalid base64: {e}"))
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests;
