//! Name mapping: Talos' `VolumeID` (docs/formats/iso.md) and ISO 9660 level 3 identifiers.
//!
//! In: original (Rock Ridge) names. Out: d-character identifiers (`NAME.EXT;1` for files,
//! `NAME` for directories, at most 30/31 characters), made unique per directory with a
//! numeric suffix like xorriso does, and the ECMA-119 §9.3 sort key.

use std::collections::BTreeSet;

/// Talos' `VolumeID(label)`: uppercase; keep `[A-Z0-9]`; map `_ - .` to `_`; drop everything
/// else; truncate to 32. `Talos-v1.7.6` → `TALOS_V1_7_6`.
pub fn volume_id(label: &str) -> String {
    label
        .chars()
        .filter_map(|c| {
            let u = c.to_ascii_uppercase();
            if u.is_ascii_uppercase() || u.is_ascii_digit() {
                Some(u)
            } else if matches!(c, '_' | '-' | '.') {
                Some('_')
            } else {
                None
            }
        })
        .take(32)
        .collect()
}

fn dchars(s: &str) -> String {
    s.chars()
        .map(|c| {
            let u = c.to_ascii_uppercase();
            if u.is_ascii_uppercase() || u.is_ascii_digit() {
                u
            } else {
                '_'
            }
        })
        .collect()
}

/// The ISO identifier parts (name, extension) of an original name; extension `None` for
/// directories.
fn split(orig: &str, dir: bool) -> (String, Option<String>) {
    if dir {
        let mut n = dchars(orig);
        n.truncate(31);
        return (n, None);
    }
    let (base, ext) = match orig.rfind('.') {
        Some(i) if i > 0 => (&orig[..i], &orig[i + 1..]),
        _ => (orig, ""),
    };
    let mut ext = dchars(ext);
    ext.truncate(8.min(ext.len()));
    let mut base = dchars(base);
    base.truncate(30 - ext.len());
    (base, Some(ext))
}

fn join(base: &str, ext: &Option<String>) -> String {
    match ext {
        Some(e) => format!("{base}.{e};1"),
        None => base.to_string(),
    }
}

/// Assigns unique ISO identifiers to the children of one directory, in the given order
/// (sorted original names, so the result is deterministic). Colliding names get the last
/// characters of their base replaced by a 3..6 digit counter.
pub(crate) fn assign(children: &[(&str, bool)]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    let mut out = Vec::with_capacity(children.len());
    for (orig, dir) in children {
        let (base, ext) = split(orig, *dir);
        let mut id = join(&base, &ext);
        let mut n = 0u32;
        while taken.contains(&id) {
            let digits = format!("{n:03}");
            let room = if *dir {
                31
            } else {
                30 - ext.as_ref().map_or(0, |e| e.len())
            };
            let keep = base.len().min(room.saturating_sub(digits.len()));
            id = join(&format!("{}{digits}", &base[..keep]), &ext);
            n += 1;
        }
        taken.insert(id.clone());
        out.push(id);
    }
    out
}

/// ECMA-119 §9.3 ordering key: name part, then extension, each compared as if padded with
/// spaces (all d-characters sort above the space, so plain byte order is equivalent).
pub(crate) fn sort_key(id: &str) -> (Vec<u8>, Vec<u8>) {
    let id = id.split(';').next().unwrap_or(id);
    match id.split_once('.') {
        Some((n, e)) => (n.as_bytes().to_vec(), e.as_bytes().to_vec()),
        None => (id.as_bytes().to_vec(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        assert_eq!(volume_id("Talos-v1.7.6"), "TALOS_V1_7_6");
        assert_eq!(volume_id("Talos-v1.14.0"), "TALOS_V1_14_0");
        assert_eq!(volume_id("a b+c_d"), "ABC_D");
        assert_eq!(volume_id(&"x".repeat(40)).len(), 32);
    }

    #[test]
    fn identifiers() {
        let ids = assign(&[
            ("BOOTX64.EFI", false),
            ("bootx64.efi", false),
            ("vmlinuz", false),
            ("grub", true),
            ("initramfs.xz", false),
            ("a-very-long-file-name-that-goes-beyond-thirty.conf", false),
        ]);
        assert_eq!(ids[0], "BOOTX64.EFI;1");
        assert_eq!(ids[1], "BOOTX64000.EFI;1");
        assert_eq!(ids[2], "VMLINUZ.;1");
        assert_eq!(ids[3], "GRUB");
        assert_eq!(ids[4], "INITRAMFS.XZ;1");
        assert_eq!(ids[5], "A_VERY_LONG_FILE_NAME_THAT.CONF;1");
        assert!(sort_key("A.B;1") < sort_key("AB.;1"));
    }
}
