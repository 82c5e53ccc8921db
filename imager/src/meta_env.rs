//! `INSTALLER_META_BASE64` (spec §5): META values carried on the kernel cmdline by outputs
//! that have no META partition.
//!
//! In: tag/value pairs. Out: `base64([gzip -9 if > 256 bytes and the version allows](
//! "0x<tag>=<value>;…"))`; and the reverse.

use base64::Engine as _;
use std::io::{Read, Write};

/// Encodes values (in the given order, tags in lowercase hex without padding).
pub fn encode(values: &[(u8, String)], allow_gzip: bool) -> String {
    let raw = values
        .iter()
        .map(|(k, v)| format!("0x{k:x}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let bytes = if allow_gzip && raw.len() > 256 {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), flate2::Compression::best());
        // writing into a Vec cannot fail
        let _ = gz.write_all(raw.as_bytes());
        gz.finish().unwrap_or_default()
    } else {
        raw.into_bytes()
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes an encoded value back into pairs.
pub fn decode(enc: &str) -> Result<Vec<(u8, String)>, String> {
    let mut b = base64::engine::general_purpose::STANDARD
        .decode(enc.trim())
        .map_err(|e| format!("INSTALLER_META_BASE64: {e}"))?;
    if b.len() >= 10 && b[0] == 0x1f && b[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&b[..])
            .take(1 << 20)
            .read_to_end(&mut out)
            .map_err(|e| format!("INSTALLER_META_BASE64: gzip: {e}"))?;
        b = out;
    }
    let s = String::from_utf8(b).map_err(|_| "INSTALLER_META_BASE64: not UTF-8".to_string())?;
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or(format!("INSTALLER_META_BASE64: {p:?}"))?;
            Ok((crate::parse_meta_key(k)?, v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_and_gzip() {
        let v = vec![(0x0a, "{\"a\":1}".to_string()), (0x0c, "x".to_string())];
        let e = encode(&v, true);
        assert_eq!(
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(&e)
                    .unwrap()
            )
            .unwrap(),
            "0xa={\"a\":1};0xc=x"
        );
        assert_eq!(decode(&e).unwrap(), v);
        let long = vec![(0x0a, "y".repeat(300))];
        let e = encode(&long, true);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&e)
            .unwrap();
        assert_eq!(&raw[..2], &[0x1f, 0x8b]);
        assert_eq!(decode(&e).unwrap(), long);
        // older versions never gzip
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encode(&long, false))
            .unwrap();
        assert_eq!(raw[0], b'0');
    }
}
