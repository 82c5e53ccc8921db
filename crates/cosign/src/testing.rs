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
/// `baseUrl` of the stand-in Rekor v2 (its checkpoints' origin is the host).
pub const REKOR_V2_URL: &str = "https://log2.rekor.sigstore.test";
/// `baseUrl` of the stand-in CT log.
pub const CTLOG_URL: &str = "https://ctfe.sigstore.test";
/// `uri` of the stand-in timestamp authority.
pub const TSA_URL: &str = "https://timestamp.sigstore.test";
/// Entries the stand-in logs hold besides the signature's (so proofs have several hashes).
const TREE_SIZE: usize = 7;
/// Where in the tree the signature's entry is.
const TREE_POSITION: usize = 4;

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
    ct_key: SigningKey,
    log2_key: ed25519_dalek::SigningKey,
    tsa_root_der: Vec<u8>,
    tsa_leaf: Certificate,
    tsa_leaf_key: SigningKey,
}

/// The SCT a stand-in leaf certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sct {
    /// Signed by the stand-in CT log over the precertificate.
    Valid,
    /// No SCT extension at all.
    Missing,
    /// An SCT from the stand-in CT log whose signature is over something else.
    Forged,
}

/// Which transparency log a stand-in keyless bundle is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Rekor v1: hashedrekord / dsse 0.0.1 with SET, inclusion proof and checkpoint.
    RekorV1,
    /// Rekor v2: hashedrekord 0.0.2 with inclusion proof and an Ed25519 checkpoint, no SET.
    RekorV2,
}

/// What a stand-in keyless bundle signs.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    /// A file (message signature over its SHA-256), as `cosign sign-blob`.
    File(&'a [u8]),
    /// An image manifest digest (`sha256:…`), as cosign v3 signs images: DSSE over an in-toto
    /// statement.
    Image(&'a str),
}

/// How a stand-in keyless bundle is made.
#[derive(Debug, Clone, Copy)]
pub struct BundleOptions {
    /// The log.
    pub log: Log,
    /// Whether an RFC 3161 timestamp is attached.
    pub timestamp: bool,
    /// The leaf's SCT.
    pub sct: Sct,
}

impl Default for BundleOptions {
    fn default() -> Self {
        Self {
            log: Log::RekorV1,
            timestamp: true,
            sct: Sct::Valid,
        }
    }
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
const SCT_LIST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
const EKU_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const TSA_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.2");

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
    let tbs = make_tbs(serial, issuer, subject, validity, spki_der, extensions)?;
    sign_tbs(signer, tbs)
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    }
}

fn make_tbs(
    serial: &[u8],
    issuer: Name,
    subject: Name,
    validity: (i64, i64),
    spki_der: &[u8],
    extensions: Vec<Extension>,
) -> der::Result<TbsCertificate> {
    use der::Decode as _;
    // The serial must be a positive INTEGER of at most 20 bytes.
    let mut serial = serial[..serial.len().min(19)].to_vec();
    serial.insert(0, 0x01);
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: ecdsa_sha256(),
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
    })
}

fn sign_tbs(signer: &SigningKey, tbs: TbsCertificate) -> der::Result<Certificate> {
    let sig = signer.sign(&tbs.to_der()?);
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
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
        let ct_key = SigningKey::from_seed(&[seed, b"/ctlog"].concat());
        let log2_key =
            ed25519_dalek::SigningKey::from_bytes(&crate::sha256(&[seed, b"/rekor-v2"].concat()));
        let tsa_key = SigningKey::from_seed(&[seed, b"/tsa-root"].concat());
        let tsa_leaf_key = SigningKey::from_seed(&[seed, b"/tsa-leaf"].concat());
        let tsa_name = Name::from_str("CN=tsa-test,O=sigstore.test")?;
        let tsa_spki = tsa_key.public_key().to_spki_der();
        let tsa_root = make_cert(
            &tsa_key,
            &crate::sha256(&tsa_spki)[..16],
            tsa_name.clone(),
            tsa_name.clone(),
            (ROOT_NOT_BEFORE, ROOT_NOT_AFTER),
            &tsa_spki,
            vec![ext(
                BASIC_CONSTRAINTS,
                true,
                BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                }
                .to_der()?,
            )?],
        )?;
        let leaf_spki = tsa_leaf_key.public_key().to_spki_der();
        let tsa_leaf = make_cert(
            &tsa_key,
            &crate::sha256(&leaf_spki)[..16],
            tsa_name,
            Name::from_str("CN=tsa-signing-test,O=sigstore.test")?,
            (ROOT_NOT_BEFORE, ROOT_NOT_AFTER),
            &leaf_spki,
            vec![ext(
                EKU,
                true,
                ExtendedKeyUsage(vec![EKU_TIME_STAMPING]).to_der()?,
            )?],
        )?;
        Ok(Self {
            seed: seed.to_vec(),
            ca_key,
            root,
            root_der,
            log_key,
            next_index: AtomicI64::new(0),
            ct_key,
            log2_key,
            tsa_root_der: tsa_root.to_der()?,
            tsa_leaf,
            tsa_leaf_key,
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

    /// `trusted_root.json` naming this CA, both Rekor logs, the CT log and the TSA.
    pub fn trusted_root_json(&self) -> String {
        let log_spki = self.log_key.public_key().to_spki_der();
        let ct_spki = self.ct_key.public_key().to_spki_der();
        let log2_spki = ed25519_spki(&self.log2_key.verifying_key().to_bytes());
        let tsa_leaf_der = self.tsa_leaf.to_der().unwrap_or_default();
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
            }, {
                "baseUrl": REKOR_V2_URL,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": crate::b64(&log2_spki),
                    "keyDetails": "PKIX_ED25519",
                    "validFor": {"start": "2000-01-01T00:00:00Z"}
                },
                "logId": {"keyId": crate::b64(&self.log2_key_id())}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "sigstore-test"},
                "uri": FULCIO_URL,
                "certChain": {"certificates": [{"rawBytes": crate::b64(&self.root_der)}]},
                "validFor": {"start": "2000-01-01T00:00:00Z"}
            }],
            "ctlogs": [{
                "baseUrl": CTLOG_URL,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": crate::b64(&ct_spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2000-01-01T00:00:00Z"}
                },
                "logId": {"keyId": crate::b64(&crate::sha256(&ct_spki))}
            }],
            "timestampAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "tsa-test"},
                "uri": TSA_URL,
                "certChain": {"certificates": [
                    {"rawBytes": crate::b64(&tsa_leaf_der)},
                    {"rawBytes": crate::b64(&self.tsa_root_der)}
                ]},
                "validFor": {"start": "2000-01-01T00:00:00Z"}
            }]
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The Rekor v2 log's checkpoint key ID (C2SP, Ed25519): SHA-256(name || LF || 0x01 || key).
    fn log2_key_id(&self) -> [u8; 32] {
        let host = REKOR_V2_URL.trim_start_matches("https://");
        let mut data = host.as_bytes().to_vec();
        data.extend_from_slice(&[0x0a, 0x01]);
        data.extend_from_slice(&self.log2_key.verifying_key().to_bytes());
        crate::sha256(&data)
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
        self.issue_leaf_with(email, issuer, integrated_time, Sct::Valid)
    }

    /// [`Sigstore::issue_leaf`] with the given SCT.
    pub fn issue_leaf_with(
        &self,
        email: &str,
        issuer: &str,
        integrated_time: i64,
        sct: Sct,
    ) -> (SigningKey, String) {
        // Every field but the email has a fixed size, and a non-IA5 email is left out.
        #[allow(clippy::expect_used)]
        self.try_issue_leaf(email, issuer, integrated_time, sct)
            .expect("encoding the stand-in leaf certificate")
    }

    fn try_issue_leaf(
        &self,
        email: &str,
        issuer: &str,
        integrated_time: i64,
        sct: Sct,
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
        let mut tbs = make_tbs(
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
        if sct != Sct::Missing {
            // the CT log signs the precertificate: this TBS before the SCT list is added
            let ts_ms = (integrated_time.max(0) as u64) * 1000;
            let issuer_key_hash = crate::sha256(&self.ca_key.public_key().to_spki_der());
            let mut precert = tbs.to_der()?;
            if sct == Sct::Forged {
                precert.push(0);
            }
            let signed = crate::sct::signed_input(ts_ms, &issuer_key_hash, &precert, &[]);
            let log_id = crate::sha256(&self.ct_key.public_key().to_spki_der());
            let list = crate::sct::encode_list(&[(log_id, ts_ms, self.ct_key.sign(&signed))]);
            if let Some(exts) = tbs.extensions.as_mut() {
                exts.push(ext(SCT_LIST, false, list)?);
            }
        }
        let leaf = sign_tbs(&self.ca_key, tbs)?;
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

    /// An RFC 3161 `TimeStampResp` (DER) by the stand-in TSA over `signature`, at `gen_time`.
    pub fn timestamp(&self, signature: &[u8], gen_time: i64) -> Vec<u8> {
        // Fixed-size fields only: encoding cannot fail.
        #[allow(clippy::expect_used)]
        self.try_timestamp(signature, gen_time, false)
            .expect("encoding the stand-in timestamp")
    }

    /// [`Sigstore::timestamp`] with the TSA's signing certificate in the token (RFC 3161
    /// `certReq`).
    pub fn timestamp_with_certificate(&self, signature: &[u8], gen_time: i64) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        self.try_timestamp(signature, gen_time, true)
            .expect("encoding the stand-in timestamp")
    }

    fn try_timestamp(
        &self,
        signature: &[u8],
        gen_time: i64,
        with_certificate: bool,
    ) -> der::Result<Vec<u8>> {
        use cms::content_info::{CmsVersion, ContentInfo};
        use cms::signed_data::{
            EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
        };
        use der::asn1::{Any, SetOfVec};
        use x509_cert::attr::Attribute;
        let sha256 = AlgorithmIdentifierOwned {
            oid: SHA256,
            parameters: None,
        };
        let tst = x509_tsp::TstInfo {
            version: x509_tsp::TspVersion::V1,
            policy: TSA_POLICY,
            message_imprint: x509_tsp::MessageImprint {
                hash_algorithm: sha256.clone(),
                hashed_message: OctetString::new(crate::sha256(signature).to_vec())?,
            },
            serial_number: der::asn1::Int::new(&crate::sha256(signature)[..8])?,
            gen_time: GeneralizedTime::from_unix_duration(Duration::from_secs(
                gen_time.max(0) as u64
            ))?,
            accuracy: None,
            ordering: false,
            nonce: None,
            tsa: None,
            extensions: None,
        };
        let tst_der = tst.to_der()?;
        let attr = |oid, value: Any| -> der::Result<Attribute> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        let attrs = SetOfVec::try_from(vec![
            attr(CONTENT_TYPE, Any::encode_from(&TST_INFO)?)?,
            attr(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(crate::sha256(&tst_der).to_vec())?)?,
            )?,
        ])?;
        let sig = self.tsa_leaf_key.sign(&attrs.to_der()?);
        let si = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(cms::cert::IssuerAndSerialNumber {
                issuer: self.tsa_leaf.tbs_certificate.issuer.clone(),
                serial_number: self.tsa_leaf.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: Some(attrs),
            signature_algorithm: ecdsa_sha256(),
            signature: OctetString::new(sig)?,
            unsigned_attrs: None,
        };
        let sd = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![sha256])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: TST_INFO,
                econtent: Some(Any::new(der::Tag::OctetString, tst_der)?),
            },
            certificates: if with_certificate {
                Some(cms::signed_data::CertificateSet(SetOfVec::try_from(vec![
                    cms::cert::CertificateChoices::Certificate(self.tsa_leaf.clone()),
                ])?))
            } else {
                None
            },
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![si])?),
        };
        let resp = x509_tsp::TimeStampResp {
            status: cmpv2::status::PkiStatusInfo {
                status: cmpv2::status::PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(ContentInfo {
                content_type: SIGNED_DATA,
                content: Any::encode_from(&sd)?,
            }),
        };
        resp.to_der()
    }

    /// A Sigstore bundle v0.3 (JSON) as cosign v3 / `cosign sign-blob` write keyless: `signed`
    /// signed as `email` from OIDC `issuer` at `time`, logged per `opts`. The log's tree holds
    /// 7 entries, the signature's at index 4, so the inclusion proof has 3 hashes.
    pub fn keyless_bundle(
        &self,
        signed: Signed<'_>,
        email: &str,
        issuer: &str,
        time: i64,
        opts: BundleOptions,
    ) -> String {
        let (key, leaf_pem) = self.issue_leaf_with(email, issuer, time, opts.sct);
        let leaf_der = pem::parse_one(leaf_pem.as_bytes())
            .map(|b| b.der)
            .unwrap_or_default();
        let (content, sig, v1_body, v2_digest) = match signed {
            Signed::File(data) => {
                let digest = crate::sha256(data);
                let sig = key.sign_prehash(&digest);
                let content = serde_json::json!({"messageSignature": {
                    "messageDigest": {"algorithm": "SHA2_256", "digest": crate::b64(&digest)},
                    "signature": crate::b64(&sig),
                }});
                let body = crate::verify::hashedrekord_body(&digest, &sig, &leaf_pem);
                (content, sig, body, digest)
            }
            Signed::Image(manifest_digest) => {
                let hex = manifest_digest.trim_start_matches("sha256:");
                let statement = serde_json::json!({
                    "_type": "https://in-toto.io/Statement/v1",
                    "subject": [{"digest": {"sha256": hex}}],
                    "predicateType": crate::bundle::COSIGN_SIGN_PREDICATE,
                    "predicate": {},
                })
                .to_string();
                let pt = crate::bundle::IN_TOTO_PAYLOAD_TYPE;
                let pae = crate::bundle::dsse_pae(pt, statement.as_bytes());
                let sig = key.sign(&pae);
                let envelope = serde_json::json!({
                    "payload": crate::b64(statement.as_bytes()),
                    "payloadType": pt,
                    "signatures": [{"sig": crate::b64(&sig), "keyid": ""}],
                });
                let body = serde_json::json!({
                    "apiVersion": "0.0.1",
                    "kind": "dsse",
                    "spec": {
                        "envelopeHash": {"algorithm": "sha256",
                            "value": hex::encode(crate::sha256(envelope.to_string().as_bytes()))},
                        "payloadHash": {"algorithm": "sha256",
                            "value": hex::encode(crate::sha256(statement.as_bytes()))},
                        "signatures": [{"signature": crate::b64(&sig),
                            "verifier": crate::b64(leaf_pem.as_bytes())}],
                    }
                })
                .to_string();
                (
                    serde_json::json!({"dsseEnvelope": envelope}),
                    sig,
                    body,
                    crate::sha256(&pae),
                )
            }
        };
        let n = self.next_index.fetch_add(1, Ordering::Relaxed);
        let entry = match opts.log {
            Log::RekorV1 => {
                let body = v1_body.into_bytes();
                let proof = self.inclusion_proof(&body, n, false);
                let log_id = crate::sha256(&self.log_key.public_key().to_spki_der());
                let payload = RekorPayload {
                    body: crate::b64(&body),
                    integrated_time: time,
                    log_id: hex::encode(log_id),
                    log_index: 1000 + n,
                };
                let set = self.log_key.sign(&payload.canonical_json());
                let kind = if matches!(signed, Signed::File(_)) {
                    "hashedrekord"
                } else {
                    "dsse"
                };
                serde_json::json!({
                    "logIndex": (1000 + n).to_string(),
                    "logId": {"keyId": crate::b64(&log_id)},
                    "kindVersion": {"kind": kind, "version": "0.0.1"},
                    "integratedTime": time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": crate::b64(&set)},
                    "inclusionProof": proof,
                    "canonicalizedBody": crate::b64(&body),
                })
            }
            Log::RekorV2 => {
                let body = serde_json::json!({
                    "apiVersion": "0.0.2",
                    "kind": "hashedrekord",
                    "spec": {"hashedRekordV002": {
                        "data": {"algorithm": "SHA2_256", "digest": crate::b64(&v2_digest)},
                        "signature": {
                            "content": crate::b64(&sig),
                            "verifier": {
                                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                "x509Certificate": {"rawBytes": crate::b64(&leaf_der)},
                            },
                        },
                    }},
                })
                .to_string()
                .into_bytes();
                let proof = self.inclusion_proof(&body, n, true);
                serde_json::json!({
                    "logIndex": TREE_POSITION.to_string(),
                    "logId": {"keyId": crate::b64(&self.log2_key_id())},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
                    "integratedTime": "0",
                    "inclusionProof": proof,
                    "canonicalizedBody": crate::b64(&body),
                })
            }
        };
        let mut material = serde_json::json!({
            "certificate": {"rawBytes": crate::b64(&leaf_der)},
            "tlogEntries": [entry],
        });
        if opts.timestamp {
            material["timestampVerificationData"] = serde_json::json!({
                "rfc3161Timestamps": [{"signedTimestamp": crate::b64(&self.timestamp(&sig, time + 1))}]
            });
        }
        let mut bundle = serde_json::json!({
            "mediaType": crate::bundle::BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
        });
        if let (Some(b), Some(c)) = (bundle.as_object_mut(), content.as_object()) {
            b.extend(c.clone());
        }
        serde_json::to_string_pretty(&bundle).unwrap_or_default()
    }

    /// The `inclusionProof` of `body` in a log tree of [`TREE_SIZE`] entries where it is at
    /// [`TREE_POSITION`]: the audit path, the root, and a checkpoint signed by the Rekor v1
    /// (ECDSA, origin `host - treeID`) or v2 (Ed25519, origin = host) key.
    fn inclusion_proof(&self, body: &[u8], n: i64, v2: bool) -> serde_json::Value {
        let mut leaves: Vec<Vec<u8>> = (0..TREE_SIZE)
            .map(|i| format!("other entry {n}/{i}").into_bytes())
            .collect();
        leaves[TREE_POSITION] = body.to_vec();
        let root = crate::merkle::mth(&leaves);
        let proof: Vec<String> = crate::merkle::path(TREE_POSITION, &leaves)
            .iter()
            .map(|h| crate::b64(h))
            .collect();
        let (host, origin) = if v2 {
            let h = REKOR_V2_URL.trim_start_matches("https://");
            (h, h.to_string())
        } else {
            let h = REKOR_URL.trim_start_matches("https://");
            (h, format!("{h} - 4242"))
        };
        let note = format!("{origin}\n{TREE_SIZE}\n{}\n", crate::b64(&root));
        let mut blob = Vec::new();
        if v2 {
            use ed25519_dalek::Signer as _;
            blob.extend_from_slice(&self.log2_key_id()[..4]);
            blob.extend_from_slice(&self.log2_key.sign(note.as_bytes()).to_bytes());
        } else {
            blob.extend_from_slice(&self.log_key.public_key().key_id()[..4]);
            blob.extend_from_slice(&self.log_key.sign(note.as_bytes()));
        }
        let checkpoint = format!("{note}\n\u{2014} {host} {}\n", crate::b64(&blob));
        serde_json::json!({
            "logIndex": TREE_POSITION.to_string(),
            "rootHash": crate::b64(&root),
            "treeSize": TREE_SIZE.to_string(),
            "hashes": proof,
            "checkpoint": {"envelope": checkpoint},
        })
    }
}

/// The SPKI DER of a raw Ed25519 public key.
fn ed25519_spki(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(raw);
    der
}
