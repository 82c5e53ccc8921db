//! Image signature verification, fully offline.
//!
//! In: a [`Verifier`] (key, or keyless identity/issuer/trust root), the repository and manifest
//! digest of the image, and the layers of its cosign signature image. Out: [`Verified`] (who
//! signed) for the first layer that verifies, or an [`Error`] giving each layer's reason.
//!
//! Key mode: the base64 DER signature annotation must verify over the payload bytes.
//! Keyless mode: the leaf certificate (annotation) must be issued by a CA certificate of the
//! trust root that is inside its `validFor` window at the integrated time (the chain
//! annotation is checked for form only); it must carry an SCT of a trust-root CT log; its key
//! must verify the signature; its SAN must match the identity and its Fulcio issuer extension
//! the issuer; and the Rekor bundle annotation must carry a SET by a trust-root log key over a
//! hashedrekord entry of exactly this payload hash, signature and certificate, integrated
//! while the certificate was valid.
//! In both modes the payload must name this digest and this repository.

use serde::{Deserialize, Serialize};

use crate::payload::{
    BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, SIGNATURE_ANNOTATION,
    SignatureLayer, parse_payload,
};
use crate::policy::{Identity, Issuer, Verifier};
use crate::trust::{TlogKey, TrustRoot};
use crate::x509::Cert;
use crate::{Error, pem};

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who signed, e.g. `signed by key cosign.pub` or
    /// `signed by alice@example.com (issuer https://…), tlog index 42`.
    pub description: String,
}

/// Verifies an image the way cosign finds its signatures: the signature image's `layers`
/// (cosign's `sha256-<hex>.sig` tag) first, and only when none of them verifies, the cosign
/// v3 referrer bundles that `referrers` fetches (bundles, and reasons for referrers it
/// skipped), so that a stale referrer never stands in the way of a valid tag signature.
/// The outer result is `referrers`' own failure; the inner one the verification's, with the
/// reasons of both formats.
pub fn verify_image_then_referrers<E>(
    verifier: &Verifier,
    repository: &str,
    manifest_digest: &str,
    layers: &[SignatureLayer],
    referrers: impl FnOnce() -> Result<(Vec<Vec<u8>>, Vec<String>), E>,
) -> Result<Result<Verified, Error>, E> {
    let tag_format = match verify_image(verifier, repository, manifest_digest, layers) {
        Ok(v) => return Ok(Ok(v)),
        Err(e) => e,
    };
    let (bundles, skipped) = referrers()?;
    Ok(
        verify_image_with_bundles(verifier, repository, manifest_digest, &[], &bundles).map_err(
            |by_referrers| {
                let reasons: Vec<String> = [tag_format, by_referrers]
                    .into_iter()
                    .flat_map(|e| match e {
                        Error::NoSignatures => Vec::new(),
                        Error::NoneVerified(r) => r,
                        e => vec![e.to_string()],
                    })
                    .chain(skipped)
                    .collect();
                if reasons.is_empty() {
                    Error::NoSignatures
                } else {
                    Error::NoneVerified(reasons)
                }
            },
        ),
    )
}

/// Verifies that at least one of `layers` is a valid cosign signature of `manifest_digest`
/// in `repository` under `verifier`. See the module documentation for the checks.
pub fn verify_image(
    verifier: &Verifier,
    repository: &str,
    manifest_digest: &str,
    layers: &[SignatureLayer],
) -> Result<Verified, Error> {
    verify_image_with_bundles(verifier, repository, manifest_digest, layers, &[])
}

/// Like [`verify_image`], with the cosign v3 referrer bundles of the image too
/// ([`crate::bundle::verify_image_bundle`]): the first signature that verifies, from either
/// format, is enough.
pub fn verify_image_with_bundles(
    verifier: &Verifier,
    repository: &str,
    manifest_digest: &str,
    layers: &[SignatureLayer],
    bundles: &[Vec<u8>],
) -> Result<Verified, Error> {
    if layers.is_empty() && bundles.is_empty() {
        return Err(Error::NoSignatures);
    }
    let mut reasons = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        match verify_layer(verifier, repository, manifest_digest, layer) {
            Ok(v) => return Ok(v),
            Err(e) => reasons.push(format!("layer {i}: {e}")),
        }
    }
    for (i, b) in bundles.iter().enumerate() {
        match crate::bundle::verify_image_bundle(verifier, manifest_digest, b) {
            Ok(v) => return Ok(v),
            Err(e) => reasons.push(format!("referrer bundle {i}: {e}")),
        }
    }
    Err(Error::NoneVerified(reasons))
}

/// Verifies one signature layer.
pub fn verify_layer(
    verifier: &Verifier,
    repository: &str,
    manifest_digest: &str,
    layer: &SignatureLayer,
) -> Result<Verified, Error> {
    let sig_b64 = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or(Error::MissingAnnotation(SIGNATURE_ANNOTATION))?;
    let sig = crate::unb64(sig_b64).map_err(|msg| Error::Annotation {
        name: SIGNATURE_ANNOTATION,
        msg,
    })?;
    let verified = match verifier {
        Verifier::Key { path, key } => {
            key.verify(&layer.payload, &sig).map_err(|e| match e {
                Error::BadSignature => Error::SignatureMismatch {
                    signer: format!("key {path}"),
                },
                e => e,
            })?;
            Verified {
                description: format!("signed by key {path}"),
            }
        }
        Verifier::Keyless {
            identity,
            issuer,
            trust_root,
        } => verify_keyless(identity, issuer, trust_root, layer, &sig)?,
    };
    check_claims(&layer.payload, repository, manifest_digest)?;
    Ok(verified)
}

/// The payload must name `manifest_digest` and `repository`.
fn check_claims(payload: &[u8], repository: &str, manifest_digest: &str) -> Result<(), Error> {
    let p = parse_payload(payload)?;
    if !p.manifest_digest.eq_ignore_ascii_case(manifest_digest) {
        return Err(Error::DigestMismatch {
            got: p.manifest_digest,
            want: manifest_digest.to_string(),
        });
    }
    if normalize_repository(&p.docker_reference) != normalize_repository(repository) {
        return Err(Error::ReferenceMismatch {
            got: p.docker_reference,
            want: repository.to_string(),
        });
    }
    Ok(())
}

/// Strips a tag or digest from an image reference: `ghcr.io/a/b:v1@sha256:…` → `ghcr.io/a/b`.
pub fn strip_tag(reference: &str) -> &str {
    let r = reference.split('@').next().unwrap_or(reference);
    let last_slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[last_slash..].find(':') {
        Some(colon) => &r[..last_slash + colon],
        None => r,
    }
}

/// Normalizes a repository name as Docker does: tag/digest stripped, `docker.io` added when no
/// registry is named (and `library/` for single-component names); `index.docker.io` and
/// `registry-1.docker.io` are `docker.io`. (cosign writes `index.docker.io/library/alpine`.)
pub fn normalize_repository(reference: &str) -> String {
    let r = strip_tag(reference);
    let (registry, path) = match r.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", r),
    };
    let registry = match registry {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    };
    if registry == "docker.io" && !path.contains('/') {
        format!("docker.io/library/{path}")
    } else {
        format!("{registry}/{path}")
    }
}

/// The `dev.sigstore.cosign/bundle` annotation (cosign's `RekorBundle`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    pub signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    pub payload: RekorPayload,
}

/// The logged entry a SET signs; field order = canonical (sorted) JSON order.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct RekorPayload {
    pub body: String,
    #[serde(rename = "integratedTime")]
    pub integrated_time: i64,
    #[serde(rename = "logID")]
    pub log_id: String,
    #[serde(rename = "logIndex")]
    pub log_index: i64,
}

impl RekorPayload {
    /// The canonical JSON a SET signs: keys sorted, no whitespace.
    pub fn canonical_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The hashedrekord v0.0.1 body a SET covers (what the `testing` stand-in logs).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn hashedrekord_body(payload_sha256: &[u8], sig: &[u8], cert_pem: &str) -> String {
    serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(payload_sha256)}},
            "signature": {
                "content": crate::b64(sig),
                "publicKey": {"content": crate::b64(cert_pem.as_bytes())}
            }
        }
    })
    .to_string()
}

fn verify_keyless(
    identity: &Identity,
    issuer: &Issuer,
    trust_root: &TrustRoot,
    layer: &SignatureLayer,
    sig: &[u8],
) -> Result<Verified, Error> {
    let cert_pem = layer
        .annotations
        .get(CERTIFICATE_ANNOTATION)
        .ok_or(Error::MissingAnnotation(CERTIFICATE_ANNOTATION))?;
    let leaf = Cert::all_from_pem(cert_pem.as_bytes())
        .map_err(|e| Error::Annotation {
            name: CERTIFICATE_ANNOTATION,
            msg: e.to_string(),
        })?
        .into_iter()
        .next()
        .ok_or(Error::Annotation {
            name: CERTIFICATE_ANNOTATION,
            msg: "no certificate".into(),
        })?;
    // a malformed chain annotation is refused; its certificates are not used to build the
    // path (see verify_chain)
    if let Some(c) = layer.annotations.get(CHAIN_ANNOTATION) {
        Cert::all_from_pem(c.as_bytes()).map_err(|e| Error::Annotation {
            name: CHAIN_ANNOTATION,
            msg: e.to_string(),
        })?;
    }
    let bundle_json = layer
        .annotations
        .get(BUNDLE_ANNOTATION)
        .ok_or(Error::MissingAnnotation(BUNDLE_ANNOTATION))?;
    let bundle: RekorBundle = serde_json::from_str(bundle_json).map_err(|e| Error::Annotation {
        name: BUNDLE_ANNOTATION,
        msg: format!("invalid Rekor bundle JSON: {e}"),
    })?;
    let at = bundle.payload.integrated_time;

    // 1. The certificate chains to the trust root (CAs valid at the integrated time) and was
    //    logged in certificate transparency.
    let ca = verify_chain(&leaf, trust_root, at).map_err(Error::Chain)?;
    crate::sct::verify_embedded(&leaf, ca, &trust_root.ctlogs).map_err(Error::Sct)?;

    // 2. The leaf is a code-signing certificate whose key made the signature, for this
    //    identity and issuer.
    let (who, cert_issuer) = check_leaf(&leaf, identity, issuer, |key| {
        key.verify(&layer.payload, sig)
    })?;

    // 4. The transparency log entry.
    verify_set(&bundle, trust_root)?;
    verify_body(&bundle.payload.body, &layer.payload, sig, &leaf)?;
    let (not_before, not_after) = leaf.validity();
    if at < not_before || at > not_after {
        return Err(Error::Tlog(format!(
            "integratedTime {at} is outside the certificate validity [{not_before}, {not_after}]"
        )));
    }
    Ok(Verified {
        description: format!(
            "signed by {who} (issuer {cert_issuer}), tlog index {}",
            bundle.payload.log_index
        ),
    })
}

/// The leaf must be issued by a certificate of one trust-root CA that was inside its
/// `validFor` window at `at` and is itself valid then. Intermediates come only from the trust
/// root (as sigstore-go does): a certificate from the signature's chain annotation is
/// supplied by the signer, so it could carry a retired CA's intermediate under a current
/// root; the annotation is therefore not used to build the path.
pub(crate) fn verify_chain<'t>(
    leaf: &Cert,
    trust_root: &'t TrustRoot,
    at: i64,
) -> Result<&'t Cert, String> {
    let mut errors = Vec::new();
    for ca in &trust_root.cas {
        let named: Vec<&Cert> = ca
            .chain
            .iter()
            .filter(|c| {
                c.der != leaf.der
                    && c.cert.tbs_certificate.subject == leaf.cert.tbs_certificate.issuer
            })
            .collect();
        let Some(issuer) = named.iter().find(|c| leaf.verify_issued_by(c).is_ok()) else {
            // a CA of the right name whose signature does not verify says why
            for c in named {
                if let Err(e) = leaf.verify_issued_by(c) {
                    errors.push(e);
                }
            }
            continue;
        };
        // the trust root's window for the CA: a retired CA vouches for nothing after it
        if !ca.valid_at(at) {
            errors.push(format!(
                "CA {} is outside its trust-root validity window [{}, {}] at {} ({at})",
                issuer.subject(),
                ca.valid_from.map_or("-".into(), civil::rfc3339),
                ca.valid_to.map_or("-".into(), civil::rfc3339),
                civil::rfc3339(at),
            ));
            continue;
        }
        let (nb, na) = issuer.validity();
        if at < nb || at > na {
            errors.push(format!(
                "CA {} is not valid at {at} (valid [{nb}, {na}])",
                issuer.subject()
            ));
            continue;
        }
        if !issuer.is_ca() {
            errors.push(format!("{} is not a CA certificate", issuer.subject()));
            continue;
        }
        return Ok(issuer);
    }
    let mut msg = format!(
        "no CA of the trust root named {} issued {} and was trusted at {}",
        leaf.cert.tbs_certificate.issuer,
        leaf.name(),
        civil::rfc3339(at)
    );
    if !errors.is_empty() {
        msg.push_str(&format!(" ({})", errors.join("; ")));
    }
    Err(msg)
}

/// The leaf must allow code signing, its key must make `verify_sig` succeed, one of its
/// identities must match `identity` and its Fulcio issuer `issuer`. Returns both.
pub(crate) fn check_leaf(
    leaf: &Cert,
    identity: &Identity,
    issuer: &Issuer,
    verify_sig: impl FnOnce(&crate::PublicKey) -> Result<(), Error>,
) -> Result<(String, String), Error> {
    if !leaf.has_code_signing() {
        return Err(Error::Certificate(format!(
            "leaf {} lacks the code-signing extended key usage",
            leaf.subject()
        )));
    }
    let ids = leaf.identities();
    let key = leaf.public_key().map_err(Error::Certificate)?;
    verify_sig(&key).map_err(|e| match e {
        Error::BadSignature => Error::SignatureMismatch {
            signer: format!("certificate {}", ids.join(", ")),
        },
        e => e,
    })?;
    let Some(who) = ids.iter().find(|i| identity.matches(i)) else {
        return Err(Error::Identity {
            got: if ids.is_empty() {
                "(none)".into()
            } else {
                ids.join(", ")
            },
            want: identity.to_string(),
        });
    };
    let cert_issuer = leaf.fulcio_issuer().ok_or_else(|| {
        Error::Certificate(
            "leaf has no Fulcio OIDC issuer extension (1.3.6.1.4.1.57264.1.8 or .1.1)".into(),
        )
    })?;
    if !issuer.matches(&cert_issuer) {
        return Err(Error::Issuer {
            got: cert_issuer,
            want: issuer.to_string(),
        });
    }
    Ok((who.clone(), cert_issuer))
}

/// The SET is a signature by a trust-root log key over the canonical entry.
fn verify_set(bundle: &RekorBundle, trust_root: &TrustRoot) -> Result<(), Error> {
    let p = &bundle.payload;
    let log = trust_root
        .tlogs
        .iter()
        .find(|t| t.log_id.eq_ignore_ascii_case(&p.log_id))
        .ok_or_else(|| {
            Error::Tlog(format!(
                "SET does not verify: log ID {} is not a transparency log of the trust root",
                p.log_id
            ))
        })?;
    let set = crate::unb64(&bundle.signed_entry_timestamp)
        .map_err(|e| Error::Tlog(format!("SignedEntryTimestamp: {e}")))?;
    check_set(log, p, &set)
}

/// `set` is `log`'s signature (ECDSA: Ed25519 log keys make no SETs) over the canonical
/// entry `p`, integrated inside the log key's validity window. Both cosign formats (the
/// bundle annotation and a Sigstore bundle's inclusion promise) check their SET here.
pub(crate) fn check_set(log: &TlogKey, p: &RekorPayload, set: &[u8]) -> Result<(), Error> {
    if log.key.algorithm() == "Ed25519" {
        return Err(Error::Tlog(format!(
            "log {} has an Ed25519 key, which does not make SETs",
            log.base_url
        )));
    }
    log.key.verify(&p.canonical_json(), set).map_err(|_| {
        Error::Tlog(format!(
            "SET does not verify with the key of log {}",
            log.base_url
        ))
    })?;
    if !log.valid_at(p.integrated_time) {
        return Err(Error::Tlog(format!(
            "integratedTime {} is outside the validity of log {}",
            civil::rfc3339(p.integrated_time),
            log.base_url
        )));
    }
    Ok(())
}

/// The logged hashedrekord must be of this payload hash, signature and certificate.
fn verify_body(body_b64: &str, payload: &[u8], sig: &[u8], leaf: &Cert) -> Result<(), Error> {
    let mismatch = |what: String| Error::Tlog(format!("body does not match signature: {what}"));
    let body = crate::unb64(body_b64).map_err(|e| mismatch(format!("body: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| mismatch(format!("body is not JSON: {e}")))?;
    let s = |ptr: &str| v.pointer(ptr).and_then(|x| x.as_str()).unwrap_or("");
    if s("/kind") != "hashedrekord" || s("/apiVersion") != "0.0.1" {
        return Err(Error::Unsupported(format!(
            "transparency log entry kind {:?} version {:?} (only hashedrekord 0.0.1)",
            s("/kind"),
            s("/apiVersion")
        )));
    }
    if s("/spec/data/hash/algorithm") != "sha256" {
        return Err(mismatch(format!(
            "hash algorithm {:?} is not sha256",
            s("/spec/data/hash/algorithm")
        )));
    }
    let want = hex::encode(crate::sha256(payload));
    let got = s("/spec/data/hash/value");
    if !got.eq_ignore_ascii_case(&want) {
        return Err(mismatch(format!(
            "logged hash {got} is not the payload's sha256 {want}"
        )));
    }
    let logged_sig = crate::unb64(s("/spec/signature/content"))
        .map_err(|e| mismatch(format!("signature content: {e}")))?;
    if logged_sig != sig {
        return Err(mismatch("logged signature differs".into()));
    }
    let logged_pem = crate::unb64(s("/spec/signature/publicKey/content"))
        .map_err(|e| mismatch(format!("publicKey content: {e}")))?;
    let logged_cert =
        pem::parse_one(&logged_pem).map_err(|e| mismatch(format!("publicKey: {e}")))?;
    if logged_cert.der != leaf.der {
        return Err(mismatch("logged certificate differs".into()));
    }
    Ok(())
}
