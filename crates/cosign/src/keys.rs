//! Keys as cosign uses them: ECDSA P-256 (what `cosign generate-key-pair` makes; signing),
//! and, for verification, ECDSA P-384 and Ed25519 public keys too.
//!
//! In: PEM text — `PUBLIC KEY` (SPKI, what `cosign generate-key-pair` writes as `cosign.pub`),
//! `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1), or cosign's `ENCRYPTED SIGSTORE PRIVATE
//! KEY` / `ENCRYPTED COSIGN PRIVATE KEY` (scrypt + NaCl secretbox around PKCS#8 DER); or a seed.
//! Out: [`PublicKey`] (verify ASN.1 DER or raw r||s ECDSA-P256-SHA256 signatures, SPKI PEM) and
//! [`SigningKey`] (deterministic RFC 6979 DER signatures, PKCS#8 / encrypted PEM).

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use serde::{Deserialize, Serialize};

use crate::{Error, pem};

/// Label of cosign's encrypted private keys (current cosign).
pub const ENCRYPTED_SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// Label of cosign's encrypted private keys (older cosign).
pub const ENCRYPTED_COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// A public key: ECDSA P-256 (cosign's default), ECDSA P-384 or Ed25519.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl PublicKey {
    /// Parses a `PUBLIC KEY` (SPKI) PEM holding an ECDSA P-256, P-384 or Ed25519 key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let block = pem::parse_one(pem)?;
        if block.label != "PUBLIC KEY" {
            return Err(Error::Pem(format!(
                "expected a PUBLIC KEY block, found {}",
                block.label
            )));
        }
        Self::from_spki_der(&block.der)
    }

    /// Parses a DER SubjectPublicKeyInfo holding an ECDSA P-256, P-384 or Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self { key: Key::P256(k) });
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(Self { key: Key::P384(k) });
        }
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..])
            && let Ok(raw) = <[u8; 32]>::try_from(raw)
            && let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&raw)
        {
            return Ok(Self {
                key: Key::Ed25519(k),
            });
        }
        Err(Error::Key(
            "not an ECDSA P-256, ECDSA P-384 or Ed25519 public key".into(),
        ))
    }

    /// The algorithm, for messages: `ECDSA P-256`, `ECDSA P-384` or `Ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::P256(_) => "ECDSA P-256",
            Key::P384(_) => "ECDSA P-384",
            Key::Ed25519(_) => "Ed25519",
        }
    }

    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`), 64 columns, LF.
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.to_spki_der())
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match &self.key {
            Key::P256(k) => {
                // SPKI of an uncompressed P-256 point: a fixed 26-byte header + 65-byte point.
                const HEADER: [u8; 26] = [
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ];
                let point = k.to_encoded_point(false);
                let mut out = HEADER.to_vec();
                out.extend_from_slice(point.as_bytes());
                out
            }
            Key::P384(k) => {
                // SPKI of an uncompressed P-384 point: a fixed 23-byte header + 97-byte point.
                const HEADER: [u8; 23] = [
                    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
                ];
                let point = k.to_encoded_point(false);
                let mut out = HEADER.to_vec();
                out.extend_from_slice(point.as_bytes());
                out
            }
            Key::Ed25519(k) => {
                let mut out = ED25519_SPKI_PREFIX.to_vec();
                out.extend_from_slice(k.as_bytes());
                out
            }
        }
    }

    /// sha256 of the SPKI DER: Rekor's log ID and the Sigstore bundle key hint.
    pub fn key_id(&self) -> [u8; 32] {
        crate::sha256(&self.to_spki_der())
    }

    /// Verifies a signature of `msg` as cosign makes it with this kind of key: ECDSA P-256
    /// with SHA-256 or P-384 with SHA-384 (`sig` ASN.1 DER, or raw r||s), or Ed25519 (pure,
    /// 64 bytes).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        match &self.key {
            Key::P256(k) => k
                .verify(msg, &parse_signature(sig)?)
                .map_err(|_| Error::BadSignature),
            Key::P384(k) => k
                .verify(msg, &parse_p384_signature(sig)?)
                .map_err(|_| Error::BadSignature),
            Key::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|e| {
                    Error::MalformedSignature(format!("not an Ed25519 signature: {e}"))
                })?;
                k.verify_strict(msg, &sig).map_err(|_| Error::BadSignature)
            }
        }
    }

    /// Verifies a signature over a message of which `prehash` is the digest (SHA-256 for
    /// files; any length ≥ 16 bytes is accepted and truncated as ECDSA specifies). ECDSA keys
    /// only: Ed25519 signs messages, not digests.
    pub fn verify_prehash(&self, prehash: &[u8], sig: &[u8]) -> Result<(), Error> {
        match &self.key {
            Key::P256(k) => k
                .verify_prehash(prehash, &parse_signature(sig)?)
                .map_err(|_| Error::BadSignature),
            Key::P384(k) => k
                .verify_prehash(prehash, &parse_p384_signature(sig)?)
                .map_err(|_| Error::BadSignature),
            Key::Ed25519(_) => Err(Error::Unsupported(
                "an Ed25519 key cannot verify a signature over a digest".into(),
            )),
        }
    }

    pub(crate) fn from_verifying_key(key: p256::ecdsa::VerifyingKey) -> Self {
        Self {
            key: Key::P256(key),
        }
    }
}

/// Parses an ECDSA P-384 signature: DER, or 96 raw bytes.
fn parse_p384_signature(sig: &[u8]) -> Result<p384::ecdsa::Signature, Error> {
    if sig.len() == 96
        && let Ok(s) = p384::ecdsa::Signature::from_slice(sig)
    {
        return Ok(s);
    }
    p384::ecdsa::Signature::from_der(sig)
        .map_err(|e| Error::MalformedSignature(format!("not an ASN.1 DER ECDSA signature: {e}")))
}

/// Parses an ECDSA P-256 signature: DER, or 64 raw bytes.
fn parse_signature(sig: &[u8]) -> Result<p256::ecdsa::Signature, Error> {
    if sig.len() == 64
        && let Ok(s) = p256::ecdsa::Signature::from_slice(sig)
    {
        return Ok(s);
    }
    p256::ecdsa::Signature::from_der(sig)
        .map_err(|e| Error::MalformedSignature(format!("not an ASN.1 DER ECDSA signature: {e}")))
}

/// An ECDSA P-256 private key.
#[derive(Clone)]
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key().to_pem())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a private key PEM: `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1), or cosign's
    /// encrypted format decrypted with `password` (`None` = empty password, as cosign allows).
    /// The password is ignored for unencrypted keys.
    pub fn from_pem(pem: &[u8], password: Option<&[u8]>) -> Result<Self, Error> {
        let block = pem::parse_one(pem)?;
        let secret = match block.label.as_str() {
            "PRIVATE KEY" => p256::SecretKey::from_pkcs8_der(&block.der)
                .map_err(|e| Error::Key(format!("PKCS#8: not an ECDSA P-256 private key: {e}")))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&block.der)
                .map_err(|e| Error::Key(format!("SEC1: not an ECDSA P-256 private key: {e}")))?,
            ENCRYPTED_SIGSTORE_LABEL | ENCRYPTED_COSIGN_LABEL => {
                let der = decrypt_cosign(&block.der, password.unwrap_or(b""))?;
                p256::SecretKey::from_pkcs8_der(&der).map_err(|e| {
                    Error::Key(format!(
                        "decrypted key is not an ECDSA P-256 PKCS#8 private key: {e}"
                    ))
                })?
            }
            other => {
                return Err(Error::Pem(format!(
                    "expected a private key block, found {other}"
                )));
            }
        };
        Ok(Self { key: secret.into() })
    }

    /// Derives a key deterministically: the scalar is sha256(seed), re-hashed until valid.
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut h = crate::sha256(seed);
        loop {
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&h) {
                return Self { key };
            }
            h = crate::sha256(&h);
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(*self.key.verifying_key())
    }

    /// Deterministic (RFC 6979) ECDSA P-256 SHA-256 signature of `msg`, ASN.1 DER.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    /// Deterministic signature of a message whose SHA-256 digest is `digest`, ASN.1 DER
    /// (equal to [`SigningKey::sign`] of the message itself).
    pub fn sign_prehash(&self, digest: &[u8; 32]) -> Vec<u8> {
        // A 32-byte prehash is always accepted for P-256.
        match PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(&self.key, digest) {
            Ok(sig) => sig.to_der().as_bytes().to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.pkcs8_der())
    }

    fn pkcs8_der(&self) -> Vec<u8> {
        let secret = p256::SecretKey::from(&self.key);
        match secret.to_pkcs8_der() {
            Ok(doc) => doc.as_bytes().to_vec(),
            // Encoding a valid P-256 scalar cannot fail.
            Err(_) => Vec::new(),
        }
    }

    /// cosign's encrypted key format (`ENCRYPTED SIGSTORE PRIVATE KEY`, scrypt N=32768 r=8
    /// p=1, NaCl secretbox). The caller supplies the random `salt` and `nonce`, which makes
    /// the output deterministic.
    pub fn to_encrypted_pem(
        &self,
        password: &[u8],
        salt: &[u8; 32],
        nonce: &[u8; 24],
    ) -> Result<String, Error> {
        let der = self.pkcs8_der();
        let doc = encrypt_cosign(&der, password, salt, nonce)?;
        Ok(pem::encode(ENCRYPTED_SIGSTORE_LABEL, doc.as_bytes()))
    }
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn scrypt_key(password: &[u8], salt: &[u8], p: &ScryptParams) -> Result<[u8; 32], Error> {
    if !p.n.is_power_of_two() || p.n < 2 {
        return Err(Error::Key(format!(
            "scrypt N={} is not a power of two",
            p.n
        )));
    }
    let log_n = p.n.trailing_zeros();
    // Bound the work and memory an input can ask for (cosign uses N=32768 or 65536, r=8).
    if log_n > 20 || p.r == 0 || p.r > 32 || p.p == 0 || p.p > 16 {
        return Err(Error::Key(format!(
            "scrypt parameters N={} r={} p={} out of the supported range",
            p.n, p.r, p.p
        )));
    }
    let params = scrypt::Params::new(log_n as u8, p.r, p.p, 32)
        .map_err(|e| Error::Key(format!("scrypt parameters: {e}")))?;
    let mut out = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut out)
        .map_err(|e| Error::Key(format!("scrypt: {e}")))?;
    Ok(out)
}

/// Decrypts the JSON document inside an encrypted cosign key PEM to PKCS#8 DER.
fn decrypt_cosign(doc: &[u8], password: &[u8]) -> Result<Vec<u8>, Error> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    let doc: EncryptedKey = serde_json::from_slice(doc)
        .map_err(|e| Error::Key(format!("encrypted cosign key: invalid JSON: {e}")))?;
    if doc.kdf.name != "scrypt" {
        return Err(Error::Key(format!(
            "encrypted cosign key: unsupported kdf {:?}",
            doc.kdf.name
        )));
    }
    if doc.cipher.name != "nacl/secretbox" {
        return Err(Error::Key(format!(
            "encrypted cosign key: unsupported cipher {:?}",
            doc.cipher.name
        )));
    }
    let salt = crate::unb64(&doc.kdf.salt)
        .map_err(|e| Error::Key(format!("encrypted cosign key: salt: {e}")))?;
    let nonce = crate::unb64(&doc.cipher.nonce)
        .map_err(|e| Error::Key(format!("encrypted cosign key: nonce: {e}")))?;
    let ciphertext = crate::unb64(&doc.ciphertext)
        .map_err(|e| Error::Key(format!("encrypted cosign key: ciphertext: {e}")))?;
    if nonce.len() != 24 {
        return Err(Error::Key(format!(
            "encrypted cosign key: nonce is {} bytes, want 24",
            nonce.len()
        )));
    }
    let key = scrypt_key(password, &salt, &doc.kdf.params)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            ciphertext.as_slice(),
        )
        .map_err(|_| {
            Error::Key(
                "encrypted cosign key: wrong password or corrupted key (secretbox does not open)"
                    .into(),
            )
        })
}

/// Encrypts PKCS#8 DER into cosign's JSON document (field order as cosign writes it).
fn encrypt_cosign(
    der: &[u8],
    password: &[u8],
    salt: &[u8; 32],
    nonce: &[u8; 24],
) -> Result<String, Error> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    let params = ScryptParams {
        n: 32768,
        r: 8,
        p: 1,
    };
    let key = scrypt_key(password, salt, &params)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let ciphertext = cipher
        .encrypt(crypto_secretbox::Nonce::from_slice(nonce), der)
        .map_err(|_| Error::Key("secretbox encryption failed".into()))?;
    let doc = EncryptedKey {
        kdf: Kdf {
            name: "scrypt".into(),
            params,
            salt: crate::b64(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: crate::b64(nonce),
        },
        ciphertext: crate::b64(&ciphertext),
    };
    serde_json::to_string(&doc).map_err(|e| Error::Key(format!("encrypted key JSON: {e}")))
}
