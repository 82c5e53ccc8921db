//! FAT names: long-name validation, 8.3 short names, VFAT long-file-name (LFN) entries.
//!
//! In: one path component (a UTF-8 name). Out: whether it is a valid long name, its
//! case-insensitive comparison key, its short name (exact when the name already is an
//! uppercase 8.3 name, upper-cased when it is 8.3 apart from case, otherwise generated with the
//! basis-name + `~N` algorithm), and the 32-byte LFN directory entries that carry the long name.

use std::collections::{BTreeMap, BTreeSet};

/// Longest long name in UTF-16 code units.
const MAX_LFN_UNITS: usize = 255;
/// UTF-16 code units stored in one LFN entry.
const UNITS_PER_LFN: usize = 13;
/// Byte offsets of the 13 UTF-16 units inside an LFN entry.
const LFN_OFFSETS: [usize; UNITS_PER_LFN] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/// Attribute byte that marks an LFN entry.
pub(crate) const ATTR_LFN: u8 = 0x0F;
/// Sequence-number flag on the last (first stored) LFN entry.
pub(crate) const LFN_LAST: u8 = 0x40;

/// Checks that `name` is usable as a VFAT long name; returns the reason if not.
pub(crate) fn validate_long_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are reserved".into());
    }
    if let Some(c) = name.chars().find(|&c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
        return Err(format!("character {c:?} is not allowed in FAT names"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("trailing dots and spaces are dropped by FAT drivers".into());
    }
    if name.encode_utf16().count() > MAX_LFN_UNITS {
        return Err(format!("longer than {MAX_LFN_UNITS} UTF-16 code units"));
    }
    Ok(())
}

/// The key FAT drivers compare names by: case-insensitive (Unicode upper case).
pub(crate) fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

/// Whether `b` may appear in a short name we write (ASCII only, no lowercase, no space).
fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b)
}

/// Packs a base (≤ 8 bytes) and extension (≤ 3 bytes) into the space-padded 11-byte form.
fn pack(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    out
}

/// The 11-byte short name if `name` already is an exact uppercase 8.3 name (such names get
/// no LFN entries), else `None`.
pub(crate) fn exact_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) => (b.as_bytes(), e.as_bytes()),
        None => (name.as_bytes(), &[][..]),
    };
    let ok = (1..=8).contains(&base.len())
        && ext.len() <= 3
        && (!ext.is_empty() || !name.contains('.'))
        && base.iter().chain(ext).all(|&b| short_char_ok(b));
    ok.then(|| pack(base, ext))
}

/// The basis name of the Windows/Linux short-name algorithm: upper-cased, spaces and leading
/// or embedded dots removed, characters not allowed in short names (incl. non-ASCII) turned
/// into `_`, base cut to 8 and extension (after the last dot) to 3 characters. `lossy` says
/// whether anything was changed other than letter case.
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let mut lossy = false;
    let mut cleaned = String::new();
    for c in name.chars() {
        if c == ' ' || (c == '.' && cleaned.is_empty()) {
            lossy = true;
        } else {
            cleaned.push(c);
        }
    }
    let (base, ext) = match cleaned.rfind('.') {
        Some(i) => (&cleaned[..i], &cleaned[i + 1..]),
        None => (cleaned.as_str(), ""),
    };
    let mut convert = |part: &str, max: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for c in part.chars() {
            if c == '.' {
                lossy = true;
                continue;
            }
            let b = u8::try_from(c.to_ascii_uppercase()).unwrap_or(b'?');
            let b = if short_char_ok(b) {
                b
            } else {
                lossy = true;
                b'_'
            };
            if out.len() < max {
                out.push(b);
            } else {
                lossy = true;
            }
        }
        out
    };
    let mut base = convert(base, 8);
    let ext = convert(ext, 3);
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    (base, ext, lossy)
}

/// Short names for all names of one directory (in the given order), each with whether it
/// needs LFN entries. Exact uppercase 8.3 names are kept as they are (no LFN); names that are
/// 8.3 apart from letter case get their upper-cased form (with LFN). Both are reserved first,
/// so no generated name can equal another entry's name. Every other name gets its basis cut
/// so that `~N` fits in 8 characters, with the smallest N still free, in the given order.
pub(crate) fn assign_short_names(names: &[&str]) -> Vec<([u8; 11], bool)> {
    let fixed: Vec<Option<([u8; 11], bool)>> = names
        .iter()
        .map(|n| match exact_short_name(n) {
            Some(short) => Some((short, false)),
            None => {
                let (base, ext, lossy) = basis(n);
                (!lossy).then(|| (pack(&base, &ext), true))
            }
        })
        .collect();
    let mut used: BTreeSet<[u8; 11]> = fixed.iter().flatten().map(|(s, _)| *s).collect();
    // Next `~N` to try per basis, so many similar names stay linear.
    let mut next_tail: BTreeMap<[u8; 11], u32> = BTreeMap::new();
    let mut tailed = |name: &str| {
        let (base, ext, _) = basis(name);
        let key = pack(&base, &ext);
        let mut n = next_tail.get(&key).copied().unwrap_or(1);
        loop {
            let tail = format!("~{n}");
            let keep = base.len().min(8usize.saturating_sub(tail.len()));
            let candidate = pack(&[&base[..keep], tail.as_bytes()].concat(), &ext);
            n += 1;
            if used.insert(candidate) {
                next_tail.insert(key, n);
                return candidate;
            }
        }
    };
    names
        .iter()
        .zip(fixed)
        .map(|(n, f)| f.unwrap_or_else(|| (tailed(n), true)))
        .collect()
}

/// The short-name checksum stored in every LFN entry.
pub(crate) fn checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// Number of LFN entries needed for `name`.
pub(crate) fn lfn_count(name: &str) -> usize {
    name.encode_utf16().count().div_ceil(UNITS_PER_LFN)
}

/// The LFN entries for `name` in on-disk order (highest sequence number, flagged 0x40, first).
/// The name is NUL-terminated when it does not fill the last entry, then padded with 0xFFFF.
pub(crate) fn lfn_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = lfn_count(name);
    let sum = checksum(short);
    (0..count)
        .rev()
        .map(|i| {
            let mut e = [0u8; 32];
            // count <= 20 because names are at most 255 units long.
            e[0] = (i as u8 + 1) | if i + 1 == count { LFN_LAST } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = sum;
            for (j, &off) in LFN_OFFSETS.iter().enumerate() {
                let idx = i * UNITS_PER_LFN + j;
                let unit = match idx.cmp(&units.len()) {
                    std::cmp::Ordering::Less => units[idx],
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 0xFFFF,
                };
                e[off..off + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

/// Decodes the UTF-16 units stored in one LFN entry (all 13, including padding).
pub(crate) fn lfn_units(entry: &[u8]) -> [u16; UNITS_PER_LFN] {
    LFN_OFFSETS.map(|off| u16::from_le_bytes([entry[off], entry[off + 1]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(b: &[u8; 11]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn exact_names() {
        assert_eq!(
            exact_short_name("BOOTX64.EFI")
                .map(|b| s(&b).to_string())
                .unwrap(),
            "BOOTX64 EFI"
        );
        assert!(exact_short_name("EFI").is_some());
        assert!(exact_short_name("efi").is_none());
        assert!(exact_short_name("LOADER.CONF").is_none());
        assert!(exact_short_name("A.B.C").is_none());
        assert!(exact_short_name("A+B").is_none());
    }

    #[test]
    fn generated_names() {
        let mut names = vec![
            "efi",
            "loader.conf",
            "Talos-v1.14.0.efi",
            "my file+x.tar.gz",
            ".bashrc",
        ];
        let many: Vec<String> = (1..=10).map(|i| format!("longname-{i}.txt")).collect();
        names.extend(many.iter().map(String::as_str));
        names.extend(["longna~3.txt", "LONGNA~5.TXT"]);
        let got: Vec<(String, bool)> = assign_short_names(&names)
            .iter()
            .map(|(b, l)| (s(b).to_string(), *l))
            .collect();
        let want = [
            "EFI        ",
            "LOADER~1CON",
            "TALOS-~1EFI",
            "MYFILE~1GZ ",
            "BASHRC~1   ",
            // ~3 and ~5 belong to the two names at the end (one with LFN, one exact).
            "LONGNA~1TXT",
            "LONGNA~2TXT",
            "LONGNA~4TXT",
            "LONGNA~6TXT",
            "LONGNA~7TXT",
            "LONGNA~8TXT",
            "LONGNA~9TXT",
            "LONGN~10TXT",
            "LONGN~11TXT",
            "LONGN~12TXT",
            "LONGNA~3TXT",
            "LONGNA~5TXT",
        ];
        assert_eq!(
            got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            want
        );
        assert!(got[..got.len() - 1].iter().all(|(_, lfn)| *lfn));
        assert!(!got[got.len() - 1].1);
    }

    #[test]
    fn checksum_known_value() {
        // Checksum of "FOO     BAR" computed by hand with the FAT spec's algorithm.
        let mut sum = 0u8;
        for &b in b"FOO     BAR" {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(b);
        }
        assert_eq!(checksum(b"FOO     BAR"), sum);
    }

    #[test]
    fn lfn_layout() {
        let short = *b"LOADER~1CON";
        let e = lfn_entries("loader.conf", &short);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0][0], 0x41);
        let units = lfn_units(&e[0]);
        let name: Vec<u16> = "loader.conf".encode_utf16().collect();
        assert_eq!(&units[..11], &name[..]);
        assert_eq!(units[11], 0);
        assert_eq!(units[12], 0xFFFF);
        let long = "x".repeat(26);
        let e = lfn_entries(&long, &short);
        assert_eq!((e.len(), e[0][0], e[1][0]), (2, 0x42, 0x01));
        assert!(lfn_units(&e[0]).iter().all(|&u| u == u16::from(b'x')));
    }
}
