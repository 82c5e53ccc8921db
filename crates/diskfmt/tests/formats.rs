//! Differential tests against Debian's `qemu-img` (qemu-utils) and GNU tar: every format is
//! checked (`qemu-img check`), compared with the raw input (`qemu-img compare`), written twice
//! to the same bytes, and inspected field by field where qemu does not look.
//!
//! The tests fail, never skip, when `qemu-img` is missing.

#![allow(clippy::unwrap_used)]

use diskfmt::{DiskFmtError, Options, OvfOptions};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn qemu_img() -> &'static str {
    assert!(
        Path::new("/usr/bin/qemu-img").exists(),
        "qemu-img is required for these tests (Debian package qemu-utils)"
    );
    "/usr/bin/qemu-img"
}

/// Runs a command, returns (success, exit code, stdout + stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), out.status.code().unwrap_or(-1), text)
}

fn qemu_ok(args: &[&str]) -> String {
    let (ok, _, text) = run(qemu_img(), args);
    assert!(ok, "qemu-img {args:?} failed:\n{text}");
    text
}

struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Makes a sparse file of `size` bytes with `parts` written at their offsets.
fn sparse_file(path: &Path, size: u64, parts: &[(u64, Vec<u8>)]) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in parts {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(data).unwrap();
    }
    f.sync_all().unwrap();
}

/// 64 MiB: random, explicitly written zeros, compressible text, an unaligned random block,
/// clusters alternating random/zero every 8 KiB, and a random last sector.
fn image_small(dir: &Path) -> PathBuf {
    let p = dir.join("small.raw");
    let mut r = Rng(0x1234_5678_9abc_def1);
    let text: Vec<u8> = b"Talos Linux imager test pattern 0123456789\n"
        .iter()
        .copied()
        .cycle()
        .take(256 * 1024)
        .collect();
    let mut mixed = vec![0u8; 2 * MIB as usize];
    for c in mixed.chunks_mut(16384) {
        r.fill(&mut c[..8192]);
    }
    let parts = vec![
        (0, r.bytes(MIB as usize)),
        (MIB, vec![0u8; 256 * 1024]),
        (MIB + 256 * 1024, text),
        (5 * MIB + 512, r.bytes(4096)),
        (20 * MIB, mixed),
        (64 * MIB - 512, r.bytes(512)),
    ];
    sparse_file(&p, 64 * MIB, &parts);
    p
}

/// 2 GiB + 512 B: data at the start, across the 1 GiB mark (unaligned), and in the odd tail.
fn image_large(dir: &Path) -> PathBuf {
    let p = dir.join("large.raw");
    let mut r = Rng(0x0fed_cba9_8765_4321);
    let size = 2048 * MIB + 512;
    let parts = vec![
        (0, r.bytes(MIB as usize)),
        (1024 * MIB - 4096, r.bytes(300 * 1024)),
        (size - 512, r.bytes(512)),
    ];
    sparse_file(&p, size, &parts);
    p
}

/// An image with no data at all.
fn image_empty(dir: &Path) -> PathBuf {
    let p = dir.join("empty.raw");
    sparse_file(&p, 10 * MIB, &[]);
    p
}

fn opts() -> Options {
    Options {
        timestamp: 1_700_000_000,
        label: "test-image".into(),
    }
}

fn create(path: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// SHA-256 of a file's size and of the offsets and bytes of its data extents (holes are not
/// read, so a 2 GiB sparse file is cheap).
fn sparse_digest(path: &Path) -> String {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut pos = 0u64;
    let mut buf = vec![0u8; MIB as usize];
    while let Some((start, end)) = sparse::next_data(&f, pos, size).unwrap() {
        h.update(start.to_le_bytes());
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], off).unwrap();
            h.update(&buf[..n]);
            off += n as u64;
        }
        pos = end;
    }
    hex::encode(h.finalize())
}

fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} not in {json}"));
    json[i + pat.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn assert_identical(raw: &Path, fmt: &str, img: &Path) {
    let text = qemu_ok(&[
        "compare",
        "-f",
        "raw",
        "-F",
        fmt,
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(text.contains("Images are identical"), "{text}");
}

fn info(fmt: &str, img: &Path) -> String {
    qemu_ok(&["info", "-f", fmt, "--output=json", img.to_str().unwrap()])
}

fn check_clean(fmt: &str, img: &Path) {
    let text = qemu_ok(&["check", "-f", fmt, img.to_str().unwrap()]);
    assert!(text.contains("No errors were found"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
}

#[test]
fn qcow2_matches_raw_and_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    for raw in [
        image_small(dir.path()),
        image_large(dir.path()),
        image_empty(dir.path()),
    ] {
        let raw_size = std::fs::metadata(&raw).unwrap().len();
        for cs in [8192u32, 65536] {
            let out = dir.path().join(format!("out-{cs}.qcow2"));
            let again = dir.path().join(format!("again-{cs}.qcow2"));
            let rf = File::open(&raw).unwrap();
            let st = diskfmt::write_qcow2(&rf, &mut create(&out), cs, &opts()).unwrap();
            diskfmt::write_qcow2(&rf, &mut create(&again), cs, &opts()).unwrap();
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(&again).unwrap(),
                "qcow2 output differs between runs"
            );
            assert_eq!(st.output_size, std::fs::metadata(&out).unwrap().len());
            check_clean("qcow2", &out);
            assert_identical(&raw, "qcow2", &out);
            let i = info("qcow2", &out);
            assert_eq!(json_u64(&i, "virtual-size"), raw_size.div_ceil(512) * 512);
            assert_eq!(json_u64(&i, "cluster-size"), u64::from(cs));
            // Only non-zero clusters are stored: well under the raw data written.
            assert!(st.output_size < 12 * MIB, "{st:?}");
        }
    }
}

#[test]
fn qcow2_odd_cluster_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = image_small(dir.path());
    for cs in [512u32, 2 << 20] {
        let out = dir.path().join("odd.qcow2");
        let rf = File::open(&raw).unwrap();
        diskfmt::write_qcow2(&rf, &mut create(&out), cs, &opts()).unwrap();
        check_clean("qcow2", &out);
        assert_identical(&raw, "qcow2", &out);
    }
}

#[test]
fn vhd_fixed_matches_raw_sparse_with_valid_footer() {
    let dir = tempfile::tempdir().unwrap();
    for raw in [
        image_small(dir.path()),
        image_large(dir.path()),
        image_empty(dir.path()),
    ] {
        let raw_size = std::fs::metadata(&raw).unwrap().len();
        let size = raw_size.div_ceil(MIB) * MIB;
        let out = dir.path().join("out.vhd");
        let again = dir.path().join("again.vhd");
        let rf = File::open(&raw).unwrap();
        let st = diskfmt::write_vhd_fixed(&rf, &mut create(&out), &opts()).unwrap();
        diskfmt::write_vhd_fixed(&rf, &mut create(&again), &opts()).unwrap();
        assert_eq!(
            sparse_digest(&out),
            sparse_digest(&again),
            "vhd differs between runs"
        );
        let meta = std::fs::metadata(&out).unwrap();
        assert_eq!(meta.len(), size + 512);
        assert_eq!(st.output_size, size + 512);
        assert_eq!(st.virtual_size, size);
        // Sparse: only the data (< 6 MiB in every image) and the footer are allocated.
        assert!(
            meta.blocks() * 512 < 8 * MIB,
            "{} bytes allocated",
            meta.blocks() * 512
        );

        let i = info("vpc", &out);
        assert!(i.contains("\"format\": \"vpc\""), "{i}");
        assert_eq!(json_u64(&i, "virtual-size"), size, "{i}");
        // qemu's vpc driver has no check: accept "not supported" (exit 63), or a clean check.
        let (ok, code, text) = run(qemu_img(), &["check", "-f", "vpc", out.to_str().unwrap()]);
        assert!(
            ok || (code == 63 && text.contains("does not support checks")),
            "{text}"
        );
        // Against the raw itself (qemu checks the padding reads as zeros) ...
        assert_identical(&raw, "vpc", &out);
        // ... and against the raw padded to the same size.
        let padded = dir.path().join("padded.raw");
        let (ok, _, text) = run(
            "cp",
            &[
                "--sparse=always",
                raw.to_str().unwrap(),
                padded.to_str().unwrap(),
            ],
        );
        assert!(ok, "{text}");
        File::options()
            .write(true)
            .open(&padded)
            .unwrap()
            .set_len(size)
            .unwrap();
        assert_identical(&padded, "vpc", &out);

        // The footer, field by field.
        let mut f = [0u8; 512];
        File::open(&out)
            .unwrap()
            .read_exact_at(&mut f, size)
            .unwrap();
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(u32::from_be_bytes(f[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_be_bytes(f[12..16].try_into().unwrap()), 0x10000);
        assert_eq!(&f[16..24], &[0xff; 8]);
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().unwrap()),
            1_700_000_000 - 946_684_800
        );
        assert_eq!(&f[28..32], b"qem2");
        assert_eq!(&f[36..40], b"Wi2k");
        assert_eq!(u64::from_be_bytes(f[40..48].try_into().unwrap()), size);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), size);
        let (c, h, s) = diskfmt::chs_geometry(size / 512);
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), c);
        assert_eq!((f[58], f[59]), (h, s));
        assert!(u64::from(c) * u64::from(h) * u64::from(s) <= size / 512);
        assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut g = f;
        g[64..68].fill(0);
        assert_eq!(stored, !g.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(f[84], 0);
        assert_ne!(&f[68..84], &[0u8; 16]);
    }
}

#[test]
fn vmdk_stream_matches_raw_and_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    for raw in [
        image_small(dir.path()),
        image_large(dir.path()),
        image_empty(dir.path()),
    ] {
        let raw_size = std::fs::metadata(&raw).unwrap().len();
        let out = dir.path().join("out.vmdk");
        let rf = File::open(&raw).unwrap();
        let st = diskfmt::write_vmdk_stream(&rf, &mut create(&out), &opts()).unwrap();
        let mut again = Vec::new();
        diskfmt::write_vmdk_stream(&rf, &mut again, &opts()).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes, again, "vmdk differs between runs");
        assert_eq!(st.output_size, bytes.len() as u64);
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(&bytes[0..4], b"KDMV");
        assert_eq!(
            &bytes[56..64],
            &[0xff; 8],
            "header gdOffset must be GD_AT_END"
        );
        assert_eq!(
            &bytes[bytes.len() - 1024..bytes.len() - 1020],
            b"KDMV",
            "footer"
        );
        assert!(
            bytes[bytes.len() - 512..].iter().all(|&b| b == 0),
            "end-of-stream marker"
        );
        let desc = String::from_utf8_lossy(&bytes[512..512 + 20 * 512]);
        assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
        assert!(desc.contains(&format!(
            "RW {} SPARSE \"disk.vmdk\"",
            raw_size.div_ceil(512)
        )));

        check_clean("vmdk", &out);
        assert_identical(&raw, "vmdk", &out);
        let i = info("vmdk", &out);
        assert_eq!(json_u64(&i, "virtual-size"), raw_size.div_ceil(512) * 512);
        assert!(i.contains("\"create-type\": \"streamOptimized\""), "{i}");
        assert!(i.contains("\"compressed\": true"), "{i}");
    }
}

fn tar_members(ova: &Path) -> Vec<String> {
    let (ok, _, text) = run("tar", &["-tvf", ova.to_str().unwrap()]);
    assert!(ok, "{text}");
    text.lines().map(str::to_string).collect()
}

#[test]
fn ova_holds_ovf_mf_and_vmdk() {
    let dir = tempfile::tempdir().unwrap();
    for raw in [image_small(dir.path()), image_large(dir.path())] {
        let raw_size = std::fs::metadata(&raw).unwrap().len();
        let rf = File::open(&raw).unwrap();
        let ova = dir.path().join("out.ova");
        let ovf_opts = OvfOptions::default();
        let st = diskfmt::write_ova(&rf, &mut create(&ova), &ovf_opts, &opts()).unwrap();
        let again = dir.path().join("again.ova");
        diskfmt::write_ova(&rf, &mut create(&again), &ovf_opts, &opts()).unwrap();
        let bytes = std::fs::read(&ova).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(&again).unwrap(),
            "ova differs between runs"
        );
        assert_eq!(bytes.len() as u64, st.ova_size);
        assert_eq!(bytes.len() % 10240, 0);

        let members = tar_members(&ova);
        assert_eq!(members.len(), 3, "{members:?}");
        for (line, name) in members.iter().zip(["disk.ovf", "disk.mf", "disk.vmdk"]) {
            assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
            assert!(line.ends_with(&format!(" {name}")), "{line}");
            assert!(line.contains("2023-11-1"), "mtime = timestamp: {line}");
        }

        let x = dir.path().join("x");
        std::fs::create_dir_all(&x).unwrap();
        let (ok, _, text) = run(
            "tar",
            &["-xf", ova.to_str().unwrap(), "-C", x.to_str().unwrap()],
        );
        assert!(ok, "{text}");
        let vmdk = std::fs::read(x.join("disk.vmdk")).unwrap();
        let ovf = std::fs::read_to_string(x.join("disk.ovf")).unwrap();
        let mf = std::fs::read_to_string(x.join("disk.mf")).unwrap();
        assert_eq!(vmdk.len() as u64, st.vmdk.output_size);
        assert_eq!(
            mf,
            format!(
                "SHA256(disk.vmdk)= {}\nSHA256(disk.ovf)= {}\n",
                hex::encode(Sha256::digest(&vmdk)),
                hex::encode(Sha256::digest(ovf.as_bytes()))
            )
        );
        assert!(
            ovf.contains(&format!("ovf:size=\"{}\"", vmdk.len())),
            "{ovf}"
        );
        assert!(ovf.contains(&format!("ovf:capacity=\"{}\"", raw_size.div_ceil(MIB))));
        assert!(ovf.contains("<vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>"));
        assert!(ovf.contains("ovf:key=\"talos.config\""));
        let (ok, _, text) = run(
            "python3",
            &[
                "-c",
                "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
                x.join("disk.ovf").to_str().unwrap(),
            ],
        );
        assert!(ok, "disk.ovf is not well-formed XML: {text}");

        // The VMDK inside is the standalone one, and qemu reads it as the raw.
        let mut standalone = Vec::new();
        diskfmt::write_vmdk_stream(&rf, &mut standalone, &opts()).unwrap();
        assert_eq!(vmdk, standalone);
        check_clean("vmdk", &x.join("disk.vmdk"));
        assert_identical(&raw, "vmdk", &x.join("disk.vmdk"));
    }
}

/// A VM name whose OVF needs one 512-byte block less than the worst case the writer reserves,
/// so the VMDK is moved down inside the archive.
#[test]
fn ova_moves_vmdk_when_ovf_is_shorter_than_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let raw = image_small(dir.path());
    let rf = File::open(&raw).unwrap();
    let raw_size = rf.metadata().unwrap().len();
    let mut v = Vec::new();
    let vmdk_size = diskfmt::write_vmdk_stream(&rf, &mut v, &opts())
        .unwrap()
        .output_size;
    let blocks = |n: usize| n.div_ceil(512);
    let name = (1..400)
        .map(|n| "n".repeat(n))
        .find(|name| {
            let o = OvfOptions {
                name: name.clone(),
                ..OvfOptions::default()
            };
            blocks(diskfmt::render_ovf(vmdk_size, raw_size, &o).len())
                < blocks(diskfmt::render_ovf(u64::MAX, raw_size, &o).len())
        })
        .expect("some name length crosses a block boundary");
    let o = OvfOptions {
        name,
        ..OvfOptions::default()
    };
    let ova = dir.path().join("moved.ova");
    diskfmt::write_ova(&rf, &mut create(&ova), &o, &opts()).unwrap();
    assert_eq!(tar_members(&ova).len(), 3);
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let (ok, _, text) = run(
        "tar",
        &["-xf", ova.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert_eq!(std::fs::read(x.join("disk.vmdk")).unwrap(), v);
}

#[test]
fn option_parsers_name_the_bad_key() {
    assert_eq!(
        diskfmt::parse_qcow2_options("cluster_size=8k").unwrap(),
        8192
    );
    assert_eq!(
        diskfmt::parse_qcow2_options("cluster_size=64K").unwrap(),
        65536
    );
    let e = diskfmt::parse_qcow2_options("cluster_size=8k,preallocation=full").unwrap_err();
    assert!(
        matches!(&e, DiskFmtError::UnknownOption { key, .. } if key == "preallocation"),
        "{e}"
    );
    assert!(e.to_string().contains("preallocation"), "{e}");
    let e = diskfmt::parse_qcow2_options("cluster_size=1000").unwrap_err();
    assert!(
        e.to_string().contains("cluster_size") && e.to_string().contains("1000"),
        "{e}"
    );
    diskfmt::parse_vhd_options("subformat=fixed,force_size").unwrap();
    let e = diskfmt::parse_vhd_options("subformat=fixed,foo=bar").unwrap_err();
    assert!(e.to_string().contains("\"foo\""), "{e}");
    // A bad cluster size given straight to the writer is refused too.
    let dir = tempfile::tempdir().unwrap();
    let raw = image_empty(dir.path());
    let e = diskfmt::write_qcow2(
        &File::open(&raw).unwrap(),
        &mut create(&dir.path().join("x.qcow2")),
        3000,
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(e, DiskFmtError::BadOption { .. }), "{e}");
}
