//! Lenient PEM: text in (one or more `-----BEGIN X-----` blocks, surrounding text and CRLF
//! tolerated), `(label, DER bytes)` out; and DER in, 64-column PEM text out.

use crate::Error;

/// One decoded PEM block.
pub(crate) struct Block {
    /// The label, e.g. `PUBLIC KEY`.
    pub label: String,
    /// The decoded body.
    pub der: Vec<u8>,
}

/// Decodes every PEM block of `text`, in order. Headers (`Key: value` lines) are skipped.
pub(crate) fn parse_all(text: &[u8]) -> Result<Vec<Block>, Error> {
    let text = std::str::from_utf8(text).map_err(|_| Error::Pem("not UTF-8 text".into()))?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let end_label = after
            .find("-----")
            .ok_or_else(|| Error::Pem("unterminated BEGIN line".into()))?;
        let label = after[..end_label].to_string();
        let body_start = &after[end_label + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| Error::Pem(format!("missing {end_marker}")))?;
        let body: String = body_start[..body_end]
            .lines()
            .filter(|l| !l.contains(':'))
            .collect::<Vec<_>>()
            .concat();
        let der = crate::unb64(&body).map_err(|e| Error::Pem(format!("{label}: {e}")))?;
        out.push(Block { label, der });
        rest = &body_start[body_end + end_marker.len()..];
    }
    Ok(out)
}

/// Decodes the single PEM block of `text` (the first one if several).
pub(crate) fn parse_one(text: &[u8]) -> Result<Block, Error> {
    parse_all(text)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Pem("no PEM block found".into()))
}

/// Encodes DER as PEM with 64-column lines and LF endings (as Go's `encoding/pem`).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b = crate::b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
