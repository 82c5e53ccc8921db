//! GUIDs: parsing, formatting, mixed-endian on-disk encoding and label-derived GUIDs.

use sha2::{Digest, Sha256};
use std::fmt;

/// A GUID, stored in the byte order of its textual form (RFC 4122 / "big-endian").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

/// A GUID string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid GUID {0:?}")]
pub struct GuidParseError(pub String);

const fn hexval(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0xff,
    }
}

impl Guid {
    /// The all-zero GUID.
    pub const NIL: Guid = Guid([0; 16]);

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` at compile time (panics on bad input, which
    /// only constants use).
    pub const fn from_str_const(s: &str) -> Guid {
        match Self::parse_bytes(s.as_bytes()) {
            Some(g) => g,
            None => panic!("bad GUID constant"),
        }
    }

    const fn parse_bytes(s: &[u8]) -> Option<Guid> {
        if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
            return None;
        }
        let mut out = [0u8; 16];
        let mut i = 0;
        let mut o = 0;
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                i += 1;
                continue;
            }
            let (h, l) = (hexval(s[i]), hexval(s[i + 1]));
            if h == 0xff || l == 0xff {
                return None;
            }
            out[o] = (h << 4) | l;
            o += 1;
            i += 2;
        }
        Some(Guid(out))
    }

    /// Parses a GUID string.
    pub fn parse(s: &str) -> Result<Guid, GuidParseError> {
        Self::parse_bytes(s.as_bytes()).ok_or_else(|| GuidParseError(s.to_string()))
    }

    /// Whether this is the nil GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// On-disk (EFI) encoding: the first three fields little-endian.
    pub fn to_mixed_endian(&self) -> [u8; 16] {
        let b = self.0;
        let mut o = b;
        o[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        o[4..6].copy_from_slice(&[b[5], b[4]]);
        o[6..8].copy_from_slice(&[b[7], b[6]]);
        o
    }

    /// Decodes the on-disk encoding.
    pub fn from_mixed_endian(d: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        // the swap is its own inverse
        Guid(Guid(b).to_mixed_endian())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A deterministic GUID for a label: the first 16 bytes of `SHA-256(16 zero bytes ‖ label)`
/// marked as a version-8 RFC 4122 UUID (Talos `GUIDFromLabel`).
pub fn guid_from_label(label: &str) -> Guid {
    let mut h = Sha256::new();
    h.update([0u8; 16]);
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Guid(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn label_guids_match_spec() {
        for (l, g) in [
            ("talos-image-disk", "d92d45b3-cde9-8760-be9f-a2a71fac8d11"),
            ("EFI", "bca5174b-0118-8a6a-af0b-2c6e1585acae"),
            ("BIOS", "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3"),
            ("BOOT", "24c73076-4092-85dd-9d98-686a2dbf6d81"),
            ("META", "cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
            ("IMAGECACHE", "3b5449bc-c21f-8009-8b51-18945967f8df"),
        ] {
            assert_eq!(guid_from_label(l).to_string(), g, "{l}");
        }
    }

    #[test]
    fn mixed_endian_and_parse() {
        let g = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(
            g.to_mixed_endian(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(Guid::from_mixed_endian(&g.to_mixed_endian()), g);
        assert!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_err());
        assert!(Guid::parse("G12A7328-F81F-11D2-BA4B-00A0C93EC93B").is_err());
    }
}
