//! Writes a representative ESP tree into sparse disk files at a non-zero offset and checks the
//! result with fsck.fat, mtools and the crate's own reader.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fat::{FatOptions, Tree};

const MIB: u64 = 1 << 20;

fn opts() -> FatOptions {
    FatOptions::new("efi", 0x1234_ABCD, EPOCH)
}

/// Full check of one configuration; returns the stats.
fn roundtrip(size: u64, opts: &FatOptions, max_allocated: u64, with_mtools: bool) -> fat::FatStats {
    let dir = tempfile::tempdir().unwrap();
    let (tree, exp) = build_tree(&dir.path().join("src"));
    let offset = MIB;
    let disk = dir.path().join("disk.raw");
    let (mut f, stats) = write_disk(&disk, offset, size, opts, &tree);
    let used = allocated(&disk);
    assert!(
        used <= max_allocated,
        "disk file allocates {used} bytes, more than {max_allocated}"
    );

    reader_check(&mut f, offset, &exp, &stats);
    let img = dir.path().join("esp.img");
    extract(&mut f, offset, size, &img);
    fsck(&img, &stats);
    if with_mtools {
        mtools_check(&img, &exp, dir.path());
    }
    stats
}

#[test]
fn esp_100mib_512_byte_sectors() {
    let stats = roundtrip(100 * MIB, &opts(), 2 * MIB, true);
    assert_eq!(
        (
            stats.sectors_per_cluster,
            stats.reserved_sectors,
            stats.fat_sectors
        ),
        (1, 32, 1576)
    );
    assert_eq!(stats.total_clusters, 201_616); // what mkfs.fat -F 32 gives for 100 MiB
    // 40 names with LFN entries need several 512-byte clusters: check the chain really is long.
    let dir = tempfile::tempdir().unwrap();
    let (tree, _) = build_tree(&dir.path().join("src"));
    let (mut f, _) = write_disk(&dir.path().join("d.raw"), MIB, 100 * MIB, &opts(), &tree);
    let mut r = fat::read::FatReader::open(&mut f, MIB).unwrap();
    let many = r
        .list("")
        .unwrap()
        .into_iter()
        .find(|e| e.name == "many")
        .unwrap();
    assert!(
        r.chain(many.cluster).unwrap().len() >= 8,
        "'many' should span several clusters"
    );
}

#[test]
fn esp_2101mib_stays_sparse() {
    let stats = roundtrip(2101 * MIB, &opts(), 2 * MIB, true);
    assert_eq!(stats.sectors_per_cluster, 8);
    assert!(stats.total_clusters > 500_000);
}

#[test]
fn esp_4096_byte_sectors() {
    let mut o = opts();
    o.sector_size = 4096;
    let stats = roundtrip(300 * MIB, &o, 2 * MIB, true);
    assert_eq!((stats.sector_size, stats.sectors_per_cluster), (4096, 1));
    assert_eq!(stats.total_clusters, 76_618); // mkfs.fat -F 32 -S 4096 on 300 MiB
}

#[test]
fn small_efiboot_with_allow_small() {
    let mut o = opts();
    o.allow_small = true;
    // mtools takes any volume with fewer than 65525 clusters for FAT12/16 and finds no
    // directory slots, even on images made by `mkfs.fat -F 32` itself, so it is left out here;
    // fsck.fat (with a warning) and the crate's reader still check everything.
    let stats = roundtrip(12 * MIB, &o, 2 * MIB, false);
    assert!(u64::from(stats.total_clusters) < fat::MIN_FAT32_CLUSTERS);
}

#[test]
fn empty_tree_and_no_label() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.label = String::new();
    let (mut f, stats) = write_disk(&dir.path().join("d.raw"), MIB, 64 * MIB, &o, &Tree::new());
    assert_eq!(stats.used_clusters, 1);
    let mut r = fat::read::FatReader::open(&mut f, MIB).unwrap();
    assert_eq!(r.label().unwrap(), None);
    assert!(r.walk().unwrap().is_empty());
    let img = dir.path().join("esp.img");
    extract(&mut f, MIB, 64 * MIB, &img);
    fsck(&img, &stats);
}
