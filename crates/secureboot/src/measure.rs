//! PCR 11 as systemd-stub and Talos measure a UKI (docs/formats/uki-secureboot.md, "PCR 11
//! policy"): each present section, in a fixed order, extends PCR 11 with the digest of its
//! name (with a NUL) and then of its contents; then the boot phases extend it with the digest
//! of their names.

use sha2::Digest as _;

/// The PCR banks Talos signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Bank {
    /// All three, in the order of the signature JSON.
    pub const ALL: [Bank; 3] = [Bank::Sha256, Bank::Sha384, Bank::Sha512];

    /// `sha256`, `sha384`, `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
            Bank::Sha512 => "sha512",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Bank::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Bank::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Bank::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn len(self) -> usize {
        match self {
            Bank::Sha256 => 32,
            Bank::Sha384 => 48,
            Bank::Sha512 => 64,
        }
    }
}

/// The order in which the stub measures the sections it knows: systemd ≥ 257, as Talos
/// predicts.
pub const SECTION_ORDER: [&str; 13] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids",
];

/// What systemd 252's stub measures, in order (checked against its `systemd-measure`): no
/// `.ucode`, `.uname`, `.sbat`, `.profile`, `.dtbauto` or `.hwids`.
pub const SECTION_ORDER_252: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// The sections a stub of systemd `version` measures: 252's list, or for 257 and later (and a
/// stub that does not say) Talos's; `None` for the versions in between, whose lists grew
/// step by step (`.uname`, `.sbat`, `.ucode`) and are not known here, and for those before
/// 252.
pub fn section_order(version: Option<u32>) -> Option<&'static [&'static str]> {
    match version {
        Some(252) => Some(&SECTION_ORDER_252),
        Some(v) if v < 257 => None,
        _ => Some(&SECTION_ORDER),
    }
}

/// The phases Talos's policy covers, in order; only the value after the last is signed.
pub const PHASES: [&str; 3] = ["enter-initrd", "leave-initrd", "enter-machined"];

/// PCR 11 in `bank` after the sections (`(name, contents)`; those not in
/// [`SECTION_ORDER`] are ignored, a name given twice counts its last contents) and then each
/// of `phases`: one value per phase, in order.
pub fn pcr11(bank: Bank, sections: &[(&str, &[u8])], phases: &[&str]) -> Vec<Vec<u8>> {
    pcr11_in_order(bank, &SECTION_ORDER, sections, phases)
}

/// [`pcr11`] for a stub that measures `order` ([`section_order`]).
pub fn pcr11_in_order(
    bank: Bank,
    order: &[&str],
    sections: &[(&str, &[u8])],
    phases: &[&str],
) -> Vec<Vec<u8>> {
    let digests: Vec<(&str, Vec<u8>)> = sections.iter().map(|(n, d)| (*n, bank.hash(d))).collect();
    pcr11_digests(bank, order, &digests, phases)
}

/// [`pcr11_in_order`] from the sections' digests in `bank` (for contents that are streamed).
pub fn pcr11_digests(
    bank: Bank,
    order: &[&str],
    sections: &[(&str, Vec<u8>)],
    phases: &[&str],
) -> Vec<Vec<u8>> {
    let mut pcr = vec![0u8; bank.len()];
    let extend = |pcr: &mut Vec<u8>, digest: Vec<u8>| {
        let mut buf = std::mem::take(pcr);
        buf.extend(digest);
        *pcr = bank.hash(&buf);
    };
    for name in order {
        let Some((_, digest)) = sections.iter().rev().find(|(n, _)| n == name) else {
            continue;
        };
        let mut tagged = name.as_bytes().to_vec();
        tagged.push(0);
        extend(&mut pcr, bank.hash(&tagged));
        extend(&mut pcr, digest.clone());
    }
    let mut out = Vec::new();
    for phase in phases {
        extend(&mut pcr, bank.hash(phase.as_bytes()));
        out.push(pcr.clone());
    }
    out
}

/// A section's digest in every bank, fed in pieces.
#[derive(Debug, Default, Clone)]
pub struct SectionHasher {
    h256: sha2::Sha256,
    h384: sha2::Sha384,
    h512: sha2::Sha512,
}

impl SectionHasher {
    /// Adds contents.
    pub fn update(&mut self, data: &[u8]) {
        self.h256.update(data);
        self.h384.update(data);
        self.h512.update(data);
    }

    /// The digests, in the order of [`Bank::ALL`].
    pub fn finish(self) -> [Vec<u8>; 3] {
        [
            self.h256.finalize().to_vec(),
            self.h384.finalize().to_vec(),
            self.h512.finalize().to_vec(),
        ]
    }
}

/// `TPM_CC_PolicyPCR`.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017f;

impl Bank {
    /// The TPM algorithm ID of the bank (`TPM_ALG_SHA256` …).
    fn tpm_alg(self) -> u16 {
        match self {
            Bank::Sha256 => 0x000b,
            Bank::Sha384 => 0x000c,
            Bank::Sha512 => 0x000d,
        }
    }
}

/// The TPM2 policy digest (SHA-256 session) of `PolicyPCR` over PCR 11 of `bank` holding
/// `value`: SHA-256(zeros ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION{bank, PCR 11} ‖
/// SHA-256(value)).
pub fn policy_digest(bank: Bank, value: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8; 32]);
    h.update(TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(1u32.to_be_bytes());
    h.update(bank.tpm_alg().to_be_bytes());
    h.update([3u8, 0x00, 0x08, 0x00]); // sizeofSelect, PCRs 0-23: bit 11
    h.update(sha2::Sha256::digest(value));
    h.finalize().into()
}

/// An RSA key that signs PCR policies (Talos's `pcrSigner`).
pub struct PcrKey {
    key: rsa::RsaPrivateKey,
}

impl std::fmt::Debug for PcrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcrKey").finish_non_exhaustive()
    }
}

impl PcrKey {
    /// An RSA private key from PKCS#8 or PKCS#1 PEM; `name` names it in errors.
    pub fn from_pem(pem: &[u8], name: &str) -> Result<Self, crate::Error> {
        Ok(Self {
            key: crate::rsa_key_from_pem(pem, name)?,
        })
    }

    /// The public key as PEM (`PUBLIC KEY`, PKIX): the UKI's `.pcrpkey`.
    pub fn public_pem(&self) -> Result<String, crate::Error> {
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        self.key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| crate::Error::Sign(e.to_string()))
    }

    /// SHA-256 of the PKCS#1 `RSAPublicKey` DER, hex: the signature JSON's `pkfp`.
    fn fingerprint(&self) -> Result<String, crate::Error> {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let der = self
            .key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| crate::Error::Sign(e.to_string()))?;
        Ok(hex(&sha2::Sha256::digest(der.as_bytes())))
    }

    fn sign(&self, bank: Bank, policy: &[u8; 32]) -> Result<Vec<u8>, crate::Error> {
        let digest = bank.hash(policy);
        let scheme = match bank {
            Bank::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            Bank::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            Bank::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        };
        self.key
            .sign(scheme, &digest)
            .map_err(|e| crate::Error::Sign(e.to_string()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `.pcrsig` JSON (systemd-measure's `sign` output, compact): for each bank, the policy
/// for PCR 11 after `sections` (measured by a stub that measures `order`,
/// [`section_order`]) and every phase of [`PHASES`], signed with `key`.
pub fn pcr_signature(
    order: &[&str],
    sections: &[(&str, &[u8])],
    key: &PcrKey,
) -> Result<String, crate::Error> {
    let digests: Vec<(&str, [Vec<u8>; 3])> = sections
        .iter()
        .map(|(n, d)| {
            let mut h = SectionHasher::default();
            h.update(d);
            (*n, h.finish())
        })
        .collect();
    pcr_signature_digests(order, &digests, key)
}

/// [`pcr_signature`] for a stub that measures `order`, from the sections' digests in every
/// bank ([`SectionHasher`]).
pub fn pcr_signature_digests(
    order: &[&str],
    sections: &[(&str, [Vec<u8>; 3])],
    key: &PcrKey,
) -> Result<String, crate::Error> {
    use base64::Engine as _;
    let pkfp = key.fingerprint()?;
    let mut doc = serde_json::Map::new();
    for (i, bank) in Bank::ALL.into_iter().enumerate() {
        let digests: Vec<(&str, Vec<u8>)> =
            sections.iter().map(|(n, d)| (*n, d[i].clone())).collect();
        let values = pcr11_digests(bank, order, &digests, &PHASES);
        let last = values.last().cloned().unwrap_or_default();
        let pol = policy_digest(bank, &last);
        let sig = key.sign(bank, &pol)?;
        doc.insert(
            bank.name().to_string(),
            serde_json::json!([{
                "pcrs": [11],
                "pkfp": pkfp,
                "pol": hex(&pol),
                "sig": base64::engine::general_purpose::STANDARD.encode(sig),
            }]),
        );
    }
    serde_json::to_string(&doc).map_err(|e| crate::Error::Sign(e.to_string()))
}
