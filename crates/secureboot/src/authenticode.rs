//! Authenticode signatures of PE images (Microsoft's "Windows Authenticode Portable
//! Executable Signature Format"), laid out as sbsign writes them.
//!
//! The signature is PKCS#7 SignedData whose content is an `SpcIndirectDataContent` holding the
//! image's Authenticode SHA-256 digest; the signer's attributes are the content type, an
//! empty `SpcSpOpusInfo` and the digest of that content; the signer's certificate is included.
//! It is appended to the image as a `WIN_CERTIFICATE` (revision 2.0, type PKCS_SIGNED_DATA)
//! at an 8-byte-aligned offset named by the certificate-table directory.

use der::Encode as _;

use crate::asn1::{ctx, int, null, octets, oid, seq, set, tlv};
use crate::{Error, Signer};

const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const SPC_INDIRECT_DATA: &str = "1.3.6.1.4.1.311.2.1.4";
const SPC_PE_IMAGE_DATA: &str = "1.3.6.1.4.1.311.2.1.15";
const SPC_SP_OPUS_INFO: &str = "1.3.6.1.4.1.311.2.1.12";
const CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// The `SpcIndirectDataContent` for an image digest.
fn indirect_data(digest: &[u8; 32]) -> Vec<u8> {
    // SpcLink.file [2] → SpcString.unicode [0] IMPLICIT BMPString "<<<Obsolete>>>"
    let obsolete: Vec<u8> = "<<<Obsolete>>>"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    let link = ctx(2, &tlv(0x80, &obsolete));
    let pe_image_data = seq(&[&tlv(0x03, &[0x00]), &ctx(0, &link)]);
    let alg = seq(&[&oid(SHA256), &null()]);
    seq(&[
        &seq(&[&oid(SPC_PE_IMAGE_DATA), &pe_image_data]),
        &seq(&[&alg, &octets(digest)]),
    ])
}

/// The DER issuer name and serial number of a certificate (a signer's identifier in PKCS#7).
pub(crate) fn issuer_and_serial(cert_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let err = |e: der::Error| Error::Key {
        what: "signing certificate".into(),
        why: e.to_string(),
    };
    let cert = {
        use der::Decode as _;
        x509_cert::Certificate::from_der(cert_der).map_err(err)?
    };
    Ok((
        cert.tbs_certificate.issuer.to_der().map_err(err)?,
        cert.tbs_certificate.serial_number.to_der().map_err(err)?,
    ))
}

/// The PKCS#7 SignedData (as a ContentInfo) over an image whose Authenticode digest is
/// `digest`, signed by `signer`.
pub fn signed_data(digest: &[u8; 32], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    let cert_der = signer.certificate_der();
    let (issuer, serial) = issuer_and_serial(cert_der)?;

    let idc = indirect_data(digest);
    // the digest covers the content of the SEQUENCE, not its tag and length
    let header = if idc[1] & 0x80 == 0 {
        2
    } else {
        2 + usize::from(idc[1] & 0x7f)
    };
    let idc_digest = sha256(&idc[header..]);
    let attrs = [
        seq(&[&oid(CONTENT_TYPE), &set(&[oid(SPC_INDIRECT_DATA)])]),
        seq(&[&oid(SPC_SP_OPUS_INFO), &set(&[seq(&[])])]),
        seq(&[&oid(MESSAGE_DIGEST), &set(&[octets(&idc_digest)])]),
    ];
    // signed as a SET OF (tag 0x31), carried as [0] IMPLICIT
    let signed_attrs = set(&attrs);
    let signature = signer.sign_sha256(&sha256(&signed_attrs))?;
    let mut implicit_attrs = signed_attrs;
    implicit_attrs[0] = 0xa0;
    let alg = seq(&[&oid(SHA256), &null()]);
    let signer_info = seq(&[
        &int(1),
        &seq(&[&issuer, &serial]),
        &alg,
        &implicit_attrs,
        &seq(&[&oid(RSA_ENCRYPTION), &null()]),
        &octets(&signature),
    ]);
    let signed = seq(&[
        &int(1),
        &set(std::slice::from_ref(&alg)),
        &seq(&[&oid(SPC_INDIRECT_DATA), &ctx(0, &idc)]),
        &ctx(0, cert_der),
        &set(&[signer_info]),
    ]);
    Ok(seq(&[&oid(SIGNED_DATA), &ctx(0, &signed)]))
}

/// `image` with an Authenticode signature by `signer` appended (an image is signed once: a
/// signed one is refused). The image is extended in place.
pub fn sign_pe(image: Vec<u8>, signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    let pe = pe::Pe::parse(&image)?;
    if pe.certificate_table().is_some() {
        return Err(Error::Pe(pe::Error::Refused(
            "the image is signed already".into(),
        )));
    }
    if pe.dirs <= pe::DIR_SECURITY {
        return Err(Error::Pe(pe::Error::Refused(
            "the image has no certificate-table directory".into(),
        )));
    }
    let pe_offset = pe.pe_offset;
    drop(pe);
    // the table starts 8-aligned; the padding before it is part of the hashed image
    let mut out = image;
    out.resize(out.len().div_ceil(8) * 8, 0);
    let digest = pe::Pe::parse(&out)?.authenticode_sha256()?;
    let pkcs7 = signed_data(&digest, signer)?;
    let len = 8 + pkcs7.len();
    let padded = len.div_ceil(8) * 8;
    let at = out.len();
    if at + padded > u32::MAX as usize {
        return Err(Error::Pe(pe::Error::Refused(
            "the image is too large".into(),
        )));
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&0x0200u16.to_le_bytes()); // WIN_CERT_REVISION_2_0
    out.extend_from_slice(&0x0002u16.to_le_bytes()); // WIN_CERT_TYPE_PKCS_SIGNED_DATA
    out.extend_from_slice(&pkcs7);
    out.resize(at + padded, 0);
    let dir = pe_offset + 4 + 20 + 112 + 8 * pe::DIR_SECURITY;
    out[dir..dir + 4].copy_from_slice(&(at as u32).to_le_bytes());
    out[dir + 4..dir + 8].copy_from_slice(&(padded as u32).to_le_bytes());
    Ok(out)
}

/// The subjects of the certificates that signed a PKCS#7 SignedData (the signer infos'
/// issuer and serial matched against the embedded certificates; unmatched signers are named
/// by their issuer and serial).
pub fn signer_subjects(pkcs7: &[u8]) -> Result<Vec<String>, Error> {
    use cms::content_info::ContentInfo;
    use cms::signed_data::{SignedData, SignerIdentifier};
    use der::Decode as _;
    let bad = |e: der::Error| Error::Sign(format!("not PKCS#7 SignedData: {e}"));
    let ci = ContentInfo::from_der(pkcs7).map_err(bad)?;
    let sd: SignedData = ci.content.decode_as().map_err(bad)?;
    let certs: Vec<&x509_cert::Certificate> = sd
        .certificates
        .iter()
        .flat_map(|c| c.0.iter())
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for si in sd.signer_infos.0.iter() {
        let SignerIdentifier::IssuerAndSerialNumber(id) = &si.sid else {
            out.push("a signer named by key identifier".to_string());
            continue;
        };
        match certs.iter().find(|c| {
            c.tbs_certificate.issuer == id.issuer
                && c.tbs_certificate.serial_number == id.serial_number
        }) {
            Some(c) => out.push(c.tbs_certificate.subject.to_string()),
            None => out.push(format!(
                "a certificate not included (issuer {}, serial {})",
                id.issuer, id.serial_number
            )),
        }
    }
    Ok(out)
}
