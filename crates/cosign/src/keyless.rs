//! Keyless Sigstore bundles (v0.1–v0.3): a Fulcio certificate, its transparency-log entries
//! and signed timestamps, checked offline against a pinned trust root;
//! docs/formats/signatures.md, "Keyless bundles".
//!
//! In: the parsed bundle JSON, what was signed ([`Content`]), the signature bytes, the
//! identity/issuer policy and the trust root. Out: a description of who signed, or an
//! [`Error`] naming the check that failed.
//!
//! Order: the log entries (Rekor v1: SET and/or inclusion proof + checkpoint; Rekor v2:
//! inclusion proof against the checkpoint) and RFC 3161 timestamps are verified first, giving
//! the verified times; at every such time the certificate must chain to a trust-root CA inside
//! its `validFor` window and be valid itself; its embedded SCT must verify with a trusted CT
//! log; then the signature, the identity and the issuer.

use serde_json::Value;

use crate::policy::{Identity, Issuer};
use crate::trust::{TlogKey, TrustRoot};
use crate::verify::RekorPayload;
use crate::x509::Cert;
use crate::{Error, merkle};

/// At most this many transparency-log entries and timestamps are looked at.
const MAX_ENTRIES: usize = 8;

/// What the bundle's signature covers.
pub(crate) enum Content<'a> {
    /// A message signature over a file whose SHA-256 is given.
    Message { sha256: &'a [u8; 32] },
    /// A DSSE envelope.
    Dsse {
        payload_type: &'a str,
        payload: &'a [u8],
    },
}

impl Content<'_> {
    fn verify(&self, key: &crate::PublicKey, sig: &[u8]) -> Result<(), Error> {
        match self {
            Content::Message { sha256 } => key.verify_prehash(&sha256[..], sig),
            Content::Dsse {
                payload_type,
                payload,
            } => key.verify(&crate::bundle::dsse_pae(payload_type, payload), sig),
        }
    }
}

/// A bundle's version from its media type: 1, 2 or 3 (v0.1, v0.2, v0.3).
pub(crate) fn version(media_type: &str) -> Option<u8> {
    match media_type {
        "application/vnd.dev.sigstore.bundle.v0.3+json"
        | "application/vnd.dev.sigstore.bundle+json;version=0.3" => Some(3),
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => Some(2),
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => Some(1),
        _ => None,
    }
}

fn b64_field(v: &Value, ptr: &str) -> Result<Vec<u8>, Error> {
    let s = v
        .pointer(ptr)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Bundle(format!("missing {}", &ptr[1..].replace('/', "."))))?;
    crate::unb64(s).map_err(|e| Error::Bundle(format!("{}: {e}", &ptr[1..].replace('/', "."))))
}

/// An int64 as protobuf JSON writes it: a string, or a number.
fn int_field(v: &Value, ptr: &str) -> Result<i64, Error> {
    let what = || ptr[1..].replace('/', ".");
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        None => Some(0),
        _ => None,
    }
    .filter(|n| *n >= 0)
    .ok_or_else(|| Error::Bundle(format!("{} is not a non-negative integer", what())))
}

/// Verifies a keyless bundle `b` whose signature `sig` is over `content`.
pub(crate) fn verify(
    b: &Value,
    content: &Content<'_>,
    sig: &[u8],
    identity: &Identity,
    issuer: &Issuer,
    trust: &TrustRoot,
) -> Result<String, Error> {
    let media_type = b["mediaType"].as_str().unwrap_or_default();
    let version =
        version(media_type).ok_or_else(|| Error::Bundle(format!("mediaType {media_type:?}")))?;
    let m = &b["verificationMaterial"];
    let leaf_der = if m.get("certificate").is_some() {
        b64_field(m, "/certificate/rawBytes")?
    } else if m.get("x509CertificateChain").is_some() {
        if version >= 3 {
            return Err(Error::Bundle(
                "a v0.3 bundle carries its leaf as certificate, not x509CertificateChain".into(),
            ));
        }
        b64_field(m, "/x509CertificateChain/certificates/0/rawBytes")?
    } else {
        return Err(Error::Bundle(
            "a keyless bundle needs a certificate in its verificationMaterial".into(),
        ));
    };
    let leaf = Cert::from_der(&leaf_der)?;

    // 1. Transparency-log entries and signed timestamps: the verified times.
    let entries = m["tlogEntries"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if entries.is_empty() {
        return Err(Error::Tlog(
            "the bundle has no transparency-log entry (keyless signatures must be logged)".into(),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(Error::Bundle(format!(
            "{} transparency-log entries (at most {MAX_ENTRIES})",
            entries.len()
        )));
    }
    let mut times = Vec::new();
    let mut logged = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (log, time) =
            verify_entry(e, version, content, sig, &leaf_der, trust).map_err(|err| match err {
                Error::Tlog(msg) => Error::Tlog(format!("entry {i}: {msg}")),
                other => other,
            })?;
        logged.push(format!(
            "{} index {}",
            log.host(),
            int_field(e, "/logIndex")?
        ));
        if let Some(t) = time {
            times.push(("integrated time", t));
        }
    }
    let stamps = m
        .pointer("/timestampVerificationData/rfc3161Timestamps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if stamps.len() > MAX_ENTRIES {
        return Err(Error::Bundle(format!(
            "{} timestamps (at most {MAX_ENTRIES})",
            stamps.len()
        )));
    }
    for (i, ts) in stamps.iter().enumerate() {
        let der = b64_field(ts, "/signedTimestamp")?;
        let t = crate::tsa::verify(&der, sig, trust)
            .map_err(|e| Error::Timestamp(format!("timestamp {i}: {e}")))?;
        times.push(("signed timestamp", t));
    }
    if times.is_empty() {
        return Err(Error::Tlog(
            "no verified signing time: no entry has a signed entry timestamp and the bundle has \
             no RFC 3161 timestamp"
                .into(),
        ));
    }

    // 2. At every verified time: the certificate is valid and chains to a CA trusted then.
    let (nb, na) = leaf.validity();
    let mut ca = None;
    for (what, t) in &times {
        if *t < nb || *t > na {
            return Err(Error::Certificate(format!(
                "{what} {t} is outside the certificate validity [{nb}, {na}]"
            )));
        }
        ca = Some(crate::verify::verify_chain(&leaf, trust, *t).map_err(Error::Chain)?);
    }
    // `times` is not empty, so a CA was found
    let ca = ca.ok_or_else(|| Error::Chain("no verified time".into()))?;

    // 3. Certificate transparency.
    crate::sct::verify_embedded(&leaf, ca, &trust.ctlogs).map_err(Error::Sct)?;

    // 4. Signature, identity, issuer.
    let (who, cert_issuer) =
        crate::verify::check_leaf(&leaf, identity, issuer, |key| content.verify(key, sig))?;
    Ok(format!(
        "signed by {who} (issuer {cert_issuer}), tlog {}",
        logged.join(", ")
    ))
}

/// Verifies one `tlogEntries[]` element against the trust root and the bundle; returns its log
/// and, for a Rekor v1 entry with a verified SET, its integrated time.
fn verify_entry<'t>(
    e: &Value,
    version: u8,
    content: &Content<'_>,
    sig: &[u8],
    leaf_der: &[u8],
    trust: &'t TrustRoot,
) -> Result<(&'t TlogKey, Option<i64>), Error> {
    let key_id = hex::encode(b64_field(e, "/logId/keyId")?);
    let log = trust
        .tlogs
        .iter()
        .find(|t| t.log_id.eq_ignore_ascii_case(&key_id))
        .ok_or_else(|| {
            Error::Tlog(format!(
                "log ID {key_id} is not a transparency log of the trust root"
            ))
        })?;
    let body = b64_field(e, "/canonicalizedBody")?;
    let kind = e.pointer("/kindVersion/kind").and_then(Value::as_str);
    let kv = e.pointer("/kindVersion/version").and_then(Value::as_str);
    let (Some(kind), Some(kv)) = (kind, kv) else {
        return Err(Error::Bundle("tlog entry without kindVersion".into()));
    };
    let log_index = int_field(e, "/logIndex")?;
    let integrated_time = int_field(e, "/integratedTime")?;
    let body_json: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::Tlog(format!("canonicalizedBody is not JSON: {e}")))?;
    if body_json["kind"] != kind || body_json["apiVersion"] != kv {
        return Err(Error::Tlog(format!(
            "kindVersion {kind} {kv} differs from the logged body's"
        )));
    }
    let v2 = kv == "0.0.2";
    let mut time = None;
    if let Some(promise) = e.pointer("/inclusionPromise/signedEntryTimestamp") {
        if v2 {
            return Err(Error::Tlog("a Rekor v2 entry carries no SET".into()));
        }
        let set = crate::unb64(promise.as_str().unwrap_or_default())
            .map_err(|e| Error::Tlog(format!("signedEntryTimestamp: {e}")))?;
        let payload = RekorPayload {
            body: crate::b64(&body),
            integrated_time,
            log_id: key_id.clone(),
            log_index,
        };
        log.key
            .verify(&payload.canonical_json(), &set)
            .map_err(|_| {
                Error::Tlog(format!(
                    "SET does not verify with the key of log {}",
                    log.base_url
                ))
            })?;
        if !log.valid_at(integrated_time) {
            return Err(Error::Tlog(format!(
                "integratedTime {integrated_time} is outside the validity of log {}",
                log.base_url
            )));
        }
        time = Some(integrated_time);
    } else if version == 1 {
        return Err(Error::Tlog(
            "a v0.1 bundle's entry needs an inclusion promise (SET)".into(),
        ));
    }
    match e.get("inclusionProof") {
        Some(p) => verify_inclusion(p, &body, log, v2.then_some(log_index))?,
        None if version >= 2 => {
            return Err(Error::Tlog(
                "a v0.2+ bundle's entry needs an inclusion proof".into(),
            ));
        }
        None => {}
    }
    match (kind, kv) {
        ("hashedrekord", "0.0.1") => check_hashedrekord_v1(&body_json, content, sig, leaf_der)?,
        ("dsse", "0.0.1") => check_dsse_v1(&body_json, content, sig, leaf_der)?,
        ("hashedrekord", "0.0.2") => check_hashedrekord_v2(&body_json, content, sig, leaf_der)?,
        _ => {
            return Err(Error::Unsupported(format!(
                "transparency log entry kind {kind} {kv} (hashedrekord 0.0.1/0.0.2, dsse 0.0.1)"
            )));
        }
    }
    Ok((log, time))
}

/// The inclusion proof leads from the body to the root that the log's checkpoint signs. Rekor
/// v1 uses the proof's own index, size and root (which must be the checkpoint's); Rekor v2
/// (`v2_index`) the entry's index and the checkpoint's size and root.
fn verify_inclusion(
    p: &Value,
    body: &[u8],
    log: &TlogKey,
    v2_index: Option<i64>,
) -> Result<(), Error> {
    let tlog = |m: String| Error::Tlog(m);
    let text = p
        .pointer("/checkpoint/envelope")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| tlog("inclusion proof without a checkpoint".into()))?;
    let cp = merkle::verify_checkpoint(text, log).map_err(tlog)?;
    let hashes = p["hashes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut path = Vec::with_capacity(hashes.len().min(64));
    for h in hashes.iter().take(65) {
        let h = crate::unb64(h.as_str().unwrap_or_default())
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| tlog("inclusion proof hash is not 32 bytes of base64".into()))?;
        path.push(h);
    }
    let (index, size, root) = match v2_index {
        Some(i) => {
            if cp.origin != log.host() {
                return Err(tlog(format!(
                    "checkpoint origin {:?} is not log {}",
                    cp.origin,
                    log.host()
                )));
            }
            (i, cp.size, cp.root)
        }
        None => {
            let root: [u8; 32] = b64_field(p, "/rootHash")?
                .try_into()
                .map_err(|_| tlog("inclusion proof rootHash is not 32 bytes".into()))?;
            let size = int_field(p, "/treeSize")? as u64;
            if root != cp.root || size != cp.size {
                return Err(tlog(format!(
                    "the inclusion proof (tree size {size}, root {}) does not match the checkpoint (tree size {}, root {})",
                    hex::encode(root),
                    cp.size,
                    hex::encode(cp.root)
                )));
            }
            (int_field(p, "/logIndex")?, size, root)
        }
    };
    let got = merkle::root_from_proof(index as u64, size, &merkle::leaf_hash(body), &path)
        .map_err(|e| tlog(format!("inclusion proof: {e}")))?;
    if got != root {
        return Err(tlog(format!(
            "the inclusion proof does not lead to the checkpoint's root {} (it gives {})",
            hex::encode(root),
            hex::encode(got)
        )));
    }
    Ok(())
}

fn mismatch(what: impl std::fmt::Display) -> Error {
    Error::Tlog(format!("logged entry does not match the bundle: {what}"))
}

/// A logged verifier (base64 of a PEM certificate) must be the leaf.
fn same_cert(b64_pem: &str, leaf_der: &[u8]) -> Result<(), Error> {
    let pem = crate::unb64(b64_pem).map_err(|e| mismatch(format!("verifier: {e}")))?;
    let cert = crate::pem::parse_all(&pem)
        .ok()
        .and_then(|b| b.into_iter().next())
        .ok_or_else(|| mismatch("verifier is not a PEM certificate"))?;
    if cert.der != leaf_der {
        return Err(mismatch("logged certificate differs"));
    }
    Ok(())
}

fn check_hashedrekord_v1(
    body: &Value,
    content: &Content<'_>,
    sig: &[u8],
    leaf_der: &[u8],
) -> Result<(), Error> {
    let Content::Message { sha256 } = content else {
        return Err(mismatch("a hashedrekord entry for a DSSE bundle"));
    };
    let s = |ptr: &str| body.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    if s("/spec/data/hash/algorithm") != "sha256"
        || !s("/spec/data/hash/value").eq_ignore_ascii_case(&hex::encode(sha256))
    {
        return Err(mismatch("logged digest is not the file's sha256"));
    }
    if crate::unb64(s("/spec/signature/content")).ok().as_deref() != Some(sig) {
        return Err(mismatch("logged signature differs"));
    }
    same_cert(s("/spec/signature/publicKey/content"), leaf_der)
}

fn check_dsse_v1(
    body: &Value,
    content: &Content<'_>,
    sig: &[u8],
    leaf_der: &[u8],
) -> Result<(), Error> {
    let Content::Dsse { payload, .. } = content else {
        return Err(mismatch("a dsse entry for a message-signature bundle"));
    };
    let s = |v: &Value, ptr: &str| {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if s(body, "/spec/payloadHash/algorithm") != "sha256"
        || !s(body, "/spec/payloadHash/value")
            .eq_ignore_ascii_case(&hex::encode(crate::sha256(payload)))
    {
        return Err(mismatch("logged payload hash is not the payload's sha256"));
    }
    let sigs = body
        .pointer("/spec/signatures")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [one] = sigs else {
        return Err(mismatch(format!(
            "{} logged signatures, expected one",
            sigs.len()
        )));
    };
    if crate::unb64(&s(one, "/signature")).ok().as_deref() != Some(sig) {
        return Err(mismatch("logged signature differs"));
    }
    same_cert(&s(one, "/verifier"), leaf_der)
}

fn check_hashedrekord_v2(
    body: &Value,
    content: &Content<'_>,
    sig: &[u8],
    leaf_der: &[u8],
) -> Result<(), Error> {
    let spec = &body["spec"]["hashedRekordV002"];
    let s = |ptr: &str| spec.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    let want = match content {
        Content::Message { sha256 } => sha256.to_vec(),
        Content::Dsse {
            payload_type,
            payload,
        } => crate::sha256(&crate::bundle::dsse_pae(payload_type, payload)).to_vec(),
    };
    if s("/data/algorithm") != "SHA2_256" || crate::unb64(s("/data/digest")).ok() != Some(want) {
        return Err(mismatch("logged digest differs (SHA2_256 expected)"));
    }
    if crate::unb64(s("/signature/content")).ok().as_deref() != Some(sig) {
        return Err(mismatch("logged signature differs"));
    }
    if crate::unb64(s("/signature/verifier/x509Certificate/rawBytes"))
        .ok()
        .as_deref()
        != Some(leaf_der)
    {
        return Err(mismatch("logged certificate differs"));
    }
    Ok(())
}
