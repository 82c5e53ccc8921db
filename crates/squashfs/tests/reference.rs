//! Differential tests of the SquashFS writer: a varied tree (host directory through
//! `add_dir_tree` plus entries with xattrs through the API) is written with zstd and with xz,
//! then read back by `unsquashfs` (squashfs-tools; extraction, `-lln`, `-s`), by backhand as a
//! second independent reader, and by the Linux kernel (loop mount, when permitted), and
//! compared with the input: names, types, sizes, contents, permission bits, symlink targets,
//! hard links, owners, mtimes and xattrs. Also: determinism over thread counts, and errors.
//! `unsquashfs` must be installed (hack/deps.sh): a missing tool fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use squashfs::{Builder, Compression, Options, Source, SquashfsError, Stats};

const BS: usize = 131_072;
const MTIME: u32 = 1_700_000_000;
const SELINUX: &[u8] = b"system_u:object_r:etc_t:s0\0";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} must be installed (apt-get install squashfs-tools): {e}")
    });
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{s}");
    s
}

fn pseudo(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Compressible text-like content.
fn text(n: usize, seed: u32) -> Vec<u8> {
    let words = [
        "squashfs ",
        "block ",
        "fragment ",
        "inode ",
        "kernel ",
        "zstd\n",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut x = seed | 1;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(words[(x % 6) as usize].as_bytes());
    }
    out.truncate(n);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: String },
}

/// The expected tree: path → entry, and path → xattrs.
struct Tree {
    entries: BTreeMap<String, Want>,
    xattrs: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// groups of paths that must be one inode
    links: Vec<Vec<String>>,
    _dir: tempfile::TempDir,
    host: std::path::PathBuf,
}

fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds the host part of the tree; the API part is added by `builder`. backhand reads no
/// symlink target longer than 255 bytes: `very_long` adds a 1.8 KB one for the other readers.
fn tree_with(very_long: bool) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("src");
    fs::create_dir(&host).unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
    let h = &host;
    write_file(h, "empty", b"", 0o644);
    write_file(h, "one-block", &text(BS, 1), 0o600);
    write_file(h, "block-plus-one", &text(BS + 1, 2), 0o644);
    write_file(h, "several-blocks", &text(5 * BS + 1234, 3), 0o755);
    write_file(h, "random-blocks", &pseudo(2 * BS + 77, 4), 0o644);
    write_file(h, "zeros", &vec![0u8; 3 * BS], 0o644);
    let mut zt = vec![0u8; 2 * BS];
    zt.extend_from_slice(b"tail after two sparse blocks");
    write_file(h, "zeros-then-tail", &zt, 0o644);
    write_file(h, "suid", b"#!/bin/sh\necho suid\n", 0o4755);
    write_file(h, "dup-a", &text(200_000, 9), 0o644);
    write_file(h, "dup-b", &text(200_000, 9), 0o640);
    write_file(h, "small-dup-a", b"same small content\n", 0o644);
    write_file(h, "small-dup-b", b"same small content\n", 0o644);
    mkdir(h, "sticky", 0o1777);
    mkdir(h, "sgid", 0o2755);
    write_file(h, "sgid/file", b"in sgid\n", 0o644);
    mkdir(h, "a", 0o755);
    mkdir(h, "a/b", 0o700);
    mkdir(h, "a/b/c", 0o755);
    mkdir(h, "a/b/c/d", 0o755);
    write_file(h, "a/b/c/d/deep.txt", b"deep\n", 0o644);
    mkdir(h, "empty-dir", 0o755);
    std::os::unix::fs::symlink("one-block", h.join("link")).unwrap();
    let long = format!("{}/target", "long-symlink-target-component".repeat(8));
    assert!(long.len() > 200 && long.len() < 256);
    std::os::unix::fs::symlink(&long, h.join("long-link")).unwrap();
    if very_long {
        let very = format!(
            "{}/target",
            "a-very-long-symlink-target-component".repeat(50)
        );
        std::os::unix::fs::symlink(&very, h.join("very-long-link")).unwrap();
    }
    std::os::unix::fs::symlink("../empty", h.join("a/up-link")).unwrap();
    write_file(h, "hl-a", &text(50_000, 5), 0o644);
    fs::hard_link(h.join("hl-a"), h.join("a/hl-b")).unwrap();
    // 300 entries with long names: more than one directory header and a directory index
    mkdir(h, "many", 0o755);
    for i in 0..300 {
        let content = if i % 10 == 0 {
            b"duplicate in many\n".to_vec()
        } else {
            format!("file number {i}\n").into_bytes()
        };
        write_file(
            h,
            &format!("many/entry-with-a-rather-long-name-number-{i:04}"),
            &content,
            0o644,
        );
    }

    // the expected tree, read back from the host
    let mut entries = BTreeMap::new();
    let mut stack = vec![(host.clone(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(e.path()).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let w = if m.is_dir() {
                stack.push((e.path(), r.clone()));
                Want::Dir { mode }
            } else if m.file_type().is_symlink() {
                Want::Symlink {
                    target: fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_string()
                        .unwrap(),
                }
            } else {
                Want::File {
                    mode,
                    content: fs::read(e.path()).unwrap(),
                }
            };
            entries.insert(r, w);
        }
    }
    // the API part (see `builder`)
    entries.insert("api".into(), Want::Dir { mode: 0o750 });
    entries.insert(
        "api/selinux".into(),
        Want::File {
            mode: 0o644,
            content: b"labelled\n".to_vec(),
        },
    );
    entries.insert(
        "api/user-foo".into(),
        Want::File {
            mode: 0o640,
            content: text(BS + 7, 6),
        },
    );
    entries.insert(
        "api/labelled-link".into(),
        Want::Symlink {
            target: "../link".into(),
        },
    );
    entries.insert("api/hl-c".into(), entries["hl-a"].clone());
    let mut xattrs = BTreeMap::new();
    xattrs.insert(
        "api".to_string(),
        vec![("user.dir".to_string(), b"directory value".to_vec())],
    );
    xattrs.insert(
        "api/selinux".to_string(),
        vec![("security.selinux".to_string(), SELINUX.to_vec())],
    );
    xattrs.insert(
        "api/user-foo".to_string(),
        vec![
            ("user.foo".to_string(), b"bar".to_vec()),
            ("security.selinux".to_string(), SELINUX.to_vec()),
        ],
    );
    xattrs.insert(
        "api/labelled-link".to_string(),
        vec![("security.selinux".to_string(), SELINUX.to_vec())],
    );
    Tree {
        entries,
        xattrs,
        links: vec![vec!["hl-a".into(), "a/hl-b".into(), "api/hl-c".into()]],
        _dir: dir,
        host,
    }
}

fn tree() -> Tree {
    tree_with(true)
}

fn builder(t: &Tree, opts: Options) -> Builder {
    let mut b = Builder::new(opts);
    b.add_dir_tree(&t.host, "").unwrap();
    b.dir("api", 0o750, t.xattrs["api"].clone()).unwrap();
    b.file(
        "api/selinux",
        0o644,
        t.xattrs["api/selinux"].clone(),
        Source::Bytes(b"labelled\n".to_vec()),
    )
    .unwrap();
    let Want::File { content, .. } = &t.entries["api/user-foo"] else {
        unreachable!()
    };
    let p = t._dir.path().join("user-foo-source");
    fs::write(&p, content).unwrap();
    b.file(
        "api/user-foo",
        0o640,
        t.xattrs["api/user-foo"].clone(),
        Source::Path(p),
    )
    .unwrap();
    b.symlink(
        "api/labelled-link",
        "../link",
        t.xattrs["api/labelled-link"].clone(),
    )
    .unwrap();
    b.hardlink("api/hl-c", "hl-a").unwrap();
    b
}

fn image(t: &Tree, compression: Compression, threads: usize) -> (Vec<u8>, Stats) {
    let opts = Options {
        compression,
        mtime: MTIME,
        threads,
        ..Options::default()
    };
    let mut out = Cursor::new(Vec::new());
    let stats = builder(t, opts).write(&mut out).unwrap();
    (out.into_inner(), stats)
}

/// Compares a directory tree on disk (extracted or mounted) with the expected one.
fn compare_tree(root: &Path, t: &Tree, check_xattrs: bool) {
    let mut got = BTreeMap::new();
    let mut inos: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{r}: owner");
            if !m.file_type().is_symlink() {
                assert_eq!(m.mtime(), i64::from(MTIME), "{r}: mtime");
            }
            inos.insert(r.clone(), (m.ino(), m.nlink()));
            let mode = m.permissions().mode() & 0o7777;
            let w = if m.is_dir() {
                stack.push((e.path(), r.clone()));
                Want::Dir { mode }
            } else if m.file_type().is_symlink() {
                Want::Symlink {
                    target: fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_string()
                        .unwrap(),
                }
            } else {
                assert!(m.is_file(), "{r}: type");
                Want::File {
                    mode,
                    content: fs::read(e.path()).unwrap(),
                }
            };
            if check_xattrs {
                let mut xs: Vec<(String, Vec<u8>)> = xattr::list(e.path())
                    .unwrap()
                    .map(|n| {
                        let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                        (n.into_string().unwrap(), v)
                    })
                    .collect();
                xs.sort();
                let mut want = t.xattrs.get(&r).cloned().unwrap_or_default();
                want.sort();
                assert_eq!(xs, want, "{r}: xattrs");
            }
            got.insert(r, w);
        }
    }
    let want_names: Vec<_> = t.entries.keys().collect();
    let got_names: Vec<_> = got.keys().collect();
    assert_eq!(got_names, want_names, "names");
    for (k, w) in &t.entries {
        assert!(got[k] == *w, "{k}: differs (want {w:.100?})");
    }
    for group in &t.links {
        let first = inos[&group[0]];
        assert_eq!(first.1, group.len() as u64, "{}: link count", group[0]);
        for p in group {
            assert_eq!(inos[p].0, first.0, "{p}: same inode as {}", group[0]);
        }
    }
    let m = fs::metadata(root).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755, "root mode");
}

/// unsquashfs: superblock report, `-lln` listing and extraction.
fn check_unsquashfs(img: &[u8], t: &Tree, comp_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img.sqsh");
    fs::write(&path, img).unwrap();
    let p = path.to_str().unwrap();

    let s = run("unsquashfs", &["-s", p]);
    assert!(s.contains(&format!("Compression {comp_name}")), "{s}");
    assert!(s.contains("Block size 131072"), "{s}");
    assert!(s.contains("Duplicates are removed"), "{s}");
    assert!(s.contains("Xattrs are compressed"), "{s}");
    assert!(s.contains("Number of ids 1"), "{s}");
    if comp_name == "zstd" {
        assert!(s.contains("compression-level 18"), "{s}");
    }
    let s = run("unsquashfs", &["-mkfs-time", p]);
    assert_eq!(s.trim(), MTIME.to_string());

    let ll = run("unsquashfs", &["-lln", p]);
    let lines: Vec<&str> = ll.lines().filter(|l| l.contains("squashfs-root")).collect();
    assert_eq!(lines.len(), t.entries.len() + 1, "{ll}");
    for l in &lines {
        let owner = l.split_whitespace().nth(1).unwrap();
        assert_eq!(owner, "0/0", "{l}");
    }
    assert!(
        ll.contains("-rwsr-xr-x 0/0")
            && ll.contains("drwxrwxrwt 0/0")
            && ll.contains("drwxr-sr-x 0/0"),
        "{ll}"
    );

    let out = dir.path().join("out");
    run(
        "unsquashfs",
        &["-no-progress", "-d", out.to_str().unwrap(), p],
    );
    compare_tree(&out, t, true);
}

/// backhand as a second reader: every path, type, mode, owner, mtime, content and target.
fn check_backhand(img: &[u8], t: &Tree) {
    use backhand::{FilesystemReader, InnerNode};
    let fs = FilesystemReader::from_reader(Cursor::new(img.to_vec())).unwrap();
    let mut got = BTreeMap::new();
    for node in fs.files() {
        let path = node
            .fullpath
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let h = &node.header;
        assert_eq!((h.uid, h.gid, h.mtime), (0, 0, MTIME), "{path}");
        let mode = u32::from(h.permissions) & 0o7777;
        let w = match &node.inner {
            InnerNode::Dir(_) => Want::Dir { mode },
            InnerNode::File(f) => {
                let mut content = Vec::new();
                fs.file(f).reader().read_to_end(&mut content).unwrap();
                Want::File { mode, content }
            }
            InnerNode::Symlink(s) => Want::Symlink {
                target: s.link.to_str().unwrap().to_string(),
            },
            other => panic!("{path}: unexpected {other:?}"),
        };
        if path.is_empty() {
            assert_eq!(w, Want::Dir { mode: 0o755 });
        } else {
            got.insert(path, w);
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        t.entries.keys().collect::<Vec<_>>()
    );
    for (k, w) in &t.entries {
        assert!(got[k] == *w, "{k}: differs in backhand");
    }
}

/// The kernel as a third reader: loop-mount the image read-only. Skipped (with a note) where
/// mounting is not permitted.
fn check_kernel(img: &[u8], t: &Tree) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img.sqsh");
    fs::write(&path, img).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&path)
        .arg(&mnt)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("note: cannot loop-mount here (not root?): kernel check skipped");
        return;
    }
    let r = std::panic::catch_unwind(|| compare_tree(&mnt, t, true));
    let um = Command::new("umount").arg(&mnt).status();
    r.unwrap();
    assert!(um.unwrap().success(), "umount");
}

#[test]
fn zstd_image_reads_back_everywhere() {
    let t = tree();
    let (img, stats) = image(&t, Compression::Zstd { level: 18 }, 2);
    assert_eq!(img.len() % 4096, 0);
    assert_eq!(stats.bytes, img.len() as u64);
    // dup-b, small-dup-b and 29 copies of the duplicate in many/
    assert_eq!(stats.duplicate_files, 31, "{stats:?}");
    // hl-a, a/hl-b, api/hl-c are one inode
    assert_eq!(stats.inodes as usize, t.entries.len() + 1 - 2);
    // compression options block: level 18
    assert_eq!(u16::from_le_bytes([img[20], img[21]]), 6);
    assert_eq!(&img[96..102], &[4, 0x80, 18, 0, 0, 0]);
    check_unsquashfs(&img, &t, "zstd");
    check_kernel(&img, &t);
    let t = tree_with(false);
    let (img, _) = image(&t, Compression::Zstd { level: 18 }, 2);
    check_backhand(&img, &t);
}

#[test]
fn xz_image_reads_back_everywhere() {
    let t = tree();
    let (img, _) = image(&t, Compression::Xz, 2);
    assert_eq!(u16::from_le_bytes([img[20], img[21]]), 4);
    // no compressor options for xz with the default dictionary
    assert_eq!(u16::from_le_bytes([img[24], img[25]]) & 0x0400, 0);
    check_unsquashfs(&img, &t, "xz");
    check_kernel(&img, &t);
    let t = tree_with(false);
    let (img, _) = image(&t, Compression::Xz, 2);
    check_backhand(&img, &t);
}

#[test]
fn output_is_independent_of_threads_and_runs() {
    let t = tree();
    for comp in [Compression::Zstd { level: 18 }, Compression::Xz] {
        let (one, _) = image(&t, comp, 1);
        for threads in [2, 4, 1] {
            let (other, _) = image(&t, comp, threads);
            assert!(one == other, "{comp:?}: {threads} threads differ from 1");
        }
    }
}

#[test]
fn data_blocks_flags_sparse_and_dedup() {
    // read the inodes with backhand: stored-uncompressed random blocks, sparse zero blocks,
    // duplicates sharing their blocks
    use backhand::{FilesystemReader, InnerNode, SquashfsFileReader};
    let t = tree_with(false);
    let (img, _) = image(&t, Compression::Zstd { level: 18 }, 2);
    let fs = FilesystemReader::from_reader(Cursor::new(img)).unwrap();
    let mut files = BTreeMap::new();
    for node in fs.files() {
        if let InnerNode::File(f) = &node.inner {
            files.insert(node.fullpath.to_str().unwrap().to_string(), f.clone());
        }
    }
    let blocks = |p: &str| -> (u64, Vec<(u32, bool)>, u32) {
        match &files[p] {
            SquashfsFileReader::Basic(b) => (
                u64::from(b.blocks_start),
                b.block_sizes
                    .iter()
                    .map(|s| (s.size(), s.uncompressed()))
                    .collect(),
                b.frag_index,
            ),
            SquashfsFileReader::Extended(e) => (
                e.blocks_start,
                e.block_sizes
                    .iter()
                    .map(|s| (s.size(), s.uncompressed()))
                    .collect(),
                e.frag_index,
            ),
        }
    };
    let (_, rb, rf) = blocks("/random-blocks");
    assert_eq!(rb, vec![(BS as u32, true), (BS as u32, true)]);
    assert_ne!(rf, u32::MAX, "tail end in a fragment");
    let (_, zb, zf) = blocks("/zeros");
    assert_eq!(zb, vec![(0, false); 3], "sparse");
    assert_eq!(zf, u32::MAX, "a multiple of the block size has no fragment");
    let (_, ob, of) = blocks("/one-block");
    assert_eq!(ob.len(), 1);
    assert!(!ob[0].1 && ob[0].0 < BS as u32, "compressed");
    assert_eq!(of, u32::MAX);
    assert_eq!(blocks("/dup-a"), blocks("/dup-b"));
    assert_eq!(blocks("/small-dup-a"), blocks("/small-dup-b"));
    assert_ne!(blocks("/dup-a").0, blocks("/several-blocks").0);
}

#[test]
fn refuses_special_files_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("sub/a-fifo");
    fs::create_dir(dir.path().join("sub")).unwrap();
    run("mkfifo", &[fifo.to_str().unwrap()]);
    let mut b = Builder::new(Options::default());
    let e = b.add_dir_tree(dir.path(), "").unwrap_err();
    assert!(matches!(e, SquashfsError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("sub/a-fifo"), "{e}");
}

#[test]
fn unreadable_source_names_the_path() {
    let mut b = Builder::new(Options::default());
    b.file(
        "etc/missing",
        0o644,
        vec![],
        Source::Path("/nonexistent/source".into()),
    )
    .unwrap_err();
    b.dir("etc", 0o755, vec![]).unwrap();
    b.file(
        "etc/missing",
        0o644,
        vec![],
        Source::Path("/nonexistent/source".into()),
    )
    .unwrap();
    let e = b.write(Cursor::new(Vec::new())).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("etc/missing") && msg.contains("/nonexistent/source"),
        "{msg}"
    );
}

#[test]
fn prefix_and_empty_root() {
    // an empty image, and a tree under a prefix
    let mut out = Cursor::new(Vec::new());
    let s = Builder::new(Options::default()).write(&mut out).unwrap();
    assert_eq!(s.inodes, 1);
    let fs = backhand::FilesystemReader::from_reader(Cursor::new(out.into_inner())).unwrap();
    assert_eq!(fs.files().count(), 1);

    let t = tree();
    let mut b = Builder::new(Options::default());
    b.dir("usr", 0o755, vec![]).unwrap();
    b.add_dir_tree(&t.host.join("a"), "usr/share").unwrap();
    let mut out = Cursor::new(Vec::new());
    b.write(&mut out).unwrap();
    let fs = backhand::FilesystemReader::from_reader(Cursor::new(out.into_inner())).unwrap();
    let names: Vec<String> = fs
        .files()
        .map(|n| n.fullpath.to_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"/usr/share/b/c/d/deep.txt".to_string()),
        "{names:?}"
    );
}
