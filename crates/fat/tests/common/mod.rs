//! Shared helpers for the integration tests: a representative ESP-like tree with its expected
//! contents, sparse-file handling, and three independent checks of a written image
//! (`fsck.fat`, mtools, and the crate's own `read::FatReader`).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fat::read::{Entry, FatReader};
use fat::{FatOptions, FatStats, Source, Tree};

/// 2023-11-14 22:13:20 UTC.
pub const EPOCH: i64 = 1_700_000_000;
/// FAT time word of [`EPOCH`]: 22:13:20.
pub const FAT_TIME: u16 = 22 << 11 | 13 << 5 | 10;
/// FAT date word of [`EPOCH`]: 2023-11-14.
pub const FAT_DATE: u16 = (2023 - 1980) << 9 | 11 << 5 | 14;

/// Deterministic pseudo-random bytes (xorshift64).
pub fn prng(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a tree should read back as: files (contents, read-only) and directories.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub files: BTreeMap<String, (Vec<u8>, bool)>,
    pub dirs: BTreeSet<String>,
}

impl Expected {
    fn file(&mut self, path: &str, data: Vec<u8>, ro: bool) {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            self.dirs.insert(parts[..i].join("/"));
        }
        self.files.insert(path.to_string(), (data, ro));
    }

    fn dir(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..=parts.len() {
            self.dirs.insert(parts[..i].join("/"));
        }
    }

    /// Every path, files and directories.
    pub fn names(&self) -> BTreeSet<String> {
        self.files
            .keys()
            .cloned()
            .chain(self.dirs.iter().cloned())
            .collect()
    }
}

/// An 80-character file name.
pub fn name80() -> String {
    let s: String = (0..76u8).map(|i| (b'a' + i % 26) as char).collect();
    format!("{s}.bin")
}

/// Builds the test tree; host files live in `src` (created here).
pub fn build_tree(src: &Path) -> (Tree, Expected) {
    let mut tree = Tree::new();
    let mut exp = Expected::default();
    let mut bytes = |tree: &mut Tree, path: &str, data: Vec<u8>, ro: bool| {
        tree.add_file(path, Source::Bytes(data.clone()), ro)
            .unwrap();
        exp.file(path, data, ro);
    };
    bytes(&mut tree, "EFI/boot/BOOTX64.efi", prng(1, 5000), false);
    bytes(&mut tree, "EFI/empty.txt", Vec::new(), false);
    bytes(&mut tree, "EFI/READONLY", Vec::new(), true);
    bytes(&mut tree, "EFI/exact512.bin", prng(2, 512), false);
    bytes(&mut tree, "EFI/exact4096.bin", prng(3, 4096), false);
    bytes(
        &mut tree,
        &format!("EFI/Linux/{}", name80()),
        prng(4, 777),
        false,
    );
    bytes(
        &mut tree,
        "loader/loader.conf",
        b"timeout 3\ndefault Talos-*\n".to_vec(),
        false,
    );
    bytes(&mut tree, "loader/random-seed", prng(5, 32), false);
    bytes(&mut tree, "loader/keys/auto/db.auth", prng(6, 1500), true);
    bytes(
        &mut tree,
        "README.TXT",
        b"FAT32 test volume\n".to_vec(),
        false,
    );
    bytes(&mut tree, "a/b/c/d/e/f/deep.txt", b"deep\n".to_vec(), false);
    // 8.3 apart from case: keeps LONGNA~3.TXT as its short name, so the 40 names below skip it.
    bytes(
        &mut tree,
        "many/LongNa~3.txt",
        b"case only\n".to_vec(),
        false,
    );
    bytes(
        &mut tree,
        "Mixed Case/my file+x.tar.gz",
        prng(7, 100),
        false,
    );
    bytes(&mut tree, "Mixed Case/.hidden", b"h".to_vec(), false);
    bytes(
        &mut tree,
        "Mixed Case/ünïcødé-файл.txt",
        "ü\n".as_bytes().to_vec(),
        false,
    );
    bytes(
        &mut tree,
        "Mixed Case/LONGNA~1.TXT",
        b"exact short name\n".to_vec(),
        false,
    );
    tree.add_dir("loader/entries").unwrap();
    exp.dir("loader/entries");

    // Host files: the big UKI and 40 similar names (multi-cluster directory, ~N collisions).
    fs::create_dir_all(src.join("Linux")).unwrap();
    let uki = prng(8, 300 * 1024);
    fs::write(src.join("Linux/Talos-v1.14.0.efi"), &uki).unwrap();
    tree.add_file(
        "EFI/Linux/Talos-v1.14.0.efi",
        Source::Path(src.join("Linux/Talos-v1.14.0.efi")),
        false,
    )
    .unwrap();
    exp.file("EFI/Linux/Talos-v1.14.0.efi", uki, false);
    let many = src.join("many");
    fs::create_dir_all(&many).unwrap();
    for i in 1..=40 {
        let data = format!("file number {i}\n").repeat(i).into_bytes();
        fs::write(many.join(format!("longname-{i}.txt")), &data).unwrap();
        exp.file(&format!("many/longname-{i}.txt"), data, false);
    }
    tree.add_host_dir(&many, "many").unwrap();
    (tree, exp)
}

/// A sparse file of `len` bytes with 4 KiB of 0xA5 sentinel bytes right before `offset` and
/// right after `offset + size`.
pub fn sparse_disk(path: &Path, offset: u64, size: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(offset + size + (1 << 20)).unwrap();
    f.write_all_at(&[0xA5; 4096], offset - 4096).unwrap();
    f.write_all_at(&[0xA5; 4096], offset + size).unwrap();
    f
}

/// Asserts the sentinels written by [`sparse_disk`] are intact.
pub fn check_sentinels(f: &File, offset: u64, size: u64) {
    let mut buf = [0u8; 4096];
    f.read_exact_at(&mut buf, offset - 4096).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0xA5),
        "bytes before the volume were overwritten"
    );
    f.read_exact_at(&mut buf, offset + size).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0xA5),
        "bytes after the volume were overwritten"
    );
}

/// Bytes actually allocated on disk for `path`.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Copies `[offset, offset + size)` of `from` into a new sparse file `to`.
pub fn extract(from: &mut File, offset: u64, size: u64, to: &Path) {
    let mut out = File::create(to).unwrap();
    out.set_len(size).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    from.seek(SeekFrom::Start(offset)).unwrap();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        from.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(pos)).unwrap();
            out.write_all(&buf[..n]).unwrap();
        }
        pos += n as u64;
    }
}

/// Writes the tree at `offset` of a fresh sparse disk file, checking sentinels.
pub fn write_disk(
    path: &Path,
    offset: u64,
    size: u64,
    opts: &FatOptions,
    tree: &Tree,
) -> (File, FatStats) {
    let mut f = sparse_disk(path, offset, size);
    let stats = fat::write_fat32(&mut f, offset, size, opts, tree).unwrap();
    check_sentinels(&f, offset, size);
    (f, stats)
}

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Runs `fsck.fat -n -v` on a standalone image; asserts a clean result whose counts match
/// `stats`. Returns false (after a notice) only if fsck.fat is not installed.
pub fn fsck(img: &Path, stats: &FatStats) -> bool {
    let Some(fsck) = find_tool("fsck.fat") else {
        println!("NOTICE: fsck.fat not installed, skipping the fsck check");
        return false;
    };
    let out = Command::new(fsck)
        .arg("-n")
        .arg("-v")
        .arg(img)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "fsck.fat failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lower = stdout.to_lowercase();
    for bad in [
        "differ",
        "remov",
        "invalid",
        "bad",
        "wrong",
        "corrupt",
        "dirty",
        "lost",
        "truncat",
        "marked",
        "terminated",
        "reclaim",
        "correct",
        "leaving",
        "perform",
        "unable",
        "has no",
        "error",
    ] {
        assert!(
            !lower.contains(bad),
            "fsck.fat complained ({bad}):\n{stdout}\n{stderr}"
        );
    }
    let summary = stdout.lines().last().unwrap_or_default();
    let want = format!("{}/{} clusters", stats.used_clusters, stats.total_clusters);
    assert!(
        summary.ends_with(&want),
        "fsck summary '{summary}' does not end with '{want}'"
    );
    true
}

/// Checks an image with mtools: the exact set of names (case preserved), every file's bytes
/// and mtime, and the read-only attributes. Returns false (after a notice) without mtools.
pub fn mtools_check(img: &Path, exp: &Expected, work: &Path) -> bool {
    let Some(mcopy) = find_tool("mcopy") else {
        println!("NOTICE: mtools not installed, skipping the mtools check");
        return false;
    };
    let mtools = |tool: PathBuf| {
        let mut c = Command::new(tool);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8");
        c
    };
    let outdir = work.join("mcopy-out");
    fs::create_dir_all(&outdir).unwrap();
    let out = mtools(mcopy)
        .args(["-s", "-n", "-m", "-i"])
        .arg(img)
        .arg("::/")
        .arg(&outdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut found = BTreeMap::new();
    collect(&outdir, "", &mut found);
    let got: BTreeSet<String> = found.keys().cloned().collect();
    assert_eq!(got, exp.names(), "mcopy produced a different set of names");
    for (path, (data, _)) in &exp.files {
        let host = outdir.join(path);
        assert!(found[path], "{path} should be a file");
        assert_eq!(
            &fs::read(&host).unwrap(),
            data,
            "contents of {path} differ (mcopy)"
        );
        assert_eq!(
            fs::metadata(&host).unwrap().mtime(),
            EPOCH & !1,
            "mtime of {path} (mcopy)"
        );
    }
    for d in &exp.dirs {
        assert!(!found[d], "{d} should be a directory");
    }

    let out = mtools(find_tool("mattrib").unwrap())
        .args(["-/", "-i"])
        .arg(img)
        .arg("::/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mattrib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    for (path, (_, ro)) in &exp.files {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("::/{path}")))
            .unwrap_or_else(|| {
                panic!("mattrib does not list {path}:\n{listing}");
            });
        let flags = &line[..line.find("::/").unwrap()];
        assert!(flags.contains('A'), "{path} lacks the archive bit: {line}");
        assert_eq!(flags.contains('R'), *ro, "{path} read-only flag: {line}");
    }
    true
}

/// Relative path → is_file for everything below `dir`.
fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, bool>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let is_dir = e.file_type().unwrap().is_dir();
        out.insert(rel.clone(), !is_dir);
        if is_dir {
            collect(&e.path(), &rel, out);
        }
    }
}

/// Checks the image with the crate's own reader: names, LFN usage, short names, contents,
/// attributes, timestamps, `.`/`..`, label, FAT and FSInfo counters.
pub fn reader_check(dev: &mut File, offset: u64, exp: &Expected, stats: &FatStats) {
    let mut r = FatReader::open(&mut *dev, offset).unwrap();
    assert_eq!(r.total_clusters(), stats.total_clusters);
    assert_eq!(r.label().unwrap().as_deref(), Some("EFI"));
    assert_eq!(r.used_clusters().unwrap(), stats.used_clusters);
    let (free, next) = r.fsinfo().unwrap();
    assert_eq!(free, stats.total_clusters - stats.used_clusters);
    assert_eq!(next, stats.used_clusters + 2);

    let walk = r.walk().unwrap();
    let names: BTreeSet<String> = walk.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names, exp.names(), "reader found a different set of names");
    let entries: BTreeMap<String, Entry> = walk.into_iter().collect();
    for (path, e) in &entries {
        assert_eq!(
            e.stamps,
            [FAT_TIME, FAT_DATE, FAT_DATE, FAT_TIME, FAT_DATE],
            "{path} timestamps"
        );
        let name = path.rsplit('/').next().unwrap();
        let (base, ext) = name.split_once('.').unwrap_or((name, ""));
        let exact = (1..=8).contains(&base.len())
            && ext.len() <= 3
            && !ext.contains('.')
            && name.bytes().all(|b| {
                b.is_ascii_graphic() && !b.is_ascii_lowercase() && !b"+,;=[]".contains(&b)
            });
        assert_eq!(e.has_lfn, !exact, "{path}: LFN use");
        assert!(
            e.short_name.bytes().all(|b| b.is_ascii_uppercase()
                || b.is_ascii_digit()
                || b"!#$%&'()-@^_`{}~.".contains(&b)),
            "{path}: bad short name {}",
            e.short_name
        );
        if let Some((data, ro)) = exp.files.get(path) {
            assert!(!e.is_dir());
            assert_eq!(e.attr & !0x01, 0x20, "{path} attributes");
            assert_eq!(e.read_only(), *ro, "{path} read-only");
            let mut got = Vec::new();
            r.read_file(e, &mut got).unwrap();
            assert_eq!(&got, data, "contents of {path} differ (reader)");
            if data.is_empty() {
                assert_eq!(e.cluster, 0, "{path}: empty files have no cluster");
            }
        } else {
            assert_eq!(e.attr, 0x10, "{path} attributes");
            let raw = r.read_dir(e.cluster).unwrap();
            let parent = match path.rsplit_once('/') {
                Some((p, _)) => entries[p].cluster,
                None => 0,
            };
            assert_eq!(
                (raw[0].name.as_str(), raw[0].cluster),
                (".", e.cluster),
                "{path}: '.'"
            );
            assert_eq!(
                (raw[1].name.as_str(), raw[1].cluster),
                ("..", parent),
                "{path}: '..'"
            );
        }
    }
    // Short names are unique per directory.
    let mut shorts: BTreeMap<(String, String), String> = BTreeMap::new();
    for (path, e) in &entries {
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        if let Some(other) = shorts.insert((dir, e.short_name.clone()), path.clone()) {
            panic!("{path} and {other} share the short name {}", e.short_name);
        }
    }
    assert_eq!(entries["many/longname-1.txt"].short_name, "LONGNA~1.TXT");
    assert_eq!(entries["many/LongNa~3.txt"].short_name, "LONGNA~3.TXT");
    assert_eq!(entries["many/longname-11.txt"].short_name, "LONGNA~4.TXT");
    assert_eq!(
        entries["EFI/Linux/Talos-v1.14.0.efi"].short_name,
        "TALOS-~1.EFI"
    );
    // "Mixed Case/LONGNA~1.TXT" keeps its exact short name; nothing else in that dir takes it.
    assert!(!entries["Mixed Case/LONGNA~1.TXT"].has_lfn);
}
