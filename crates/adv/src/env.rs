//! `INSTALLER_META_BASE64` (docs/formats/meta.md): META values carried on the kernel command line
//! (`talos.environment=INSTALLER_META_BASE64=<enc>`) by boot media that have no META partition
//! (PXE, ISO, UKI), and imported by the booted system.
//!
//! In: tag/value pairs. Out: `base64([gzip -9 if longer than 256 bytes and allowed](
//! "0x<tag>=<value>;…"))`; and the reverse, with the key parsed like Go's
//! `strconv.ParseUint(k, 0, 8)`.

use base64::Engine as _;
use std::io::{Read, Write};

/// The environment variable name.
pub const VAR: &str = "INSTALLER_META_BASE64";
/// The installer's test hook (docs/formats/install.md): `1` pauses an install or upgrade for good
/// at its most fragile point, so that a test can cut the power there.
pub const TEST_PAUSE: &str = "INSTALLER_TEST_PAUSE";

/// Values longer than this (before base64) are gzip-compressed when allowed.
pub const GZIP_THRESHOLD: usize = 256;

/// Decoded output is capped (a hostile cmdline must not inflate without bound).
const MAX_DECODED: u64 = 1 << 20;

/// Errors decoding an encoded value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// Not base64.
    #[error("{VAR}: invalid base64: {0}")]
    Base64(String),
    /// Bad gzip stream.
    #[error("{VAR}: invalid gzip data: {0}")]
    Gzip(String),
    /// Not UTF-8 text.
    #[error("{VAR}: not UTF-8 text")]
    Utf8,
    /// A `key=value` item is malformed.
    #[error("{VAR}: item {0:?} is not KEY=VALUE")]
    Item(String),
    /// A key does not parse or is out of range.
    #[error("{0}")]
    Key(String),
}

/// Parses a META key like Go's `strconv.ParseUint(k, 0, 8)`: decimal, `0x` hex, `0o` or
/// leading-`0` octal, `0b` binary; 0..=0xff.
pub fn parse_key(k: &str) -> Result<u8, String> {
    let lower = k.trim().to_ascii_lowercase();
    let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (b, 2)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (o, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let v = u64::from_str_radix(digits, radix)
        .map_err(|_| format!("META key {k:?} is not a number"))?;
    u8::try_from(v).map_err(|_| format!("META key {k:?} is out of range (0..=0xff)"))
}

/// Encodes values in the given order (tags in lowercase hex without padding).
pub fn encode(values: &[(u8, String)], allow_gzip: bool) -> String {
    let raw = values
        .iter()
        .map(|(k, v)| format!("0x{k:x}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let bytes = if allow_gzip && raw.len() > GZIP_THRESHOLD {
        // Go's gzip header: mtime 0, no name
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), flate2::Compression::best());
        match gz.write_all(raw.as_bytes()).and_then(|_| gz.finish()) {
            Ok(b) => b,
            // writing into a Vec cannot fail; fall back to the plain form regardless
            Err(_) => raw.into_bytes(),
        }
    } else {
        raw.into_bytes()
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes an encoded value back into pairs, in order.
pub fn decode(enc: &str) -> Result<Vec<(u8, String)>, EnvError> {
    let mut b = base64::engine::general_purpose::STANDARD
        .decode(enc.trim())
        .map_err(|e| EnvError::Base64(e.to_string()))?;
    if b.len() >= 10 && b[0] == 0x1f && b[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&b[..])
            .take(MAX_DECODED)
            .read_to_end(&mut out)
            .map_err(|e| EnvError::Gzip(e.to_string()))?;
        b = out;
    }
    let s = String::from_utf8(b).map_err(|_| EnvError::Utf8)?;
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| EnvError::Item(p.to_string()))?;
            Ok((parse_key(k).map_err(EnvError::Key)?, v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn plain_and_gzip() {
        let v = vec![(0x0a, "{\"a\":1}".to_string()), (0x0c, "x".to_string())];
        let e = encode(&v, true);
        assert_eq!(b64(&e), b"0xa={\"a\":1};0xc=x");
        assert_eq!(decode(&e).unwrap(), v);
        let long = vec![(0x0a, "y".repeat(300))];
        let e = encode(&long, true);
        assert_eq!(&b64(&e)[..2], &[0x1f, 0x8b]);
        assert_eq!(decode(&e).unwrap(), long);
        // versions before 1.6.3 never gzip
        assert_eq!(b64(&encode(&long, false))[0], b'0');
        // exactly 256 bytes stays plain
        let edge = vec![(0x0a, "z".repeat(256 - 4))];
        assert_eq!(b64(&encode(&edge, true))[0], b'0');
    }

    #[test]
    fn hostile_values() {
        assert!(matches!(decode("!!"), Err(EnvError::Base64(_))));
        let bad_item = base64::engine::general_purpose::STANDARD.encode("0xa");
        assert_eq!(decode(&bad_item), Err(EnvError::Item("0xa".into())));
        let bad_key = base64::engine::general_purpose::STANDARD.encode("0x100=v");
        assert!(matches!(decode(&bad_key), Err(EnvError::Key(_))));
        let mut gz = vec![0x1f, 0x8b];
        gz.extend([0u8; 10]);
        let bad_gz = base64::engine::general_purpose::STANDARD.encode(gz);
        assert!(matches!(decode(&bad_gz), Err(EnvError::Gzip(_))));
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("10"), Ok(10));
        assert_eq!(parse_key("0xa"), Ok(10));
        assert_eq!(parse_key("0XFF"), Ok(255));
        assert_eq!(parse_key("012"), Ok(10));
        assert_eq!(parse_key("0b1010"), Ok(10));
        assert!(parse_key("0x100").unwrap_err().contains("out of range"));
        assert!(parse_key("x").is_err());
        assert!(parse_key("").is_err());
    }
}
