//! Signed certificate timestamps (RFC 6962 §3) embedded in Fulcio certificates;
//! docs/formats/signatures.md, "SCTs".
//!
//! In: the leaf certificate, the CA certificate that issued it, and the trust root's CT log
//! keys. Out: `Ok` when at least one SCT of a trusted CT log verifies over the precertificate
//! (the leaf's TBS without the SCT list extension), or a message saying why none does.

use der::Encode as _;

use crate::trust::TlogKey;
use crate::x509::Cert;

/// Extension holding the SCT list.
pub(crate) const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";
/// At most this many SCTs are looked at.
const MAX_SCTS: usize = 16;

/// One parsed SCT (v1).
#[derive(Debug)]
struct Sct<'a> {
    /// TLS (hash, signature) algorithm numbers.
    algorithm: (u8, u8),
    log_id: &'a [u8],
    timestamp_ms: u64,
    extensions: &'a [u8],
    signature: &'a [u8],
}

/// A big-endian reader over TLS-encoded bytes.
struct Tls<'a>(&'a [u8]);

impl<'a> Tls<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("SCT list is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn int(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
    fn vec(&mut self, len_bytes: usize) -> Result<&'a [u8], String> {
        let n = self.int(len_bytes)? as usize;
        self.take(n)
    }
}

fn parse_list(ext_value: &[u8]) -> Result<Vec<Sct<'_>>, String> {
    use der::Decode as _;
    // the extension value is a DER OCTET STRING holding the TLS-encoded list
    let inner = der::asn1::OctetStringRef::from_der(ext_value)
        .map_err(|e| format!("SCT extension is not an OCTET STRING: {e}"))?;
    let mut list = Tls(inner.as_bytes());
    let mut body = Tls(list.vec(2)?);
    if !list.0.is_empty() {
        return Err("trailing bytes after the SCT list".into());
    }
    let mut out = Vec::new();
    while !body.0.is_empty() {
        if out.len() == MAX_SCTS {
            return Err(format!("more than {MAX_SCTS} SCTs"));
        }
        let mut s = Tls(body.vec(2)?);
        if s.int(1)? != 0 {
            return Err("SCT version is not v1".into());
        }
        let log_id = s.take(32)?;
        let timestamp_ms = s.int(8)?;
        let extensions = s.vec(2)?;
        let (hash, sig_alg) = (s.int(1)?, s.int(1)?);
        let signature = s.vec(2)?;
        if !s.0.is_empty() {
            return Err("trailing bytes in an SCT".into());
        }
        out.push(Sct {
            algorithm: (hash as u8, sig_alg as u8),
            log_id,
            timestamp_ms,
            extensions,
            signature,
        });
    }
    Ok(out)
}

/// Verifies the SCTs embedded in `leaf` (issued by `issuer`) against `ctlogs`: at least one
/// must be by a trusted CT log, inside that log key's validity window, and verify.
pub(crate) fn verify_embedded(
    leaf: &Cert,
    issuer: &Cert,
    ctlogs: &[TlogKey],
) -> Result<(), String> {
    let exts = leaf
        .cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or(&[]);
    let found: Vec<_> = exts
        .iter()
        .filter(|e| e.extn_id.to_string() == OID_SCT_LIST)
        .collect();
    let ext = match found.as_slice() {
        [] => {
            return Err(format!(
                "{} carries no SCT (extension {OID_SCT_LIST}): it was not logged in certificate transparency",
                leaf.name()
            ));
        }
        [one] => one,
        _ => return Err("certificate carries more than one SCT list extension".into()),
    };
    let scts = parse_list(ext.extn_value.as_bytes())?;
    if ctlogs.is_empty() {
        return Err("the trust root lists no certificate-transparency log (ctlogs)".into());
    }
    // the precertificate: the TBS without the SCT list, other extensions in order
    let mut tbs = leaf.cert.tbs_certificate.clone();
    tbs.extensions = Some(
        exts.iter()
            .filter(|e| e.extn_id.to_string() != OID_SCT_LIST)
            .cloned()
            .collect(),
    );
    let tbs = tbs
        .to_der()
        .map_err(|e| format!("re-encoding the precertificate: {e}"))?;
    let issuer_spki = issuer
        .cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("issuer key: {e}"))?;
    let issuer_key_hash = crate::sha256(&issuer_spki);
    let mut reasons = Vec::new();
    for sct in &scts {
        // SHA-256 with ECDSA (4, 3) is what Sigstore's CT logs use; Ed25519 (8, 7) too
        if !matches!(sct.algorithm, (4, 3) | (8, 7) | (0, 7)) {
            reasons.push(format!(
                "SCT signature algorithm {:?} is not supported",
                sct.algorithm
            ));
            continue;
        }
        let id = hex::encode(sct.log_id);
        let Some(log) = ctlogs.iter().find(|l| l.log_id.eq_ignore_ascii_case(&id)) else {
            reasons.push(format!("SCT from unknown log {id}"));
            continue;
        };
        let secs = (sct.timestamp_ms / 1000) as i64;
        if !log.valid_at(secs) {
            reasons.push(format!(
                "SCT time {secs} is outside the validity of CT log {}",
                log.base_url
            ));
            continue;
        }
        if tbs.len() >= 1 << 24 {
            return Err("precertificate too large".into());
        }
        let signed = signed_input(sct.timestamp_ms, &issuer_key_hash, &tbs, sct.extensions);
        match log.key.verify(&signed, sct.signature) {
            Ok(()) => return Ok(()),
            Err(_) => reasons.push(format!(
                "SCT signature does not verify with the key of CT log {}",
                log.base_url
            )),
        }
    }
    Err(format!("no valid SCT: {}", reasons.join("; ")))
}

/// The SCT list extension value (DER OCTET STRING of the TLS list) for SCTs given as
/// `(log_id, timestamp_ms, signature)`: what the `testing` stand-in embeds.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn encode_list(scts: &[([u8; 32], u64, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, ts, sig) in scts {
        let mut s = vec![0u8];
        s.extend_from_slice(id);
        s.extend_from_slice(&ts.to_be_bytes());
        s.extend_from_slice(&0u16.to_be_bytes());
        s.extend_from_slice(&[4, 3]);
        s.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        s.extend_from_slice(sig);
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(&s);
    }
    let mut list = (body.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&body);
    der::asn1::OctetString::new(list)
        .and_then(|o| o.to_der())
        .unwrap_or_default()
}

/// The bytes a CT log signs for a precertificate entry (RFC 6962 §3.2); `tbs` is below 16 MiB.
pub(crate) fn signed_input(
    timestamp_ms: u64,
    issuer_key_hash: &[u8; 32],
    tbs: &[u8],
    extensions: &[u8],
) -> Vec<u8> {
    let mut signed = vec![0u8, 0u8];
    signed.extend_from_slice(&timestamp_ms.to_be_bytes());
    signed.extend_from_slice(&1u16.to_be_bytes());
    signed.extend_from_slice(issuer_key_hash);
    let n = tbs.len();
    signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    signed.extend_from_slice(tbs);
    signed.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    signed.extend_from_slice(extensions);
    signed
}
