//! The node API's certificates (docs/formats/api.md): ECDSA P-256 keys and X.509 v3
//! certificates for a CA, a node's server certificate and a client's certificate.
//!
//! In: fresh keys from the kernel's random source ([`new_key`]), or keys read back from PEM;
//! the subject, the kind of certificate and its validity window in Unix seconds. Out: DER
//! certificates (with PEM helpers), signed ecdsa-with-SHA256 by the issuer's key. The
//! extensions are what a WebPKI verifier (rustls) asks for: a CA has basicConstraints
//! `CA:TRUE` and keyCertSign; a server certificate extendedKeyUsage serverAuth and its
//! names (DNS and IP subjectAltNames); a client certificate clientAuth.
//!
//! Certificates are secrets' companions, not build outputs: keys are random and the
//! validity is taken from the caller's clock.

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::oid::AssociatedOid;
use der::{Decode, Encode};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use signature::Signer;
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use std::io::Read;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

pub use p256::ecdsa::SigningKey;

/// ecdsa-with-SHA256.
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// Bound on PEM text read from configurations.
const MAX_PEM: usize = 64 << 10;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel's random source.
    #[error("reading /dev/urandom: {0}")]
    Random(#[from] std::io::Error),
    /// Encoding or decoding ASN.1.
    #[error("{0}: {1}")]
    Der(&'static str, String),
    /// PEM text that is not what it should be.
    #[error("PEM: {0}")]
    Pem(String),
    /// A key of another kind.
    #[error("{0}")]
    Key(String),
}

fn der_err(what: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| Error::Der(what, e.to_string())
}

/// A fresh P-256 key from `/dev/urandom`.
pub fn new_key() -> Result<SigningKey, Error> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut seed = [0u8; 32];
        f.read_exact(&mut seed)?;
        // a scalar of zero or above the order is refused: draw again (probability ~2^-32)
        if let Ok(k) = SigningKey::from_slice(&seed) {
            return Ok(k);
        }
    }
}

/// What a certificate is for.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A certificate authority (self-signed when it is its own issuer).
    Ca,
    /// A TLS server with these names.
    Server {
        /// DNS names.
        dns: Vec<String>,
        /// IP addresses.
        ips: Vec<IpAddr>,
    },
    /// A TLS client.
    Client,
}

/// The issuer of a certificate: its certificate (for its name) and key.
#[derive(Debug)]
pub struct Issuer<'a> {
    /// The issuer's certificate (DER).
    pub cert_der: &'a [u8],
    /// The issuer's key.
    pub key: &'a SigningKey,
}

fn time(secs: u64) -> Result<Time, Error> {
    // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050
    if secs < 2_524_608_000 {
        Ok(Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(secs)).map_err(der_err("time"))?,
        ))
    } else {
        Ok(Time::GeneralTime(
            GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
                .map_err(der_err("time"))?,
        ))
    }
}

fn extension<T: AssociatedOid + Encode>(critical: bool, v: &T) -> Result<Extension, Error> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(v.to_der().map_err(der_err("extension"))?)
            .map_err(der_err("extension"))?,
    })
}

/// keyUsage digitalSignature (critical) and extendedKeyUsage `purpose`: an end entity.
fn leaf(purpose: ObjectIdentifier) -> Result<[Extension; 2], Error> {
    Ok([
        extension(true, &KeyUsage(KeyUsages::DigitalSignature.into()))?,
        extension(false, &ExtendedKeyUsage(vec![purpose]))?,
    ])
}

/// Issues a certificate for `subject` (an RFC 4514 string such as `O=os:admin,CN=admin`)
/// and `key`'s public key, valid from `not_before` to `not_after` (Unix seconds), signed by
/// `issuer` (self-signed when `None`). Returns the DER.
pub fn issue(
    subject: &str,
    key: &SigningKey,
    kind: &Kind,
    issuer: Option<&Issuer<'_>>,
    not_before: u64,
    not_after: u64,
) -> Result<Vec<u8>, Error> {
    let subject_name = Name::from_str(subject).map_err(|e| Error::Der("subject", e.to_string()))?;
    let (issuer_name, signer) = match issuer {
        None => (subject_name.clone(), key),
        Some(i) => (
            Certificate::from_der(i.cert_der)
                .map_err(der_err("the issuer's certificate"))?
                .tbs_certificate
                .subject,
            i.key,
        ),
    };
    let spki_der = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| Error::Key(e.to_string()))?;
    let mut serial = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut serial)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let alg = AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    };
    use der::oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
    let mut extensions = Vec::new();
    match kind {
        Kind::Ca => {
            extensions.push(extension(
                true,
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: None,
                },
            )?);
            extensions.push(extension(
                true,
                &KeyUsage(
                    KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature,
                ),
            )?);
        }
        Kind::Server { dns, ips } => {
            extensions.extend(leaf(ID_KP_SERVER_AUTH)?);
            let mut names = Vec::new();
            for d in dns {
                names.push(GeneralName::DnsName(
                    Ia5String::new(d).map_err(der_err("a DNS name"))?,
                ));
            }
            for ip in ips {
                let bytes = match ip {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                names.push(GeneralName::IpAddress(
                    OctetString::new(bytes).map_err(der_err("an IP address"))?,
                ));
            }
            if !names.is_empty() {
                extensions.push(extension(false, &SubjectAltName(names))?);
            }
        }
        Kind::Client => extensions.extend(leaf(ID_KP_CLIENT_AUTH)?),
    }
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(der_err("serial"))?,
        signature: alg.clone(),
        issuer: issuer_name,
        validity: Validity {
            not_before: time(not_before)?,
            not_after: time(not_after)?,
        },
        subject: subject_name,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .map_err(der_err("the public key"))?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err("the certificate"))?;
    let sig: p256::ecdsa::DerSignature = signer.sign(&tbs_der);
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.as_bytes()).map_err(der_err("the signature"))?,
    }
    .to_der()
    .map_err(der_err("the certificate"))
}

/// PEM text of `der` under `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of the first PEM block labelled `label` in `text`.
pub fn from_pem(text: &str, label: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine as _;
    if text.len() > MAX_PEM {
        return Err(Error::Pem(format!("longer than {MAX_PEM} bytes")));
    }
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| Error::Pem(format!("no {begin}")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| Error::Pem(format!("no {end}")))?
        + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::Pem(format!("{label}: {e}")))
}

/// The PKCS#8 DER of `key`.
pub fn key_pkcs8(key: &SigningKey) -> Result<Vec<u8>, Error> {
    Ok(key
        .to_pkcs8_der()
        .map_err(|e| Error::Key(e.to_string()))?
        .as_bytes()
        .to_vec())
}

/// A P-256 key from PEM: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`. Other kinds (Talos
/// makes Ed25519 CAs by default) are refused by name.
pub fn key_from_pem(text: &str) -> Result<SigningKey, Error> {
    if let Ok(der) = from_pem(text, "EC PRIVATE KEY") {
        return p256::SecretKey::from_sec1_der(&der)
            .map(SigningKey::from)
            .map_err(|e| Error::Key(format!("EC PRIVATE KEY: {e}")));
    }
    if text.contains("-----BEGIN ED25519 PRIVATE KEY-----") {
        return Err(Error::Key(
            "an Ed25519 key: only ECDSA P-256 keys are supported".into(),
        ));
    }
    let der = from_pem(text, "PRIVATE KEY")?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| {
        Error::Key(format!(
            "PRIVATE KEY: not an ECDSA P-256 key ({e}); only P-256 keys are supported"
        ))
    })
}

/// The organization names (`O=`) of the certificate's subject: Talos's roles.
pub fn organizations(cert_der: &[u8]) -> Result<Vec<String>, Error> {
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    let cert = Certificate::from_der(cert_der).map_err(der_err("the certificate"))?;
    let org = der::oid::db::rfc4519::ORGANIZATION_NAME;
    let mut out = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter().filter(|a| a.oid == org) {
            if let Ok(s) = atv.value.decode_as::<Utf8StringRef<'_>>() {
                out.push(s.as_str().to_string());
            } else if let Ok(s) = atv.value.decode_as::<PrintableStringRef<'_>>() {
                out.push(s.as_str().to_string());
            }
        }
    }
    Ok(out)
}

/// Checks that `cert_der` parses and carries `key`'s public key.
pub fn check_pair(cert_der: &[u8], key: &SigningKey) -> Result<(), Error> {
    let cert = Certificate::from_der(cert_der).map_err(der_err("the certificate"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(der_err("the certificate's key"))?;
    let ours = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| Error::Key(e.to_string()))?;
    if spki != ours.as_bytes() {
        return Err(Error::Key(
            "the key does not belong to the certificate".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ca_server_and_client_round_trip() {
        let ca_key = new_key().unwrap();
        let ca = issue("O=talos,CN=ca", &ca_key, &Kind::Ca, None, 0, 4_000_000_000).unwrap();
        let issuer = Issuer {
            cert_der: &ca,
            key: &ca_key,
        };
        let k = new_key().unwrap();
        let server = issue(
            "CN=node",
            &k,
            &Kind::Server {
                dns: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
            Some(&issuer),
            0,
            4_000_000_000,
        )
        .unwrap();
        let c = Certificate::from_der(&server).unwrap();
        assert_eq!(c.tbs_certificate.issuer.to_string(), "O=talos,CN=ca");
        assert_eq!(c.tbs_certificate.extensions.unwrap().len(), 3);
        check_pair(&server, &k).unwrap();
        let client = issue("O=os:admin,O=x", &k, &Kind::Client, Some(&issuer), 0, 1).unwrap();
        let mut orgs = organizations(&client).unwrap();
        orgs.sort();
        assert_eq!(orgs, ["os:admin", "x"]);
        assert!(organizations(&server).unwrap().is_empty());
        assert!(check_pair(&server, &ca_key).is_err());
        let pem = to_pem("PRIVATE KEY", &key_pkcs8(&k).unwrap());
        let back = key_from_pem(&pem).unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        assert_eq!(
            from_pem(&to_pem("CERTIFICATE", &ca), "CERTIFICATE").unwrap(),
            ca
        );
        assert!(
            key_from_pem(
                "-----BEGIN ED25519 PRIVATE KEY-----\nAA==\n-----END ED25519 PRIVATE KEY-----\n"
            )
            .unwrap_err()
            .to_string()
            .contains("Ed25519")
        );
    }
}
