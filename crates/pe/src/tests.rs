//! A small synthetic PE32+ (two sections, a symbol table at the end), assembled, stripped,
//! parsed back and hashed.
#![allow(clippy::unwrap_used)]

use super::*;

use crate::testing::stub;

fn assembled(s: &[u8], sections: &[(&str, Source)]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = assemble(s, sections, 1_700_000_000, &mut out).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

#[test]
fn stub_with_symbols_is_refused_until_stripped() {
    let with = stub(54);
    let e = assemble(&with, &[], 0, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("COFF symbol table (3 symbols at 0x600)"), "{e}");
    let stripped = strip_symbols(&with).unwrap();
    assert_eq!(stripped, stub(0));
    assert_eq!(Pe::parse(&stripped).unwrap().symbols, (0, 0));
}

#[test]
fn sections_are_appended_as_talos_lays_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, vec![0xabu8; 0x1234]).unwrap();
    let out = assembled(
        &stub(0),
        &[
            (".osrel", Source::Bytes(b"ID=talos\n".to_vec())),
            (".cmdline", Source::Bytes(b"console=ttyS0".to_vec())),
            (".linux", Source::File(kernel)),
        ],
    );
    let pe = Pe::parse(&out).unwrap();
    assert_eq!(pe.pe_offset, 0x80);
    assert_eq!(pe.timestamp, 1_700_000_000);
    assert_eq!(
        pe.size_of_headers, 0x400,
        "0x80 + 4 + 20 + 240 + 5 × 40, aligned to 0x200"
    );
    let names: Vec<&str> = pe.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".text", ".sdmagic", ".osrel", ".cmdline", ".linux"]);
    // the stub's sections keep their RVAs and contents; their data moved after the headers
    assert_eq!(pe.sections[0].virtual_address, 0x1000);
    assert_eq!(pe.sections[1].virtual_address, 0x2000);
    assert_eq!(pe.section_data(&pe.sections[1]), b"#### sd-stub ###");
    // the new ones follow at the section alignment, data sequential and file-aligned
    let s = &pe.sections[2..];
    assert_eq!(
        s.iter().map(|s| s.virtual_address).collect::<Vec<_>>(),
        [0x3000, 0x4000, 0x5000]
    );
    assert_eq!(
        s.iter().map(|s| s.raw_ptr).collect::<Vec<_>>(),
        [0x800, 0xa00, 0xc00]
    );
    assert_eq!(s[2].raw_size, 0x1400);
    assert!(s.iter().all(|s| s.characteristics == DATA_READ));
    assert_eq!(
        pe.section_data(pe.section(".cmdline").unwrap()),
        b"console=ttyS0"
    );
    assert_eq!(pe.section_data(&s[2]), vec![0xabu8; 0x1234].as_slice());
    assert_eq!(pe.size_of_image, 0x7000);
    assert_eq!(out.len(), 0xc00 + 0x1400);
    // linker version and checksum zeroed
    let opt = 0x80 + 24;
    assert_eq!(out[opt + 2], 0);
    assert_eq!(&out[opt + 64..opt + 68], &[0; 4]);
    // deterministic
    assert_eq!(
        out,
        assembled(
            &stub(0),
            &[
                (".osrel", Source::Bytes(b"ID=talos\n".to_vec())),
                (".cmdline", Source::Bytes(b"console=ttyS0".to_vec())),
                (".linux", Source::Bytes(vec![0xab; 0x1234])),
            ],
        )
    );
    // bad names
    for bad in ["", ".toolongname"] {
        let e = assemble(
            &stub(0),
            &[(bad, Source::Bytes(vec![1]))],
            0,
            &mut Vec::new(),
        );
        assert!(e.is_err(), "{bad:?}");
    }
}

#[test]
fn authenticode_digest_skips_checksum_and_certificate_entry() {
    let img = assembled(&stub(0), &[(".cmdline", Source::Bytes(b"x".to_vec()))]);
    let h = Pe::parse(&img).unwrap().authenticode_sha256().unwrap();
    let opt = 0x80 + 24;
    let mut other = img.clone();
    other[opt + 64] = 0x77; // checksum
    assert_eq!(Pe::parse(&other).unwrap().authenticode_sha256().unwrap(), h);
    // a certificate table appended and named: not part of the digest
    let mut signed = img.clone();
    let at = signed.len() as u32;
    let mut cert = 16u32.to_le_bytes().to_vec();
    cert.extend(0x0200u16.to_le_bytes());
    cert.extend(2u16.to_le_bytes());
    cert.extend(b"PKCS#7!!");
    signed.extend(&cert);
    let dir = opt + 112 + 8 * DIR_SECURITY;
    signed[dir..dir + 4].copy_from_slice(&at.to_le_bytes());
    signed[dir + 4..dir + 8].copy_from_slice(&16u32.to_le_bytes());
    let pe = Pe::parse(&signed).unwrap();
    assert_eq!(pe.authenticode_sha256().unwrap(), h);
    assert_eq!(pe.signatures(), vec![b"PKCS#7!!".as_slice()]);
    // any other byte counts
    let mut changed = img;
    let last = changed.len() - 1;
    changed[last] ^= 1;
    assert_ne!(
        Pe::parse(&changed).unwrap().authenticode_sha256().unwrap(),
        h
    );
}

#[test]
fn bzimage_release_from_the_boot_header() {
    let mut k = vec![0u8; 0x4000];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x20e..0x210].copy_from_slice(&0x3000u16.to_le_bytes());
    let v = b"6.1.0-28-amd64 (debian-kernel@lists.d) ";
    k[0x3200..0x3200 + v.len()].copy_from_slice(v);
    assert_eq!(bzimage_release(&k).as_deref(), Some("6.1.0-28-amd64"));
    k[0x202] = b'X';
    assert_eq!(bzimage_release(&k), None);
    assert_eq!(bzimage_release(b"short"), None);
}

#[test]
fn hostile_headers_are_errors() {
    let good = stub(0);
    let mut t = good.clone();
    t[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(Pe::parse(&t).is_err());
    let mut t = good.clone();
    t[0x44 + 2..0x44 + 4].copy_from_slice(&500u16.to_le_bytes());
    assert!(Pe::parse(&t).is_err());
    let mut t = good.clone();
    // section data past the end
    let st = 0x44 + 20 + 240;
    t[st + 20..st + 24].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(Pe::parse(&t).is_err());
    for n in 0..good.len() {
        let _ = Pe::parse(&good[..n]);
    }
    // a symbol table past the end of the file (found by fuzzing)
    let mut t = stub(54);
    t[0x44 + 8..0x44 + 12].copy_from_slice(&0x7000u32.to_le_bytes());
    assert!(strip_symbols(&t).is_err());
    // no sections and an optional header longer than the file
    let mut t = good[..0x160].to_vec();
    t[0x44 + 2..0x44 + 4].copy_from_slice(&0u16.to_le_bytes());
    t[0x44 + 16..0x44 + 18].copy_from_slice(&0xf000u16.to_le_bytes());
    assert!(Pe::parse(&t).is_err());
    assert!(assemble(&t, &[], 0, &mut Vec::new()).is_err());
    // headers that would reach into the stub's first section, and odd alignments
    let mut t = stub(0);
    let st = 0x44 + 20 + 240;
    t[st + 12..st + 16].copy_from_slice(&0x100u32.to_le_bytes());
    let e = assemble(&t, &[], 0, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the stub's first section at 0x100"), "{e}");
    let mut t = stub(0);
    t[0x44 + 20 + 36..0x44 + 20 + 40].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    assert!(assemble(&t, &[], 0, &mut Vec::new()).is_err());
    // a symbol table "inside" the headers
    let mut t = stub(54);
    t[0x44 + 8..0x44 + 12].copy_from_slice(&0x10u32.to_le_bytes());
    assert!(strip_symbols(&t).is_err());
    // a section name that is not UTF-8 is kept as stored
    let mut t = good.clone();
    let st = 0x44 + 20 + 240;
    t[st..st + 8].copy_from_slice(&[0xff; 8]);
    let mut out = Vec::new();
    assemble(
        &t,
        &[(".cmdline", Source::Bytes(b"x".to_vec()))],
        0,
        &mut out,
    )
    .unwrap();
    assert_eq!(Pe::parse(&out).unwrap().sections[0].raw_name, [0xff; 8]);
    // a certificate table past the end of the file
    let mut t = good;
    let dir = 0x44 + 20 + 112 + 8 * DIR_SECURITY;
    t[dir..dir + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    t[dir + 4..dir + 8].copy_from_slice(&8u32.to_le_bytes());
    let _ = Pe::parse(&t).unwrap().authenticode_sha256();
}
