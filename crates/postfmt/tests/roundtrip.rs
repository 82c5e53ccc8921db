//! Round trips of every post-processing format (docs/formats/outputs.md) through the reference CLIs
//! (`xz`, `gzip`, `zstd`, GNU `tar`, Python's `tarfile`), determinism (run twice, 1 vs 2 vs 3
//! threads, sparse vs dense copy of the same content) and sparse extraction. A missing tool fails.
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use postfmt::{Format, Options};

const MIB: u64 = 1 << 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Incompressible bytes.
    fn random(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
    /// Compressible text-like bytes (no zero byte).
    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&[u8]; 8] = [
            b"kernel ",
            b"talos ",
            b"image ",
            b"disk ",
            b"sparse\n",
            b"0x1f8b ",
            b"meta ",
            b"efi ",
        ];
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            let r = self.next();
            v.extend_from_slice(WORDS[(r % 8) as usize]);
            if r.is_multiple_of(5) {
                v.push(b'a' + (r >> 8) as u8 % 26);
            }
        }
        v.truncate(n);
        v
    }
}

/// Writes the ~64 MiB test image: text, random, written zeros, zero 4 KiB blocks inside data,
/// 40 small fragments, an unaligned data end, real holes, and a trailing hole ending mid-block.
fn write_image(path: &Path, dense: bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parts: Vec<(u64, Vec<u8>)> = Vec::new();
    parts.push((0, rng.text(2 * MIB as usize)));
    parts.push((2 * MIB, rng.random(MIB as usize)));
    parts.push((3 * MIB, vec![0u8; MIB as usize])); // written zeros
    let mut mixed = Vec::new();
    for i in 0..256 {
        if i % 3 == 0 {
            mixed.extend_from_slice(&[0u8; 4096]);
        } else {
            mixed.extend_from_slice(&rng.text(4096));
        }
    }
    parts.push((4 * MIB, mixed));
    for i in 0..40 {
        parts.push((8 * MIB + i * 64 * 1024, rng.random(4096)));
    }
    parts.push((20 * MIB, rng.text(MIB as usize + 1234)));
    parts.push((40 * MIB, rng.random(MIB as usize)));
    let size = 64 * MIB + 555;

    let f = File::create(path).unwrap();
    if dense {
        let mut all = vec![0u8; size as usize];
        for (o, d) in &parts {
            all[*o as usize..*o as usize + d.len()].copy_from_slice(d);
        }
        f.write_all_at(&all, 0).unwrap();
    } else {
        for (o, d) in &parts {
            f.write_all_at(d, *o).unwrap();
        }
        f.set_len(size).unwrap();
    }
    f.sync_all().unwrap();
}

struct Inputs {
    _dir: tempfile::TempDir,
    sparse: PathBuf,
    dense: PathBuf,
    tiny: PathBuf,
    empty: PathBuf,
}

fn inputs() -> &'static Inputs {
    static I: OnceLock<Inputs> = OnceLock::new();
    I.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse.raw");
        let dense = dir.path().join("dense.raw");
        write_image(&sparse, false);
        write_image(&dense, true);
        let tiny = dir.path().join("tiny.raw");
        fs::write(&tiny, b"hello, talos\n").unwrap();
        let empty = dir.path().join("empty.raw");
        fs::write(&empty, b"").unwrap();
        Inputs {
            _dir: dir,
            sparse,
            dense,
            tiny,
            empty,
        }
    })
}

/// Fails (does not skip) if `tool` is not installed.
fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "required tool `{tool}` is not installed");
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn compress(fmt: Format, src: &Path, threads: usize) -> Vec<u8> {
    let opts = Options {
        epoch: 1_700_000_000,
        threads,
        ..Options::default()
    };
    let mut out = Vec::new();
    postfmt::compress(fmt, src, &mut out, &opts).unwrap();
    out
}

fn same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{a:?} vs {b:?}"
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(ba[..n] == bb[..n], "{a:?} and {b:?} differ");
    }
}

/// Compresses every input with `fmt`, decompresses with `decomp` (a shell command reading the
/// compressed file `$1` and writing the content to stdout) and compares.
fn roundtrip(fmt: Format, tool: &str, decomp: &str, test: &str) {
    require(tool);
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    for src in [&i.sparse, &i.tiny, &i.empty] {
        let c = dir.path().join(format!("c{}", fmt.suffix()));
        fs::write(&c, compress(fmt, src, 2)).unwrap();
        run(Command::new("sh").args(["-c", test, "sh"]).arg(&c));
        let d = dir.path().join("d.raw");
        let content = run(Command::new("sh").args(["-c", decomp, "sh"]).arg(&c));
        fs::write(&d, content).unwrap();
        same_file(src, &d);
    }
}

#[test]
fn xz_roundtrip() {
    roundtrip(Format::Xz, "xz", "xz -dc \"$1\"", "xz -t \"$1\"");
}

/// The .xz bytes are those of `xz -0 -T2` (liblzma's multithreaded layout, 1 MiB blocks), i.e.
/// what Talos' `xz -0 -T0` writes on a machine with two cores or more.
#[test]
fn xz_matches_xz_cli() {
    require("xz");
    let i = inputs();
    for src in [&i.sparse, &i.tiny, &i.empty] {
        let cli = run(Command::new("xz")
            .args(["-0", "-T2", "--block-size=1MiB", "-c"])
            .arg(src));
        assert!(compress(Format::Xz, src, 2) == cli, "{src:?}");
    }
}

#[test]
fn gz_roundtrip() {
    roundtrip(Format::Gz, "gzip", "gzip -dc \"$1\"", "gzip -t \"$1\"");
    run(Command::new("gunzip").arg("--version"));
    // header as `pigz -6 --no-time` from a pipe: no name, mtime 0, XFL 0, OS 3 (Unix)
    let c = compress(Format::Gz, &inputs().tiny, 1);
    assert_eq!(&c[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
}

#[test]
fn zst_roundtrip() {
    roundtrip(Format::Zst, "zstd", "zstd -qdc \"$1\"", "zstd -qt \"$1\"");
}

/// Byte-identical outputs: twice, 1 vs 2 vs 3 threads, and sparse vs dense copies of the same
/// content (the output depends on the content only, not on the filesystem's holes).
#[test]
fn deterministic() {
    let i = inputs();
    for fmt in [Format::Xz, Format::Gz, Format::Zst, Format::TarGz] {
        let a = compress(fmt, &i.sparse, 2);
        assert!(a == compress(fmt, &i.sparse, 2), "{fmt:?}: two runs differ");
        assert!(a == compress(fmt, &i.sparse, 1), "{fmt:?}: 1 vs 2 threads");
        assert!(
            a == compress(fmt, &i.dense, 3),
            "{fmt:?}: dense copy, 3 threads"
        );
    }
}

fn tar_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("tar");
    c.args(args).env("TZ", "UTC").env("LC_ALL", "C");
    c
}

/// Extracts `archive` with GNU tar (`-xzSf`) and Python's tarfile, checks the content and that
/// both extracted files are sparse.
fn check_tar_gz(src: &Path, archive: &Path, data_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    run(tar_cmd(&["-xzSf"]).arg(archive).arg("-C").arg(dir.path()));
    let out = dir.path().join("disk.raw");
    same_file(src, &out);
    let size = fs::metadata(src).unwrap().len();
    let blocks = fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        blocks <= data_bytes + 64 * 4096,
        "GNU tar extraction is not sparse: {blocks} bytes allocated for {size} bytes"
    );

    let py = dir.path().join("py");
    fs::create_dir(&py).unwrap();
    let script = "import sys, tarfile\n\
                  with tarfile.open(sys.argv[1], 'r:gz') as t:\n\
                  \x20   m = t.getmember('disk.raw')\n\
                  \x20   print(m.type.decode(), m.size, m.uid, m.gid, m.mtime, m.mode)\n\
                  \x20   t.extractall(sys.argv[2], filter='tar')\n";
    let line = run(Command::new("python3")
        .args(["-c", script])
        .arg(archive)
        .arg(&py));
    let line = String::from_utf8(line).unwrap();
    let want_type = if data_bytes == size { "0" } else { "S" };
    assert_eq!(
        line.trim(),
        format!("{want_type} {size} 0 0 1700000000 420"),
        "python tarfile view"
    );
    same_file(src, &py.join("disk.raw"));
}

fn data_bytes(src: &Path, sparse: bool) -> u64 {
    if sparse {
        // the written regions of write_image minus its zero blocks
        let f = File::open(src).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut n = 0;
        let size = f.metadata().unwrap().len();
        let mut off = 0;
        while off < size {
            let len = (size - off).min(4096) as usize;
            f.read_exact_at(&mut buf[..len], off).unwrap();
            if buf[..len].iter().any(|&b| b != 0) {
                n += len as u64;
            }
            off += 4096;
        }
        n
    } else {
        fs::metadata(src).unwrap().len()
    }
}

#[test]
fn tar_gz_roundtrip() {
    require("tar");
    require("python3");
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    for (src, sparse) in [(&i.sparse, true), (&i.tiny, false), (&i.empty, false)] {
        let a = dir.path().join("a.tar.gz");
        fs::write(&a, compress(Format::TarGz, src, 2)).unwrap();
        run(Command::new("gzip").arg("-t").arg(&a));
        check_tar_gz(src, &a, data_bytes(src, sparse));
        let list = String::from_utf8(run(tar_cmd(&["-tvzf"]).arg(&a))).unwrap();
        let size = fs::metadata(src).unwrap().len();
        let list: Vec<&str> = list.split_whitespace().collect();
        let size = size.to_string();
        assert_eq!(
            list,
            [
                "-rw-r--r--",
                "0/0",
                &size,
                "2023-11-14",
                "22:13",
                "disk.raw"
            ],
            "tar -tv listing"
        );
    }
}

/// On a file whose holes are real holes and whose data has no zero 4 KiB block, the tar stream
/// is byte-identical to GNU tar's `--sparse` output with Talos' flags.
#[test]
fn tar_matches_gnu_tar() {
    require("tar");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.raw");
    let mut rng = Rng(42);
    for (size, ends_with_data) in [(3 * MIB, false), (2 * MIB, true)] {
        let f = File::create(&src).unwrap();
        f.write_all_at(&rng.random(8192), 4096).unwrap();
        for k in 0..30 {
            f.write_all_at(&rng.random(4096), MIB / 2 + k * 16384)
                .unwrap();
        }
        f.write_all_at(&rng.text(65536), MIB).unwrap();
        if ends_with_data {
            f.write_all_at(&rng.random(4096), size - 4096).unwrap();
        }
        f.set_len(size).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let gnu = run(tar_cmd(&[
            "-cf",
            "-",
            "--sparse",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@1700000000",
            "--mode=0644",
            "-C",
        ])
        .arg(dir.path())
        .arg("disk.raw"));
        let mut ours = Vec::new();
        postfmt::tar_sparse(&src, "disk.raw", &mut ours, 1_700_000_000).unwrap();
        assert_eq!(ours.len(), gnu.len());
        assert!(ours == gnu, "tar stream differs from GNU tar's");
    }
}

/// Sizes of 8 GiB and more use base-256 numbers; GNU tar and Python read them back.
#[test]
fn tar_gz_larger_than_8_gib() {
    require("tar");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.raw");
    let size = 9 * 1024 * MIB + 4096;
    let f = File::create(&src).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&[0xab; 4096], 8 * 1024 * MIB + 8192)
        .unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let a = dir.path().join("big.tar.gz");
    fs::write(&a, compress(Format::TarGz, &src, 2)).unwrap();
    let list = String::from_utf8(run(tar_cmd(&["-tvzf"]).arg(&a))).unwrap();
    assert!(list.contains(&format!(" {size} ")), "{list}");
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run(tar_cmd(&["-xzSf"]).arg(&a).arg("-C").arg(&x));
    let out = File::open(x.join("disk.raw")).unwrap();
    let m = out.metadata().unwrap();
    assert_eq!(m.len(), size);
    assert!(m.blocks() * 512 <= 64 * 4096, "not sparse");
    let mut b = [0u8; 4096];
    out.read_exact_at(&mut b, 8 * 1024 * MIB + 8192).unwrap();
    assert_eq!(b, [0xab; 4096]);
    out.read_exact_at(&mut b[..5], 0).unwrap();
    assert_eq!(&b[..5], b"start");
    let py = "import sys, tarfile\nprint(tarfile.open(sys.argv[1]).getmember('disk.raw').size)";
    let got = run(Command::new("python3").args(["-c", py]).arg(&a));
    assert_eq!(String::from_utf8(got).unwrap().trim(), size.to_string());
}

#[test]
fn bad_arguments() {
    let tiny = &inputs().tiny;
    let try_level = |fmt, level| {
        let opts = Options {
            level: Some(level),
            ..Options::default()
        };
        postfmt::compress(fmt, tiny, &mut Vec::new(), &opts)
    };
    assert!(try_level(Format::Xz, 10).is_err());
    assert!(try_level(Format::Gz, 10).is_err());
    assert!(try_level(Format::TarGz, -1).is_err());
    assert!(try_level(Format::Zst, 99).is_err());
    let long = Options {
        member_name: "x".repeat(101),
        ..Options::default()
    };
    assert!(postfmt::compress(Format::TarGz, tiny, &mut Vec::new(), &long).is_err());
    let missing = Path::new("/nonexistent/disk.raw");
    let e =
        postfmt::compress(Format::Zst, missing, &mut Vec::new(), &Options::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/disk.raw"), "{e}");
}
