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

/// The order in which the stub measures the sections it knows (systemd ≥ 257; 252 knows
/// `.linux .osrel .cmdline .initrd .splash .dtb .pcrpkey` only).
pub const SECTION_ORDER: [&str; 13] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids",
];

/// The phases Talos's policy covers, in order; only the value after the last is signed.
pub const PHASES: [&str; 3] = ["enter-initrd", "leave-initrd", "enter-machined"];

/// PCR 11 in `bank` after the sections (`(name, contents)`; those not in
/// [`SECTION_ORDER`] are ignored, a name given twice counts its last contents) and then each
/// of `phases`: one value per phase, in order.
pub fn pcr11(bank: Bank, sections: &[(&str, &[u8])], phases: &[&str]) -> Vec<Vec<u8>> {
    let mut pcr = vec![0u8; bank.len()];
    let extend = |pcr: &mut Vec<u8>, digest: Vec<u8>| {
        let mut buf = std::mem::take(pcr);
        buf.extend(digest);
        *pcr = bank.hash(&buf);
    };
    for name in SECTION_ORDER {
        let Some((_, data)) = sections.iter().rev().find(|(n, _)| *n == name) else {
            continue;
        };
        let mut tagged = name.as_bytes().to_vec();
        tagged.push(0);
        extend(&mut pcr, bank.hash(&tagged));
        extend(&mut pcr, bank.hash(data));
    }
    let mut out = Vec::new();
    for phase in phases {
        extend(&mut pcr, bank.hash(phase.as_bytes()));
        out.push(pcr.clone());
    }
    out
}
