//! An offline, deterministic stand-in for Fulcio + Rekor (feature `testing`).
//!
//! In: a seed (all keys derive from it), payloads, identities, times. Out: a
//! `trusted_root.json` for the stand-in, and keyless signature annotations (signature, leaf
//! certificate, chain, Rekor bundle with SET) exactly shaped like cosign's, plus helpers that
//! tests use to forge broken variants (re-signed SETs, altered bodies).

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use der::Encode as _;
use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime, Utf8StringRef};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::payload::{
    BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, SIGNATURE_ANNOTATION,
};
use crate::verify::{RekorBundle, RekorPayload};
use crate::{SigningKey, pem};

/// Subject of every stand-in root CA (the same for every seed, so that a certificate from
/// another seed's CA differs only by its signature).
pub const ROOT_SUBJECT: &str = "CN=sigstore-test,O=sigstore.test";
/// `baseUrl` of the stand-in Rekor.
pub const REKOR_URL: &str = "https://rekor.sigstore.test";
/// `uri` of the stand-in Fulcio.
pub const FULCIO_URL: &str = "https://fulcio.sigstore.test";

/// Root validity: 2000-01-01 .. 2049-12-31 (UTCTime range).
const ROOT_NOT_BEFORE: i64 = 946_684_800;
const ROOT_NOT_AFTER: i64 = 2_524_521_599;

/// A deterministic root CA (P-256, self-signed) and Rekor log key.
#[derive(Debug)]
pub struct Sigstore {
    seed: Vec<u8>,
    ca_key: SigningKey,
    root: Certificate,
    root_der: Vec<u8>,
    log_key: SigningKey,
    next_index: AtomicI64,
}

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const EKU_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");

fn time(secs: i64) -> Time {
    let d = Duration::from_secs(secs.max(0) as u64);
    UtcTime::from_unix_duration(d)
        .map(Time::UtcTime)
        .or_else(|_| GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime))
        .unwrap_or(Time::INFINITY)
}

fn ext(extn_id: ObjectIdentifier, critical: bool, value: Vec<u8>) -> der::Result<Extension> {
    Ok(Extension {
        extn_id,
        critical,
        extn_value: OctetString::new(value)?,
    })
}

/// Builds and signs a certificate with ECDSA-SHA256 by `signer`.
fn make_cert(
    signer: &SigningKey,
    serial: &[u8],
    issuer: Name,
    subject: Name,
    validity: (i64, i64),
    spki_der: &[u8],
    extensions: Vec<Extension>,
) -> der::Result<Certificate> {
    use der::Decode as _;
    let alg = AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    };
    // The serial must be a positive INTEGER of at most 20 bytes.
    let mut serial = serial[..serial.len().min(19)].to_vec();
    serial.insert(0, 0x01);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: alg.clone(),
        issuer,
        validity: Validity {
            not_before: time(validity.0),
            not_after: time(validity.1),
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let sig = signer.sign(&tbs.to_der()?);
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig)?,
    })
}

/// A Rekor bundle annotation for `body` (the hashedrekord JSON text), its SET signed by
/// `log_key` over the canonical entry.
pub fn rekor_bundle(
    log_key: &SigningKey,
    body: &str,
    integrated_time: i64,
    log_index: i64,
) -> String {
    let payload = RekorPayload {
        body: crate::b64(body.as_bytes()),
        integrated_time,
        log_id: hex::encode(log_key.public_key().key_id()),
        log_index,
    };
    let set = log_key.sign(&payload.canonical_json());
    let bundle = RekorBundle {
        signed_entry_timestamp: crate::b64(&set),
        payload,
    };
    serde_json::to_string(&bundle).unwrap_or_default()
}

/// The hashedrekord v0.0.1 body (JSON text) for a payload signature by a certificate.
pub fn hashedrekord_body(payload: &[u8], sig: &[u8], cert_pem: &str) -> String {
    crate::verify::hashedrekord_body(&crate::sha256(payload), sig, cert_pem)
}

impl Sigstore {
    /// A stand-in whose CA and log keys derive from `seed`.
    pub fn new(seed: &[u8]) -> Self {
        // Every field has a fixed, small size: encoding cannot fail.
        #[allow(clippy::expect_used)]
        Self::try_new(seed).expect("encoding the stand-in root CA")
    }

    fn try_new(seed: &[u8]) -> der::Result<Self> {
        let ca_key = SigningKey::from_seed(&[seed, b"/fulcio-root"].concat());
        let log_key = SigningKey::from_seed(&[seed, b"/rekor"].concat());
        let name = Name::from_str(ROOT_SUBJECT)?;
        let ca_spki = ca_key.public_key().to_spki_der();
        let ski = crate::sha256(&ca_spki);
        let root = make_cert(
            &ca_key,
            &ski[..16],
            name.clone(),
            name,
            (ROOT_NOT_BEFORE, ROOT_NOT_AFTER),
            &ca_spki,
            vec![
                ext(
                    KEY_USAGE,
                    true,
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign).to_der()?,
                )?,
                ext(
                    BASIC_CONSTRAINTS,
                    true,
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(1),
                    }
                    .to_der()?,
                )?,
                ext(
                    SUBJECT_KEY_ID,
                    false,
                    OctetString::new(ski[..20].to_vec())?.to_der()?,
                )?,
            ],
        )?;
        let root_der = root.to_der()?;
        Ok(Self {
            seed: seed.to_vec(),
            ca_key,
            root,
            root_der,
            log_key,
            next_index: AtomicI64::new(0),
        })
    }

    /// The root CA certificate, PEM.
    pub fn root_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.root_der)
    }

    /// The Rekor log signing key (to forge SETs in tests).
    pub fn log_key(&self) -> &SigningKey {
        &self.log_key
    }

    /// The root CA signing key.
    pub fn ca_key(&self) -> &SigningKey {
        &self.ca_key
    }

    /// `trusted_root.json` naming this CA and log.
    pub fn trusted_root_json(&self) -> String {
        let log_spki = self.log_key.public_key().to_spki_der();
        let v = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": REKOR_URL,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": crate::b64(&log_spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2000-01-01T00:00:00Z"}
                },
                "logId": {"keyId": crate::b64(&crate::sha256(&log_spki))}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "sigstore-test"},
                "uri": FULCIO_URL,
                "certChain": {"certificates": [{"rawBytes": crate::b64(&self.root_der)}]},
                "validFor": {"start": "2000-01-01T00:00:00Z"}
            }],
            "ctlogs": [],
            "timestampAuthorities": []
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Issues a Fulcio-like leaf certificate for `email` (SAN email, issuer extensions .1.8
    /// and .1.1 = `issuer`, code-signing EKU, valid `integrated_time - 60 .. + 600`), with a
    /// fresh key derived from the seed and the arguments; returns `(key, leaf PEM)`.
    pub fn issue_leaf(
        &self,
        email: &str,
        issuer: &str,
        integrated_time: i64,
    ) -> (SigningKey, String) {
        // Every field but the email has a fixed size, and a non-IA5 email is left out.
        #[allow(clippy::expect_used)]
        self.try_issue_leaf(email, issuer, integrated_time)
            .expect("encoding the stand-in leaf certificate")
    }

    fn try_issue_leaf(
        &self,
        email: &str,
        issuer: &str,
        integrated_time: i64,
    ) -> der::Result<(SigningKey, String)> {
        let key = SigningKey::from_seed(
            &[
                self.seed.as_slice(),
                b"/leaf/",
                email.as_bytes(),
                b"/",
                issuer.as_bytes(),
                b"/",
                integrated_time.to_string().as_bytes(),
            ]
            .concat(),
        );
        let spki = key.public_key().to_spki_der();
        // A non-ASCII email gets no SAN (and so fails identity checks).
        let san = SubjectAltName(
            Ia5String::new(email)
                .ok()
                .map(GeneralName::Rfc822Name)
                .into_iter()
                .collect(),
        );
        let issuer_v2 = Utf8StringRef::new(issuer)?.to_der()?;
        let leaf = make_cert(
            &self.ca_key,
            &crate::sha256(&spki)[..16],
            self.root.tbs_certificate.subject.clone(),
            Name::default(),
            (integrated_time - 60, integrated_time + 600),
            &spki,
            vec![
                ext(
                    KEY_USAGE,
                    true,
                    KeyUsage(KeyUsages::DigitalSignature.into()).to_der()?,
                )?,
                ext(
                    EKU,
                    false,
                    ExtendedKeyUsage(vec![EKU_CODE_SIGNING]).to_der()?,
                )?,
                ext(SAN, true, san.to_der()?)?,
                ext(FULCIO_ISSUER_V1, false, issuer.as_bytes().to_vec())?,
                ext(FULCIO_ISSUER_V2, false, issuer_v2)?,
            ],
        )?;
        Ok((key, pem::encode("CERTIFICATE", &leaf.to_der()?)))
    }

    /// Keyless-signs `payload` as `email` from OIDC `issuer`, logged at `integrated_time`:
    /// returns the annotations cosign writes (signature, certificate, chain = root PEM, bundle).
    pub fn keyless_sign(
        &self,
        payload: &[u8],
        email: &str,
        issuer: &str,
        integrated_time: i64,
    ) -> BTreeMap<String, String> {
        let (key, leaf_pem) = self.issue_leaf(email, issuer, integrated_time);
        let sig = key.sign(payload);
        let body = hashedrekord_body(payload, &sig, &leaf_pem);
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let bundle = rekor_bundle(&self.log_key, &body, integrated_time, index);
        let mut m = BTreeMap::new();
        m.insert(SIGNATURE_ANNOTATION.to_string(), crate::b64(&sig));
        m.insert(CERTIFICATE_ANNOTATION.to_string(), leaf_pem);
        m.insert(CHAIN_ANNOTATION.to_string(), self.root_pem());
        m.insert(BUNDLE_ANNOTATION.to_string(), bundle);
        m
    }
}
