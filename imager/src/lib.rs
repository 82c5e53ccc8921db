//! The imager library: profile → resolved profile → verified inputs → assembled outputs.
//!
//! `profile` parses, merges, defaults and validates (spec §1); `cmdline` renders the kernel
//! command line (§10); `meta_env` encodes META for the cmdline (§5); `build` checks inputs and
//! writes the artifacts of §2 (disk images through the installer library), each via a temp
//! name in the output directory and renamed when complete.

pub mod boot;
pub mod build;
pub mod cmdline;
pub mod error;
pub mod meta_env;
pub mod profile;
pub mod quirks;

/// Parses a META key like Go's `strconv.ParseUint(k, 0, 8)`: decimal, `0x` hex, `0o`/`0`
/// octal, `0b` binary.
pub fn parse_meta_key(k: &str) -> Result<u8, String> {
    let t = k.trim();
    let lower = t.to_ascii_lowercase();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys() {
        assert_eq!(parse_meta_key("10"), Ok(10));
        assert_eq!(parse_meta_key("0xa"), Ok(10));
        assert_eq!(parse_meta_key("0XFF"), Ok(255));
        assert_eq!(parse_meta_key("012"), Ok(10));
        assert_eq!(parse_meta_key("0b1010"), Ok(10));
        assert!(
            parse_meta_key("0x100")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_meta_key("x").is_err());
        assert!(parse_meta_key("").is_err());
    }
}
