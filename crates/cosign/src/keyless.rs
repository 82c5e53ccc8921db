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
    let mut skipped = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let entry = |err: Error| match err {
            Error::Tlog(m) => Error::Tlog(format!("entry {i}: {m}")),
            Error::Bundle(m) => Error::Bundle(format!("tlogEntries[{i}]: {m}")),
            Error::Unsupported(m) => Error::Unsupported(format!("tlogEntries[{i}]: {m}")),
            other => other,
        };
        match verify_entry(e, version, content, sig, &leaf, trust).map_err(entry)? {
            Entry::UnknownLog(id) => skipped.push(format!(
                "entry {i}: log ID {id} is not a transparency log of the trust root"
            )),
            Entry::Verified { log, index, time } => {
                logged.push(format!("{} index {index}", log.host()));
                if let Some(t) = time {
                    times.push(("the integrated time", t));
                }
            }
        }
    }
    if logged.is_empty() {
        return Err(Error::Tlog(format!(
            "no entry is in a transparency log of the trust root ({})",
            skipped.join("; ")
        )));
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
    // as sigstore-go: a timestamp that does not verify (another TSA, another signature) is
    // not counted; it only matters if no verified time remains
    let mut stamp_errors = Vec::new();
    for (i, ts) in stamps.iter().enumerate() {
        let verified = b64_field(ts, "/signedTimestamp")
            .map_err(|e| e.to_string())
            .and_then(|der| crate::tsa::verify(&der, sig, trust));
        match verified {
            Ok(t) => times.push(("the signed timestamp", t)),
            Err(e) => stamp_errors.push(format!("timestamp {i}: {e}")),
        }
    }
    if times.is_empty() {
        if !stamp_errors.is_empty() {
            return Err(Error::Timestamp(format!(
                "no verified signing time: {}",
                stamp_errors.join("; ")
            )));
        }
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
                "{what} {} is outside the certificate validity [{}, {}]",
                civil::rfc3339(*t),
                civil::rfc3339(nb),
                civil::rfc3339(na)
            )));
        }
        ca = Some(
            crate::verify::verify_chain(&leaf, trust, *t)
                .map_err(|e| Error::Chain(format!("at {what}: {e}")))?,
        );
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

/// What one `tlogEntries[]` element proved.
enum Entry<'t> {
    /// Logged in `log` at `index` (verified by the SET or the proof), with the integrated time
    /// when a SET verified it.
    Verified {
        log: &'t TlogKey,
        index: i64,
        time: Option<i64>,
    },
    /// In a log the trust root does not list (skipped, as sigstore-go does).
    UnknownLog(String),
}

/// Verifies one `tlogEntries[]` element against the trust root and the bundle.
fn verify_entry<'t>(
    e: &Value,
    version: u8,
    content: &Content<'_>,
    sig: &[u8],
    leaf: &Cert,
    trust: &'t TrustRoot,
) -> Result<Entry<'t>, Error> {
    let key_id = hex::encode(b64_field(e, "/logId/keyId")?);
    let Some(log) = trust
        .tlogs
        .iter()
        .find(|t| t.log_id.eq_ignore_ascii_case(&key_id))
    else {
        return Ok(Entry::UnknownLog(key_id));
    };
    let body = b64_field(e, "/canonicalizedBody")?;
    let kind = e.pointer("/kindVersion/kind").and_then(Value::as_str);
    let kv = e.pointer("/kindVersion/version").and_then(Value::as_str);
    let (Some(kind), Some(kv)) = (kind, kv) else {
        return Err(Error::Bundle("entry without kindVersion".into()));
    };
    let v2 = match (kind, kv) {
        ("hashedrekord", "0.0.1") | ("dsse", "0.0.1") => false,
        ("hashedrekord", "0.0.2") => true,
        _ => {
            return Err(Error::Unsupported(format!(
                "transparency log entry kind {kind} {kv} (hashedrekord 0.0.1/0.0.2, dsse 0.0.1)"
            )));
        }
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
        crate::verify::check_set(log, &payload, &set)?;
        time = Some(integrated_time);
    } else if version == 1 {
        return Err(Error::Tlog(
            "a v0.1 bundle's entry needs an inclusion promise (SET)".into(),
        ));
    }
    // an integrated time, verified or not, lies inside the certificate's validity
    let (nb, na) = leaf.validity();
    if integrated_time != 0 && (integrated_time < nb || integrated_time > na) {
        return Err(Error::Tlog(format!(
            "integratedTime {} is outside the certificate validity [{}, {}]",
            civil::rfc3339(integrated_time),
            civil::rfc3339(nb),
            civil::rfc3339(na)
        )));
    }
    let mut index = time.map(|_| log_index);
    match e.get("inclusionProof") {
        Some(p) => {
            let proved = verify_inclusion(p, &body, log, v2.then_some(log_index))?;
            index.get_or_insert(proved);
        }
        None if version >= 2 => {
            return Err(Error::Tlog(
                "a v0.2+ bundle's entry needs an inclusion proof".into(),
            ));
        }
        None => {}
    }
    match (kind, v2) {
        ("hashedrekord", false) => check_hashedrekord_v1(&body_json, content, sig, &leaf.der)?,
        ("dsse", _) => check_dsse_v1(&body_json, content, sig, &leaf.der)?,
        _ => check_hashedrekord_v2(&body_json, content, sig, leaf)?,
    }
    Ok(Entry::Verified {
        log,
        index: index.unwrap_or(log_index),
        time,
    })
}

/// The inclusion proof leads from the body to the root that the log's checkpoint signs. Rekor
/// v1 uses the proof's own index, size and root (which must be the checkpoint's); Rekor v2
/// (`v2_index`) the entry's index and the checkpoint's size and root.
fn verify_inclusion(
    p: &Value,
    body: &[u8],
    log: &TlogKey,
    v2_index: Option<i64>,
) -> Result<i64, Error> {
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
    Ok(index)
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
    leaf: &Cert,
) -> Result<(), Error> {
    let spec = &body["spec"]["hashedRekordV002"];
    let s = |ptr: &str| spec.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    // Rekor v2 logs a digest made with the signing key's hash
    let p384 = leaf
        .public_key()
        .is_ok_and(|k| k.algorithm() == "ECDSA P-384");
    let (algorithm, want) = match content {
        Content::Message { .. } if p384 => {
            return Err(Error::Unsupported(
                "a Rekor v2 message signature by a P-384 key (logged with SHA-384 of the file)"
                    .into(),
            ));
        }
        Content::Message { sha256 } => ("SHA2_256", sha256.to_vec()),
        Content::Dsse {
            payload_type,
            payload,
        } => {
            let pae = crate::bundle::dsse_pae(payload_type, payload);
            if p384 {
                use sha2::Digest as _;
                ("SHA2_384", sha2::Sha384::digest(&pae).to_vec())
            } else {
                ("SHA2_256", crate::sha256(&pae).to_vec())
            }
        }
    };
    if s("/data/algorithm") != algorithm || crate::unb64(s("/data/digest")).ok() != Some(want) {
        return Err(mismatch(format!(
            "logged digest differs ({algorithm} expected)"
        )));
    }
    if crate::unb64(s("/signature/content")).ok().as_deref() != Some(sig) {
        return Err(mismatch("logged signature differs"));
    }
    if crate::unb64(s("/signature/verifier/x509Certificate/rawBytes"))
        .ok()
        .as_deref()
        != Some(&leaf.der[..])
    {
        return Err(mismatch("logged certificate differs"));
    }
    Ok(())
}
