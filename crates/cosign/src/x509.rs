//! X.509 helpers for Fulcio certificates.
//!
//! In: DER or PEM certificates. Out: parsed certificates, signature checks of a certificate
//! by its issuer (ECDSA P-256/P-384 with SHA-256/384), the leaf's identities (SAN email/URI),
//! its Fulcio OIDC issuer, validity window, CA flag, code-signing EKU and P-256 key.

use der::{Decode as _, Encode as _};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::Digest as _;
use spki::DecodePublicKey as _;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};

use crate::{Error, PublicKey, pem};

/// A parsed certificate with its DER bytes.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub cert: Certificate,
    pub der: Vec<u8>,
}

const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
/// Fulcio: OIDC issuer, DER UTF8String (v2).
pub(crate) const OID_FULCIO_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio: OIDC issuer, raw UTF-8 bytes (legacy).
pub(crate) const OID_FULCIO_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const OID_SAN: &str = "2.5.29.17";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_EKU: &str = "2.5.29.37";
const OID_EKU_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::Certificate(format!("not a DER X.509 certificate: {e}")))?;
        Ok(Self {
            cert,
            der: der.to_vec(),
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM text.
    pub fn all_from_pem(text: &[u8]) -> Result<Vec<Self>, Error> {
        pem::parse_all(text)?
            .into_iter()
            .map(|b| {
                if b.label != "CERTIFICATE" {
                    return Err(Error::Pem(format!(
                        "expected CERTIFICATE blocks, found {}",
                        b.label
                    )));
                }
                Self::from_der(&b.der)
            })
            .collect()
    }

    /// The subject as an RFC 4514 string (for messages).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The subject, or for a Fulcio leaf (empty subject) its identities (for messages).
    pub fn name(&self) -> String {
        if self.cert.tbs_certificate.subject.0.is_empty() {
            format!("the certificate of {}", self.identities().join(", "))
        } else {
            self.subject()
        }
    }

    /// `(notBefore, notAfter)` as Unix seconds.
    pub fn validity(&self) -> (i64, i64) {
        let v = &self.cert.tbs_certificate.validity;
        let secs = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        (secs(v.not_before), secs(v.not_after))
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// Whether basicConstraints says cA.
    pub fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// Whether the extended key usage allows code signing (absent EKU = no).
    pub fn has_code_signing(&self) -> bool {
        self.has_eku(OID_EKU_CODE_SIGNING)
    }

    /// Whether the extended key usage lists `oid` (absent EKU = no).
    pub fn has_eku(&self, oid: &str) -> bool {
        self.extension(OID_EKU)
            .and_then(|v| ExtendedKeyUsage::from_der(v).ok())
            .is_some_and(|eku| eku.0.iter().any(|o| o.to_string() == oid))
    }

    /// Whether the extended key usage extension is critical and lists exactly `oid`.
    pub fn has_only_critical_eku(&self, oid: &str) -> bool {
        let Some(ext) = self
            .cert
            .tbs_certificate
            .extensions
            .as_deref()
            .and_then(|x| x.iter().find(|e| e.extn_id.to_string() == OID_EKU))
        else {
            return false;
        };
        ext.critical
            && ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0.len() == 1 && eku.0[0].to_string() == oid)
    }

    /// Whether a CA's extended key usage (if any) allows `oid` (or anyExtendedKeyUsage).
    pub fn eku_allows(&self, oid: &str) -> bool {
        match self.extension(OID_EKU) {
            None => true,
            Some(v) => ExtendedKeyUsage::from_der(v).is_ok_and(|eku| {
                eku.0
                    .iter()
                    .any(|o| o.to_string() == oid || o.to_string() == "2.5.29.37.0")
            }),
        }
    }

    /// The certificate's key (ECDSA P-256, P-384 or Ed25519).
    pub fn public_key(&self) -> Result<PublicKey, String> {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("public key of {}: {e}", self.subject()))?;
        PublicKey::from_spki_der(&spki)
            .map_err(|e| format!("public key of {}: {e}", self.subject()))
    }

    /// SAN email addresses and URIs.
    pub fn identities(&self) -> Vec<String> {
        let Some(san) = self
            .extension(OID_SAN)
            .and_then(|v| SubjectAltName::from_der(v).ok())
        else {
            return Vec::new();
        };
        san.0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The Fulcio OIDC issuer: extension 1.3.6.1.4.1.57264.1.8 (UTF8String), else the legacy
    /// 1.3.6.1.4.1.57264.1.1 (raw bytes).
    pub fn fulcio_issuer(&self) -> Option<String> {
        if let Some(v) = self.extension(OID_FULCIO_ISSUER_V2)
            && let Ok(s) = der::asn1::Utf8StringRef::from_der(v)
        {
            return Some(s.as_str().to_string());
        }
        self.extension(OID_FULCIO_ISSUER_V1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    }

    /// Checks that `self` was issued by `issuer`: names chain and the ECDSA signature over the
    /// TBS certificate verifies with the issuer's key.
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), String> {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(format!(
                "issuer {} of {} is not {}",
                self.cert.tbs_certificate.issuer,
                self.subject(),
                issuer.subject()
            ));
        }
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("re-encoding TBS certificate: {e}"))?;
        let alg = self.cert.signature_algorithm.oid.to_string();
        let digest: Vec<u8> = match alg.as_str() {
            OID_ECDSA_SHA256 => sha2::Sha256::digest(&tbs).to_vec(),
            OID_ECDSA_SHA384 => sha2::Sha384::digest(&tbs).to_vec(),
            other => {
                return Err(format!(
                    "unsupported certificate signature algorithm {other}"
                ));
            }
        };
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or("certificate signature is not a whole number of bytes")?;
        let spki = issuer
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("issuer key: {e}"))?;
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            let sig = p256::ecdsa::Signature::from_der(sig)
                .map_err(|e| format!("certificate signature: {e}"))?;
            return key.verify_prehash(&digest, &sig).map_err(|_| {
                format!(
                    "signature of {} does not verify with the key of {}",
                    self.subject(),
                    issuer.subject()
                )
            });
        }
        if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            let sig = p384::ecdsa::Signature::from_der(sig)
                .map_err(|e| format!("certificate signature: {e}"))?;
            return key.verify_prehash(&digest, &sig).map_err(|_| {
                format!(
                    "signature of {} does not verify with the key of {}",
                    self.subject(),
                    issuer.subject()
                )
            });
        }
        Err(format!(
            "key of {} is neither ECDSA P-256 nor P-384",
            issuer.subject()
        ))
    }
}
