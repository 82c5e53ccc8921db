//! SecureBoot key databases as signed UEFI variables (UEFI 2.10 §8.2.2 and §32.4): the
//! `PK.auth`, `KEK.auth` and `db.auth` files that systemd-boot enrolls from
//! `loader/keys/auto/` (docs/formats/uki-secureboot.md "Enrollment").
//!
//! Each file is an `EFI_VARIABLE_AUTHENTICATION_2` (an `EFI_TIME` and a `WIN_CERTIFICATE_UEFI_GUID`
//! holding a detached PKCS#7 SignedData) followed by the variable's new value, a list of
//! `EFI_SIGNATURE_LIST`s with one X.509 certificate each. The certificates are DER: firmware
//! parses them as X.509 when it checks an image against db and when it verifies the next
//! variable signed by PK or KEK, and a PEM text there is not a certificate to it.
//!
//! The signature covers `name (UTF-16LE, no NUL) ‖ vendor GUID ‖ attributes ‖ time ‖ value`;
//! the time is SOURCE_DATE_EPOCH, so two builds give the same bytes.

use crate::asn1::{ctx, int, null, octets, oid, seq, set};
use crate::{Error, Signer};

/// `EFI_GLOBAL_VARIABLE` (PK, KEK).
pub const GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db, dbx).
pub const IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// `EFI_CERT_X509_GUID`.
pub const CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
/// `EFI_CERT_TYPE_PKCS7_GUID`.
pub const CERT_TYPE_PKCS7: &str = "4aafd29d-68df-49ee-8aa9-347d375665a7";
/// The owner GUID Microsoft's certificates are listed under.
pub const MICROSOFT_OWNER: &str = "77fa9abd-0359-4d32-bd60-28f4e78f784b";

/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS`,
/// the attributes systemd-boot sets the variables with (they are part of what is signed).
pub const ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;

/// Microsoft's KEK certificates (KEK CA 2011, KEK 2K CA 2023), DER.
pub const MICROSOFT_KEK: [&[u8]; 2] = [
    include_bytes!("../certs/kek/microsoft-kek-ca-2011.der"),
    include_bytes!("../certs/kek/microsoft-kek-2k-ca-2023.der"),
];
/// Microsoft's db certificates (UEFI CA 2011 and 2023, Option ROM UEFI CA 2023), DER.
pub const MICROSOFT_DB: [&[u8]; 3] = [
    include_bytes!("../certs/db/microsoft-uefi-ca-2011.der"),
    include_bytes!("../certs/db/microsoft-uefi-ca-2023.der"),
    include_bytes!("../certs/db/microsoft-option-rom-uefi-ca-2023.der"),
];

const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const DATA: &str = "1.2.840.113549.1.7.1";

/// A GUID in its EFI byte order (the first three fields little-endian) from its text form.
pub fn guid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        })
        .collect();
    let mut b = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        b[i] = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// The owner GUID of our own certificate in the lists: a name-based UUID (version 4 bits as
/// Talos sets them) of SHA-256 over the X.500 namespace and the certificate, so the same
/// certificate always gets the same owner.
pub fn owner_for(cert_der: &[u8]) -> [u8; 16] {
    use sha2::Digest as _;
    // RFC 4122 NameSpace_X500, in network byte order
    let ns = [
        0x6b, 0xa7, 0xb8, 0x14, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let mut h = sha2::Sha256::new();
    h.update(ns);
    h.update(cert_der);
    let s = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&s[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    // the text form of those network-order bytes, then EFI order
    let text: String = u.iter().map(|b| format!("{b:02x}")).collect();
    guid(&text)
}

/// One `EFI_SIGNATURE_LIST` holding one X.509 certificate owned by `owner`.
pub fn x509_list(owner: &[u8; 16], cert_der: &[u8]) -> Vec<u8> {
    let sig_size = 16 + cert_der.len();
    let list_size = 16 + 4 + 4 + 4 + sig_size;
    let mut v = Vec::with_capacity(list_size);
    v.extend_from_slice(&guid(CERT_X509));
    v.extend_from_slice(&(list_size as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(sig_size as u32).to_le_bytes());
    v.extend_from_slice(owner);
    v.extend_from_slice(cert_der);
    v
}

/// `EFI_TIME` of a Unix time (UTC; nanoseconds, time zone and daylight zero as the
/// specification requires of authenticated variables).
pub fn efi_time(epoch: i64) -> [u8; 16] {
    let t = civil::from_unix(epoch.max(0));
    let mut b = [0u8; 16];
    b[0..2].copy_from_slice(&(t.year.clamp(0, 9999) as u16).to_le_bytes());
    b[2] = t.month as u8;
    b[3] = t.day as u8;
    b[4] = t.hour as u8;
    b[5] = t.minute as u8;
    b[6] = t.second as u8;
    b
}

/// The detached PKCS#7 SignedData (without a ContentInfo around it, as firmware expects;
/// two-byte length so that the digest algorithm sits at offset 13) over `content`.
fn detached_signed_data(content: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    use sha2::Digest as _;
    let cert_der = signer.certificate_der();
    let (issuer, serial) = crate::authenticode::issuer_and_serial(cert_der)?;
    let digest: [u8; 32] = sha2::Sha256::digest(content).into();
    let signature = signer.sign_sha256(&digest)?;
    let alg = seq(&[&oid(SHA256), &null()]);
    let signer_info = seq(&[
        &int(1),
        &seq(&[&issuer, &serial]),
        &alg,
        &seq(&[&oid(RSA_ENCRYPTION), &null()]),
        &octets(&signature),
    ]);
    let sd = seq(&[
        &int(1),
        &set(std::slice::from_ref(&alg)),
        &seq(&[&oid(DATA)]),
        &ctx(0, cert_der),
        &set(&[signer_info]),
    ]);
    if sd.len() < 4 || sd[1] != 0x82 {
        return Err(Error::Sign(format!(
            "the variable's signature is {} bytes, outside what firmware parses (256 B–64 KiB)",
            sd.len()
        )));
    }
    Ok(sd)
}

/// A signed variable update (`EFI_VARIABLE_AUTHENTICATION_2` and the value), signed by
/// `signer` at `epoch` for variable `name` of `vendor`.
pub fn signed_variable(
    name: &str,
    vendor: &[u8; 16],
    value: &[u8],
    epoch: i64,
    signer: &dyn Signer,
) -> Result<Vec<u8>, Error> {
    let time = efi_time(epoch);
    let mut signed = Vec::with_capacity(name.len() * 2 + 36 + value.len());
    signed.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
    signed.extend_from_slice(vendor);
    signed.extend_from_slice(&ATTRIBUTES.to_le_bytes());
    signed.extend_from_slice(&time);
    signed.extend_from_slice(value);
    let pkcs7 = detached_signed_data(&signed, signer)?;
    let mut out = Vec::with_capacity(16 + 24 + pkcs7.len() + value.len());
    out.extend_from_slice(&time);
    // WIN_CERTIFICATE_UEFI_GUID: dwLength, wRevision 2.0, wCertificateType EFI_GUID, CertType
    out.extend_from_slice(&((24 + pkcs7.len()) as u32).to_le_bytes());
    out.extend_from_slice(&0x0200u16.to_le_bytes());
    out.extend_from_slice(&0x0EF1u16.to_le_bytes());
    out.extend_from_slice(&guid(CERT_TYPE_PKCS7));
    out.extend_from_slice(&pkcs7);
    out.extend_from_slice(value);
    Ok(out)
}

/// The three enrollment files, as (file name, contents): `db.auth`, `KEK.auth`, `PK.auth`.
/// Each list holds the signer's certificate; `well_known` adds Microsoft's KEK and db
/// certificates. All three are signed by the signer (PK is self-signed, and it is also the
/// KEK that signs db).
pub fn enrollment(
    signer: &dyn Signer,
    well_known: bool,
    epoch: i64,
) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
    let cert = signer.certificate_der();
    let own = x509_list(&owner_for(cert), cert);
    let ms = guid(MICROSOFT_OWNER);
    let with = |extra: &[&[u8]]| {
        let mut v = own.clone();
        if well_known {
            for c in extra {
                v.extend(x509_list(&ms, c));
            }
        }
        v
    };
    let global = guid(GLOBAL_VARIABLE);
    Ok(vec![
        (
            "db.auth",
            signed_variable(
                "db",
                &guid(IMAGE_SECURITY_DATABASE),
                &with(&MICROSOFT_DB),
                epoch,
                signer,
            )?,
        ),
        (
            "KEK.auth",
            signed_variable("KEK", &global, &with(&MICROSOFT_KEK), epoch, signer)?,
        ),
        (
            "PK.auth",
            signed_variable("PK", &global, &own, epoch, signer)?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_in_efi_order() {
        assert_eq!(
            guid(GLOBAL_VARIABLE),
            [
                0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
                0x2b, 0x8c
            ]
        );
        let o = owner_for(b"cert");
        assert_eq!(o[7] >> 4, 4, "version nibble");
        assert_eq!(o[8] & 0xc0, 0x80, "variant");
        assert_eq!(o, owner_for(b"cert"));
        assert_ne!(o, owner_for(b"other"));
    }

    #[test]
    fn efi_time_fields() {
        // 2023-11-14T22:13:20Z
        let t = efi_time(1_700_000_000);
        assert_eq!(&t[..8], &[0xe7, 0x07, 11, 14, 22, 13, 20, 0]);
        assert_eq!(&t[8..], &[0; 8]);
    }

    #[test]
    fn microsoft_certificates_parse() {
        use der::Decode as _;
        for c in MICROSOFT_DB.iter().chain(MICROSOFT_KEK.iter()) {
            let cert = x509_cert::Certificate::from_der(c).unwrap();
            assert!(
                cert.tbs_certificate
                    .subject
                    .to_string()
                    .contains("Microsoft")
            );
        }
    }

    #[test]
    fn signature_list_layout() {
        let l = x509_list(&[7; 16], b"DER");
        assert_eq!(l.len(), 16 + 12 + 16 + 3);
        assert_eq!(&l[16..20], &(l.len() as u32).to_le_bytes());
        assert_eq!(&l[24..28], &19u32.to_le_bytes());
    }
}
