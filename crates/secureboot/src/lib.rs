//! UEFI SecureBoot signing in pure Rust; docs/formats/uki-secureboot.md.
//!
//! In: a PE image (UKI, systemd-boot) and a [`Signer`] (an RSA key and its certificate from
//! PEM files, [`PemSigner`]; a KMS or remote signer can implement the trait). Out: the image
//! with an Authenticode signature appended (PKCS#7 SignedData over the image's Authenticode
//! digest), byte-identical for the same inputs (RSA PKCS#1 v1.5 is deterministic and no
//! signing time is recorded).

mod asn1;
pub mod authenticode;
pub mod measure;
pub mod variables;

pub use authenticode::sign_pe;

/// Errors of this crate; every message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key or certificate does not parse or is of an unsupported kind.
    #[error("{what}: {why}")]
    Key {
        /// Which input.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The image cannot be signed.
    #[error(transparent)]
    Pe(#[from] pe::Error),
    /// The signer failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// Makes signatures for Authenticode (and later PCR policies): an RSA key with its X.509
/// certificate.
pub trait Signer {
    /// The signing certificate, DER.
    fn certificate_der(&self) -> &[u8];
    /// RSA PKCS#1 v1.5 signature of a SHA-256 digest.
    fn sign_sha256(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error>;
}

/// An RSA private key from PEM: PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`; an
/// encrypted key is refused with a line saying to decrypt it.
pub(crate) fn rsa_key_from_pem(pem: &[u8], name: &str) -> Result<rsa::RsaPrivateKey, Error> {
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let err = |why: String| Error::Key {
        what: name.to_string(),
        why,
    };
    let text = std::str::from_utf8(pem).map_err(|_| err("not a PEM text".into()))?;
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        Err(err(
            "an encrypted key; decrypt it first (openssl pkcs8 -in KEY -out PLAIN)".into(),
        ))
    } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| err(format!("PKCS#1 RSA key: {e}")))
    } else {
        rsa::RsaPrivateKey::from_pkcs8_pem(text)
            .map_err(|e| err(format!("not an RSA PKCS#8 key: {e}")))
    }
}

/// A [`Signer`] from an RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`
/// PEM) and a certificate (PEM or DER).
pub struct PemSigner {
    key: rsa::RsaPrivateKey,
    cert: Vec<u8>,
}

impl std::fmt::Debug for PemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemSigner").finish_non_exhaustive()
    }
}

impl PemSigner {
    /// Parses the key and certificate; `key_name` and `cert_name` name them in errors.
    pub fn new(
        key_pem: &[u8],
        key_name: &str,
        cert: &[u8],
        cert_name: &str,
    ) -> Result<Self, Error> {
        let err = |what: &str, why: String| Error::Key {
            what: what.to_string(),
            why,
        };
        let key = rsa_key_from_pem(key_pem, key_name)?;
        let cert = if cert.starts_with(b"-----") || cert.iter().take(64).all(u8::is_ascii) {
            use der::DecodePem as _;
            let c = x509_cert::Certificate::from_pem(cert)
                .map_err(|e| err(cert_name, format!("not a PEM certificate: {e}")))?;
            use der::Encode as _;
            c.to_der().map_err(|e| err(cert_name, e.to_string()))?
        } else {
            cert.to_vec()
        };
        // the certificate must be the key's
        let c = {
            use der::Decode as _;
            x509_cert::Certificate::from_der(&cert)
                .map_err(|e| err(cert_name, format!("not a certificate: {e}")))?
        };
        let spki = {
            use der::Encode as _;
            c.tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(|e| err(cert_name, e.to_string()))?
        };
        let public = {
            use rsa::pkcs8::EncodePublicKey as _;
            key.to_public_key()
                .to_public_key_der()
                .map_err(|e| err(key_name, e.to_string()))?
        };
        if public.as_bytes() != spki.as_slice() {
            return Err(err(
                cert_name,
                format!("the certificate is not for the key {key_name}"),
            ));
        }
        Ok(Self { key, cert })
    }
}

impl Signer for PemSigner {
    fn certificate_der(&self) -> &[u8] {
        &self.cert
    }

    fn sign_sha256(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        self.key
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
            .map_err(|e| Error::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
