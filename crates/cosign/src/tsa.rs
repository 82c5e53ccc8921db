//! RFC 3161 signed timestamps in Sigstore bundles (`timestampVerificationData`);
//! docs/formats/signatures.md, "Signed timestamps".
//!
//! In: a DER `TimeStampResp`, the signature bytes it timestamps, and the trust root's
//! timestamp authorities. Out: the verified `genTime` (Unix seconds), which then stands as the
//! signing time for certificate checks, or a message naming what failed.
//!
//! Checks: status granted; the token is CMS SignedData of a TSTInfo; the message imprint is
//! SHA-256/384/512 of the signature; the signed attributes carry the TSTInfo's digest and are
//! signed (ECDSA) by a certificate that is, or is issued by, a certificate of a trusted TSA's
//! chain, with the time-stamping EKU, all valid at `genTime`, which lies in the TSA's
//! `validFor` window.

use der::asn1::AnyRef;
use der::{Decode as _, Encode as _, Reader as _, Tagged as _};
use sha2::Digest as _;

use crate::trust::{CertificateAuthority, TrustRoot};
use crate::x509::Cert;

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
/// `id-ecPublicKey` as a signature algorithm: ECDSA with the SignerInfo's digest algorithm.
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub(crate) const OID_EKU_TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";
/// A timestamp response larger than this is refused unread.
const MAX_RESPONSE: usize = 64 * 1024;

/// `data` hashed with the digest algorithm `oid`.
pub(crate) fn digest(oid: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match oid {
        OID_SHA256 => sha2::Sha256::digest(data).to_vec(),
        OID_SHA384 => sha2::Sha384::digest(data).to_vec(),
        OID_SHA512 => sha2::Sha512::digest(data).to_vec(),
        other => return Err(format!("digest algorithm {other} is not SHA-256/384/512")),
    })
}

/// The child TLVs of the constructed TLV `tlv`.
fn children(tlv: &[u8]) -> Result<Vec<&[u8]>, String> {
    let value = AnyRef::from_der(tlv)
        .map_err(|e| format!("malformed DER: {e}"))?
        .value();
    let mut r = der::SliceReader::new(value).map_err(|e| format!("malformed DER: {e}"))?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(r.tlv_bytes().map_err(|e| format!("malformed DER: {e}"))?);
    }
    Ok(out)
}

/// The raw signed attributes of the first SignerInfo of the SignedData TLV `sd`, re-tagged as
/// the SET that was signed (the decoded form re-sorts them, the signature covers the bytes).
fn raw_signed_attrs(sd: &[u8]) -> Result<Vec<u8>, String> {
    let parts = children(sd)?;
    let infos = parts.last().ok_or("SignedData is empty")?;
    let first = *children(infos)?
        .first()
        .ok_or("SignedData has no SignerInfo")?;
    let attrs = children(first)?
        .into_iter()
        .find(|t| t.first() == Some(&0xa0))
        .ok_or("the SignerInfo has no signed attributes")?;
    let mut out = attrs.to_vec();
    out[0] = 0x31;
    Ok(out)
}

/// A GeneralizedTime TLV (`YYYYMMDDHHMMSS[.f+]Z`, RFC 3161 §2.4.2) as Unix seconds.
fn generalized_time(tlv: &[u8]) -> Result<i64, String> {
    let any = AnyRef::from_der(tlv).map_err(|e| format!("TSTInfo genTime: {e}"))?;
    let b = any.value();
    let bad = || {
        format!(
            "TSTInfo genTime {:?} is not a UTC GeneralizedTime",
            String::from_utf8_lossy(&b[..b.len().min(32)])
        )
    };
    // bytes, not str: every check before any slicing
    if any.tag() != der::Tag::GeneralizedTime
        || b.len() < 15
        || b.len() > 32
        || b[b.len() - 1] != b'Z'
        || !b[..14].iter().all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    let frac = &b[14..b.len() - 1];
    if !(frac.is_empty()
        || frac.len() > 1 && frac[0] == b'.' && frac[1..].iter().all(u8::is_ascii_digit))
    {
        return Err(bad());
    }
    let d = |r: std::ops::Range<usize>| String::from_utf8_lossy(&b[r]).into_owned();
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        d(0..4),
        d(4..6),
        d(6..8),
        d(8..10),
        d(10..12),
        d(12..14)
    );
    crate::trust::parse_rfc3339(&rfc3339).map_err(|_| bad())
}

/// Verifies the DER `TimeStampResp` `response` over `signature`; returns its `genTime`.
pub(crate) fn verify(response: &[u8], signature: &[u8], trust: &TrustRoot) -> Result<i64, String> {
    if response.len() > MAX_RESPONSE {
        return Err(format!("timestamp of {} bytes", response.len()));
    }
    let resp = x509_tsp::TimeStampResp::from_der(response)
        .map_err(|e| format!("not a DER TimeStampResp: {e}"))?;
    let status = resp.status.status as u8;
    if status > 1 {
        return Err(format!("timestamp status {status} is not granted"));
    }
    let token = resp
        .time_stamp_token
        .ok_or("timestamp response has no token")?;
    if token.content_type.to_string() != OID_SIGNED_DATA {
        return Err(format!(
            "timestamp token is {}, not CMS SignedData",
            token.content_type
        ));
    }
    let sd_der = token
        .content
        .to_der()
        .map_err(|e| format!("timestamp token: {e}"))?;
    let sd = cms::signed_data::SignedData::from_der(&sd_der)
        .map_err(|e| format!("timestamp SignedData: {e}"))?;
    if sd.encap_content_info.econtent_type.to_string() != OID_TST_INFO {
        return Err("timestamp token does not carry a TSTInfo".into());
    }
    let tst_der = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("timestamp token has no content")?
        .value()
        .to_vec();
    // TSTInfo by hand: genTime may carry fractional seconds, which a strict DER
    // GeneralizedTime decoder refuses
    let fields = children(&tst_der).map_err(|e| format!("TSTInfo: {e}"))?;
    let (Some(imprint), Some(gen_time)) = (fields.get(2), fields.get(4)) else {
        return Err("TSTInfo is truncated".into());
    };
    let imprint = x509_tsp::MessageImprint::from_der(imprint)
        .map_err(|e| format!("TSTInfo messageImprint: {e}"))?;
    let gen_time = generalized_time(gen_time)?;

    // 1. It timestamps this signature.
    let want = digest(&imprint.hash_algorithm.oid.to_string(), signature)
        .map_err(|e| format!("message imprint: {e}"))?;
    if imprint.hashed_message.as_bytes() != want {
        return Err("the timestamp is of another signature (message imprint differs)".into());
    }

    // 2. The signed attributes hold the TSTInfo's digest and the right content type.
    let [si] = sd.signer_infos.0.as_slice() else {
        return Err(format!(
            "timestamp has {} signers, expected one",
            sd.signer_infos.0.len()
        ));
    };
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or("the timestamp's signer has no signed attributes")?;
    let attr = |oid: &str| {
        attrs
            .iter()
            .find(|a| a.oid.to_string() == oid)
            .and_then(|a| a.values.get(0))
    };
    let md = attr(OID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok())
        .ok_or("the timestamp's signed attributes have no message digest")?;
    if md.as_bytes() != digest(&si.digest_alg.oid.to_string(), &tst_der)? {
        return Err("the signed message digest is not the TSTInfo's".into());
    }
    let ct = attr(OID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .ok_or("the timestamp's signed attributes have no content type")?;
    if ct.to_string() != OID_TST_INFO {
        return Err("the signed content type is not TSTInfo".into());
    }

    // 3. The signer: a certificate of the token or of a trusted TSA, named by the SignerInfo.
    let cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(sid) = &si.sid else {
        return Err("the timestamp's signer is named by key identifier (unsupported)".into());
    };
    let mut candidates: Vec<Cert> = Vec::new();
    for c in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = c {
            let der = c
                .to_der()
                .map_err(|e| format!("timestamp certificate: {e}"))?;
            candidates.push(Cert::from_der(&der).map_err(|e| e.to_string())?);
        }
    }
    candidates.extend(trust.tsas.iter().flat_map(|t| t.chain.iter().cloned()));
    let signer = candidates
        .iter()
        .find(|c| {
            c.cert.tbs_certificate.issuer == sid.issuer
                && c.cert.tbs_certificate.serial_number == sid.serial_number
        })
        .ok_or("the timestamp's signing certificate is not in the token or the trust root")?;
    let signed = raw_signed_attrs(&sd_der)?;
    let digest_oid = si.digest_alg.oid.to_string();
    let hash_oid = match si.signature_algorithm.oid.to_string().as_str() {
        OID_ECDSA_SHA256 => OID_SHA256,
        OID_ECDSA_SHA384 => OID_SHA384,
        OID_ECDSA_SHA512 => OID_SHA512,
        OID_EC_PUBLIC_KEY => digest_oid.as_str(),
        other => {
            return Err(format!(
                "timestamp signature algorithm {other} (ECDSA only)"
            ));
        }
    };
    let key = signer.public_key()?;
    key.verify_prehash(&digest(hash_oid, &signed)?, si.signature.as_bytes())
        .map_err(|_| {
            format!(
                "the timestamp's signature does not verify with {}",
                signer.subject()
            )
        })?;

    // 4. The signer belongs to a TSA of the trust root that was trusted at genTime.
    let mut reasons = Vec::new();
    for tsa in &trust.tsas {
        match chain_to(signer, tsa, gen_time) {
            Ok(()) => return Ok(gen_time),
            Err(e) => reasons.push(e),
        }
    }
    Err(format!(
        "the timestamp's signer {} does not lead to a timestamp authority of the trust root{}",
        signer.subject(),
        if reasons.is_empty() {
            " (it lists none)".to_string()
        } else {
            format!(" ({})", reasons.join("; "))
        }
    ))
}

/// `signer` is a certificate of `tsa`'s chain or issued by one; every certificate on the way is
/// valid at `at`, the leaf has the time-stamping EKU, and `at` is in the TSA's window.
fn chain_to(signer: &Cert, tsa: &CertificateAuthority, at: i64) -> Result<(), String> {
    if tsa.chain.is_empty() {
        return Err("a TSA of the trust root has no certificates".into());
    }
    if !tsa.valid_at(at) {
        return Err(format!(
            "time {at} is outside the trust-root validity window of TSA {}",
            tsa.chain.first().map(Cert::subject).unwrap_or_default()
        ));
    }
    // a TSA listed with its signing certificate (not a CA) signs with that one only
    if let Some(leaf) = tsa.chain.first().filter(|c| !c.is_ca())
        && leaf.der != signer.der
    {
        return Err(format!(
            "the timestamp is signed by {}, not by the TSA's signing certificate {}",
            signer.subject(),
            leaf.subject()
        ));
    }
    if !signer.has_only_critical_eku(OID_EKU_TIME_STAMPING) {
        return Err(format!(
            "{} does not have exactly the time-stamping extended key usage, marked critical",
            signer.subject()
        ));
    }
    let mut cur = signer;
    for _ in 0..=tsa.chain.len() {
        let (nb, na) = cur.validity();
        if at < nb || at > na {
            return Err(format!(
                "{} is not valid at {at} (valid [{nb}, {na}])",
                cur.subject()
            ));
        }
        let pos = tsa.chain.iter().position(|c| c.der == cur.der);
        if pos == Some(tsa.chain.len() - 1) {
            return Ok(()); // the anchor
        }
        let next = match pos {
            Some(i) => &tsa.chain[i + 1],
            None => tsa
                .chain
                .iter()
                .find(|c| cur.verify_issued_by(c).is_ok())
                .ok_or_else(|| format!("{} is not issued by the TSA's chain", cur.subject()))?,
        };
        cur.verify_issued_by(next)?;
        if !next.is_ca() {
            return Err(format!("{} is not a CA certificate", next.subject()));
        }
        if !next.eku_allows(OID_EKU_TIME_STAMPING) {
            return Err(format!(
                "{} restricts its extended key usage to exclude time stamping",
                next.subject()
            ));
        }
        cur = next;
    }
    Err("the TSA chain does not end".into())
}
