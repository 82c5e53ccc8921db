//! The Sigstore trust root (`trusted_root.json`, media type
//! `application/vnd.dev.sigstore.trustedroot+json;version=0.1`).
//!
//! In: the JSON bytes. Out: a [`TrustRoot`] holding the Fulcio CA certificates
//! (`certificateAuthorities[].certChain.certificates[].rawBytes`) and the Rekor log keys
//! (`tlogs[].publicKey.rawBytes`, identified by `logId.keyId`), each with its `validFor`
//! window, the certificate-transparency log keys (`ctlogs[]`, whose SCTs Fulcio embeds in its
//! certificates) and the RFC 3161 timestamp authorities (`timestampAuthorities[]`). Log keys
//! that are not ECDSA P-256, P-384 or Ed25519 are skipped.

use serde::Deserialize;

use crate::x509::Cert;
use crate::{Error, PublicKey};

/// Fulcio CAs and Rekor keys to verify keyless signatures offline.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    pub(crate) cas: Vec<CertificateAuthority>,
    pub(crate) tlogs: Vec<TlogKey>,
    pub(crate) ctlogs: Vec<TlogKey>,
    pub(crate) tsas: Vec<CertificateAuthority>,
}

/// One CA of the trust root: its chain, leaf-most first, root last, and the window in which
/// the trust root says it issued certificates (`validFor`; a retired CA has an end).
#[derive(Debug, Clone)]
pub(crate) struct CertificateAuthority {
    pub chain: Vec<Cert>,
    /// Unix seconds.
    pub valid_from: Option<i64>,
    /// Unix seconds.
    pub valid_to: Option<i64>,
}

/// One transparency (Rekor) or certificate-transparency log key.
#[derive(Debug, Clone)]
pub(crate) struct TlogKey {
    /// Lowercase hex of the log ID (`logId.keyId`: sha256 of the SPKI DER for Rekor v1 and CT
    /// logs, the checkpoint key ID for Rekor v2; the first 4 bytes are a checkpoint's key hint).
    pub log_id: String,
    pub base_url: String,
    pub key: PublicKey,
    /// Unix seconds.
    pub valid_from: Option<i64>,
    /// Unix seconds.
    pub valid_to: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<JsonTlog>,
    #[serde(default)]
    certificate_authorities: Vec<JsonCa>,
    #[serde(default)]
    ctlogs: Vec<JsonTlog>,
    #[serde(default)]
    timestamp_authorities: Vec<JsonCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonTlog {
    #[serde(default)]
    base_url: String,
    public_key: JsonPublicKey,
    #[serde(default)]
    log_id: Option<JsonLogId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonPublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<JsonValidFor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonLogId {
    key_id: String,
}

#[derive(Deserialize)]
struct JsonValidFor {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonCa {
    cert_chain: JsonCertChain,
    #[serde(default)]
    valid_for: Option<JsonValidFor>,
}

#[derive(Deserialize)]
struct JsonCertChain {
    certificates: Vec<JsonRawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRawBytes {
    raw_bytes: String,
}

/// A `validFor` window as Unix seconds; `what` names it in errors.
fn window(v: Option<&JsonValidFor>, what: &str) -> Result<(Option<i64>, Option<i64>), Error> {
    let Some(v) = v else {
        return Ok((None, None));
    };
    let at = |t: &Option<String>, end: &str| {
        t.as_deref()
            .map(|t| {
                parse_rfc3339(t)
                    .map_err(|e| Error::TrustRoot(format!("{what}.validFor.{end}: {e}")))
            })
            .transpose()
    };
    Ok((at(&v.start, "start")?, at(&v.end, "end")?))
}

/// Parses `certificateAuthorities` / `timestampAuthorities` (`what`).
fn parse_cas(list: &[JsonCa], what: &str) -> Result<Vec<CertificateAuthority>, Error> {
    let mut cas = Vec::new();
    for (i, ca) in list.iter().enumerate() {
        let mut chain = Vec::new();
        for (k, c) in ca.cert_chain.certificates.iter().enumerate() {
            let at = || format!("{what}[{i}].certChain.certificates[{k}]");
            let der = crate::unb64(&c.raw_bytes)
                .map_err(|e| Error::TrustRoot(format!("{}: {e}", at())))?;
            let cert =
                Cert::from_der(&der).map_err(|e| Error::TrustRoot(format!("{}: {e}", at())))?;
            chain.push(cert);
        }
        let (valid_from, valid_to) = window(ca.valid_for.as_ref(), &format!("{what}[{i}]"))?;
        cas.push(CertificateAuthority {
            chain,
            valid_from,
            valid_to,
        });
    }
    Ok(cas)
}

/// Parses `tlogs` / `ctlogs` (`what`); keys of other types (RSA) are skipped.
fn parse_logs(list: &[JsonTlog], what: &str) -> Result<Vec<TlogKey>, Error> {
    let mut logs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let der = crate::unb64(&t.public_key.raw_bytes)
            .map_err(|e| Error::TrustRoot(format!("{what}[{i}].publicKey.rawBytes: {e}")))?;
        let Ok(key) = PublicKey::from_spki_der(&der) else {
            continue;
        };
        let log_id = match &t.log_id {
            Some(id) => hex::encode(
                crate::unb64(&id.key_id)
                    .map_err(|e| Error::TrustRoot(format!("{what}[{i}].logId.keyId: {e}")))?,
            ),
            None => hex::encode(crate::sha256(&der)),
        };
        let (valid_from, valid_to) = window(
            t.public_key.valid_for.as_ref(),
            &format!("{what}[{i}].publicKey"),
        )?;
        logs.push(TlogKey {
            log_id,
            base_url: t.base_url.clone(),
            key,
            valid_from,
            valid_to,
        });
    }
    Ok(logs)
}

/// Whether `t` lies in `[from, to]` (both inclusive, either open).
fn in_window(from: Option<i64>, to: Option<i64>, t: i64) -> bool {
    !(from.is_some_and(|f| t < f) || to.is_some_and(|e| t > e))
}

impl TlogKey {
    /// The host of `baseUrl` (a checkpoint's origin / key name).
    pub fn host(&self) -> &str {
        let u = self
            .base_url
            .split_once("://")
            .map_or(&*self.base_url, |x| x.1);
        u.split(['/', '?', '#']).next().unwrap_or(u)
    }

    /// Whether `t` (Unix seconds) is inside the key's `validFor` window.
    pub fn valid_at(&self, t: i64) -> bool {
        in_window(self.valid_from, self.valid_to, t)
    }
}

impl CertificateAuthority {
    /// Whether `t` (Unix seconds) is inside the authority's `validFor` window.
    pub fn valid_at(&self, t: i64) -> bool {
        in_window(self.valid_from, self.valid_to, t)
    }
}

impl TrustRoot {
    /// Parses `trusted_root.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let j: Json = serde_json::from_slice(bytes).map_err(|e| Error::TrustRoot(e.to_string()))?;
        if !j.media_type.is_empty()
            && !j
                .media_type
                .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(Error::TrustRoot(format!(
                "unexpected mediaType {:?}",
                j.media_type
            )));
        }
        let cas = parse_cas(&j.certificate_authorities, "certificateAuthorities")?;
        let tlogs = parse_logs(&j.tlogs, "tlogs")?;
        let ctlogs = parse_logs(&j.ctlogs, "ctlogs")?;
        let tsas = parse_cas(&j.timestamp_authorities, "timestampAuthorities")?;
        if cas.iter().all(|c| c.chain.is_empty()) {
            return Err(Error::TrustRoot("no certificate authority".into()));
        }
        Ok(Self {
            cas,
            tlogs,
            ctlogs,
            tsas,
        })
    }

    /// Number of usable transparency log keys.
    pub fn tlog_count(&self) -> usize {
        self.tlogs.len()
    }

    /// Number of usable certificate-transparency log keys.
    pub fn ctlog_count(&self) -> usize {
        self.ctlogs.len()
    }

    /// Number of timestamp authorities.
    pub fn tsa_count(&self) -> usize {
        self.tsas.len()
    }

    /// Number of certificate authorities.
    pub fn ca_count(&self) -> usize {
        self.cas.len()
    }
}

/// Parses an RFC 3339 timestamp (`2021-10-07T13:56:59Z`, fractions and offsets allowed) to
/// Unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let err = || format!("invalid RFC 3339 time {s:?}");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(err)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(err());
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err(err()),
    };
    Ok(civil::days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset)
}
