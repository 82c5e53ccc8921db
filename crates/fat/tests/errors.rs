//! Every error case gives the right `FatError` variant, naming the path at fault.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::Cursor;

use fat::{FatError, FatOptions, Source, Tree};

const MIB: u64 = 1 << 20;

fn opts() -> FatOptions {
    FatOptions::new("EFI", 7, common::EPOCH)
}

/// Writes into an in-memory sink (only metadata is written for these small trees).
fn write(size: u64, opts: &FatOptions, tree: &Tree) -> Result<fat::FatStats, FatError> {
    let mut sink = Cursor::new(Vec::new());
    fat::write_fat32(&mut sink, 4096, size, opts, tree)
}

fn one_file() -> Tree {
    let mut t = Tree::new();
    t.add_file("EFI/BOOT/BOOTX64.EFI", Source::Bytes(vec![1; 1000]), false)
        .unwrap();
    t
}

#[test]
fn too_small_for_fat32() {
    let mut o = opts();
    o.sectors_per_cluster = Some(8);
    let err = write(16 * MIB, &o, &one_file()).unwrap_err();
    assert!(
        matches!(
            err,
            FatError::TooSmall {
                sectors_per_cluster: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("16777216"), "{err}");

    // With 512-byte sectors and 1 sector per cluster FAT32 needs about 32.5 MiB.
    let err = write(32 * MIB, &opts(), &one_file()).unwrap_err();
    assert!(
        matches!(
            err,
            FatError::TooSmall {
                sectors_per_cluster: 1,
                ..
            }
        ),
        "{err}"
    );
    let stats = write(33 * MIB, &opts(), &one_file()).unwrap();
    assert!(u64::from(stats.total_clusters) >= fat::MIN_FAT32_CLUSTERS);

    // allow_small accepts what mkfs.fat -F 32 accepts, but not a volume with no room at all.
    o.allow_small = true;
    assert!(write(16 * MIB, &o, &one_file()).is_ok());
    assert!(matches!(
        write(16 * 1024, &o, &Tree::new()),
        Err(FatError::TooSmall { .. })
    ));
}

#[test]
fn duplicate_names_differing_in_case() {
    let mut t = Tree::new();
    t.add_file("loader/loader.conf", Source::Bytes(b"a".to_vec()), false)
        .unwrap();
    let err = t
        .add_file("loader/Loader.CONF", Source::Bytes(b"b".to_vec()), false)
        .unwrap_err();
    assert!(
        matches!(&err, FatError::Duplicate { path } if path == "loader/Loader.CONF"),
        "{err}"
    );
    assert!(err.to_string().contains("loader/Loader.CONF"));

    let err = t.add_dir("LOADER/entries").unwrap_err();
    assert!(
        matches!(&err, FatError::Duplicate { path } if path == "LOADER"),
        "{err}"
    );
    let err = t
        .add_file("loader/loader.conf", Source::Bytes(Vec::new()), false)
        .unwrap_err();
    assert!(
        matches!(&err, FatError::Duplicate { path } if path == "loader/loader.conf"),
        "{err}"
    );
    // Non-ASCII names compare case-insensitively too.
    t.add_dir("Ärger").unwrap();
    assert!(matches!(
        t.add_dir("äRGER"),
        Err(FatError::Duplicate { .. })
    ));
    // Re-adding an existing directory is fine; a file in the way of a directory is not.
    t.add_dir("loader").unwrap();
    let err = t.add_dir("loader/loader.conf/x").unwrap_err();
    assert!(
        matches!(&err, FatError::NotADirectory { path } if path == "loader/loader.conf"),
        "{err}"
    );
}

#[test]
fn invalid_names() {
    let long = "n".repeat(256);
    for bad in [
        "EFI/bad:name.efi",
        "EFI/what?",
        "a//b",
        "x/../y",
        "x/./y",
        "tab\there",
        "dot.",
        "space ",
        "a\\b",
        &long,
    ] {
        let err = Tree::new()
            .add_file(bad, Source::Bytes(Vec::new()), false)
            .unwrap_err();
        match &err {
            FatError::InvalidName { path, .. } => assert_eq!(path, bad.trim_matches('/')),
            other => panic!("{bad}: expected InvalidName, got {other:?}"),
        }
        assert!(err.to_string().contains(bad), "{err}");
    }
    assert!(matches!(
        Tree::new().add_file("/", Source::Bytes(Vec::new()), false),
        Err(FatError::InvalidName { .. })
    ));
    // 255 UTF-16 units is the limit, not an error.
    Tree::new()
        .add_file(&"n".repeat(255), Source::Bytes(Vec::new()), false)
        .unwrap();
}

#[test]
fn content_too_big_for_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.bin");
    File::create(&huge).unwrap().set_len(40 * MIB).unwrap(); // sparse
    let mut t = one_file();
    t.add_file("EFI/Linux/huge.efi", Source::Path(huge), false)
        .unwrap();
    let err = write(36 * MIB, &opts(), &t).unwrap_err();
    assert!(
        matches!(&err, FatError::NoSpace { path, .. } if path == "EFI/Linux/huge.efi"),
        "{err}"
    );
    assert!(err.to_string().contains("EFI/Linux/huge.efi"));
}

#[test]
fn file_larger_than_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    File::create(&big).unwrap().set_len(1 << 32).unwrap(); // sparse, 4 GiB exactly
    let err = Tree::new()
        .add_file("big.bin", Source::Path(big), false)
        .unwrap_err();
    assert!(
        matches!(&err, FatError::FileTooLarge { path, size } if path == "big.bin" && *size == 1 << 32),
        "{err}"
    );
}

#[test]
fn host_dir_refuses_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("esp/EFI")).unwrap();
    fs::write(dir.path().join("esp/EFI/a.efi"), b"a").unwrap();
    std::os::unix::fs::symlink("a.efi", dir.path().join("esp/EFI/link.efi")).unwrap();
    let err = Tree::new()
        .add_host_dir(&dir.path().join("esp"), "")
        .unwrap_err();
    assert!(
        matches!(
            &err,
            FatError::Unsupported {
                kind: "symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("esp/EFI/link.efi"), "{err}");
    // Host names that are not valid FAT names are refused with the tree path.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("what?"), b"?").unwrap();
    let err = Tree::new().add_host_dir(dir.path(), "top").unwrap_err();
    assert!(
        matches!(&err, FatError::InvalidName { path, .. } if path == "top/what?"),
        "{err}"
    );
}

#[test]
fn source_changed_after_adding() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grow.bin");
    fs::write(&f, b"short").unwrap();
    let mut t = Tree::new();
    t.add_file("grow.bin", Source::Path(f.clone()), false)
        .unwrap();
    fs::write(&f, b"much longer now").unwrap();
    let err = write(64 * MIB, &opts(), &t).unwrap_err();
    assert!(
        matches!(&err, FatError::SourceChanged { path } if path.ends_with("grow.bin")),
        "{err}"
    );
    fs::write(&f, b"shr").unwrap();
    assert!(matches!(
        write(64 * MIB, &opts(), &t),
        Err(FatError::SourceChanged { .. })
    ));
    fs::remove_file(&f).unwrap();
    assert!(
        matches!(write(64 * MIB, &opts(), &t), Err(FatError::Io { path, .. }) if path.ends_with("grow.bin"))
    );
}

#[test]
fn invalid_options() {
    let t = one_file();
    for (label, ss, spc) in [
        ("TWELVE CHARS", 512, None),
        ("A/B", 512, None),
        ("EFI", 1000, None),
        ("EFI", 512, Some(3)),
    ] {
        let mut o = opts();
        o.label = label.to_string();
        o.sector_size = ss;
        o.sectors_per_cluster = spc;
        assert!(
            matches!(write(64 * MIB, &o, &t), Err(FatError::InvalidOptions(_))),
            "{label} {ss} {spc:?}"
        );
    }
}

#[test]
fn directory_with_too_many_entries() {
    let mut t = Tree::new();
    // Each name needs 2 LFN entries + 1 short entry: 22000 * 3 > 65536 slots.
    for i in 0..22_000 {
        t.add_file(
            &format!("big/f{i}-long-name.x"),
            Source::Bytes(Vec::new()),
            false,
        )
        .unwrap();
    }
    let err = write(256 * MIB, &opts(), &t).unwrap_err();
    assert!(
        matches!(&err, FatError::DirectoryTooLarge { path } if path == "big"),
        "{err}"
    );
}
