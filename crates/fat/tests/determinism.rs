//! The same tree and options always give the same bytes, whatever the host files' metadata.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::time::{Duration, SystemTime};

use common::*;
use fat::FatOptions;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// Builds the tree afresh (re-creating the host files) and writes it at 1 MiB into `disk`.
fn build_and_write(root: &std::path::Path, disk: &std::path::Path, mtime: SystemTime) {
    let src = root.join("src");
    let _ = fs::remove_dir_all(&src);
    let (tree, _) = build_tree(&src);
    // Give the host files a run-specific mtime: it must not leak into the image.
    for e in fs::read_dir(src.join("many")).unwrap() {
        File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let opts = FatOptions::new("EFI", 0xC0FF_EE00, EPOCH);
    write_disk(disk, MIB, SIZE, &opts, &tree);
}

fn read_all(path: &std::path::Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn same_input_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_and_write(
        a.path(),
        &a.path().join("disk"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    build_and_write(b.path(), &b.path().join("disk"), SystemTime::now());
    let (x, y) = (
        read_all(&a.path().join("disk")),
        read_all(&b.path().join("disk")),
    );
    assert_eq!(x.len(), y.len());
    let first_diff = x.iter().zip(&y).position(|(p, q)| p != q);
    assert_eq!(first_diff, None, "images differ");
    // And the image is not trivially empty.
    assert!(x[MIB as usize..].iter().filter(|&&b| b != 0).count() > 300_000);
}

#[test]
fn options_change_the_bytes() {
    // Guards the test above against comparing two things that cannot differ.
    let d = tempfile::tempdir().unwrap();
    let (tree, _) = build_tree(&d.path().join("src"));
    let mut opts = FatOptions::new("EFI", 1, EPOCH);
    write_disk(&d.path().join("one"), MIB, SIZE, &opts, &tree);
    opts.timestamp += 2;
    write_disk(&d.path().join("two"), MIB, SIZE, &opts, &tree);
    assert_ne!(
        read_all(&d.path().join("one")),
        read_all(&d.path().join("two"))
    );
}
