//! Output formats (docs/formats/outputs.md): post formats read back by the xz/gzip/zstd/tar CLIs to
//! the raw bytes, disk formats accepted by `qemu-img check` and identical to the raw image under
//! `qemu-img compare` (also the VMDK inside the OVA), every one built twice byte-identically.
#![allow(clippy::unwrap_used)]

use e2e::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds a profile from stdin into `out` and returns the single artifact's path.
fn build(yaml: &str, out: &Path) -> PathBuf {
    let mut c = imager();
    c.arg("-").arg("--output").arg(out);
    let r = run(&mut c, Some(yaml.as_bytes()));
    assert!(
        r.status.success(),
        "{yaml}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let entries = dir_entries(out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    out.join(&entries[0])
}

/// sha256 of what a command writes to stdout.
fn sha256_of_stdout(cmd: &mut Command) -> String {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    assert!(child.wait().unwrap().success(), "{cmd:?}");
    hex::encode(h.finalize())
}

// the sd-boot layout (2.2 GB) keeps the test quick
const METAL: &str =
    "baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    bootloader: sd-boot\n";

#[test]
fn post_formats_decompress_to_the_raw_image_and_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = build(
        &format!("{METAL}  outFormat: raw\n"),
        &tmp.path().join("raw"),
    );
    assert!(raw.ends_with("metal-amd64.raw"));
    let want = sha256_file(&raw);
    for (fmt, name) in [
        (".xz", "metal-amd64.raw.xz"),
        (".gz", "metal-amd64.raw.gz"),
        (".zst", "metal-amd64.raw.zst"),
        (".tar.gz", "metal-amd64.raw.tar.gz"),
    ] {
        let yaml = format!("{METAL}  outFormat: {fmt}\n");
        let a = build(&yaml, &tmp.path().join(format!("a{fmt}")));
        let b = build(&yaml, &tmp.path().join(format!("b{fmt}")));
        assert!(a.ends_with(name), "{}", a.display());
        assert_eq!(sha256_file(&a), sha256_file(&b), "{fmt}: two builds differ");
        let got = match fmt {
            ".xz" => sha256_of_stdout(Command::new("xz").arg("-dc").arg(&a)),
            ".gz" => sha256_of_stdout(Command::new("gzip").arg("-dc").arg(&a)),
            ".zst" => sha256_of_stdout(Command::new("zstd").args(["-dc", "-q"]).arg(&a)),
            _ => {
                // GNU tar: one member disk.raw, owner 0/0, extracted sparse
                let list = ok(Command::new("tar").args(["-tvzf"]).arg(&a));
                assert!(
                    list.contains("0/0") && list.trim_end().ends_with("disk.raw"),
                    "{list}"
                );
                let x = tmp.path().join("x");
                std::fs::create_dir(&x).unwrap();
                ok(Command::new("tar")
                    .args(["-xzSf"])
                    .arg(&a)
                    .arg("-C")
                    .arg(&x));
                sha256_file(&x.join("disk.raw"))
            }
        };
        assert_eq!(got, want, "{fmt} does not decompress to the raw image");
    }
}

fn qemu_img_clean_and_identical(fmt: &str, raw: &Path, img: &Path) {
    let check = run(
        Command::new("qemu-img").args(["check", "-f", fmt]).arg(img),
        None,
    );
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    // qemu's vpc driver has no check (exit 63, "does not support checks")
    let unsupported = fmt == "vpc" && check.status.code() == Some(63);
    assert!(
        check.status.success() || unsupported,
        "qemu-img check {fmt}:\n{text}"
    );
    if check.status.success() {
        assert!(text.contains("No errors were found"), "{text}");
    }
    let cmp = ok(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt])
        .arg(raw)
        .arg(img));
    assert!(cmp.contains("Images are identical"), "{cmp}");
}

#[test]
fn disk_formats_match_their_raw_image() {
    let tmp = tempfile::tempdir().unwrap();
    for (profile, fmt, ext, qfmt) in [
        ("alibabacloud", "qcow2", "qcow2", "qcow2"),
        ("azure", "vhd", "vhd", "vpc"),
        ("vmware", "ova", "ova", "vmdk"),
    ] {
        let base = format!("baseProfileName: {profile}\narch: amd64\n");
        let raw = build(
            &format!("{base}output:\n  imageOptions:\n    diskFormat: raw\n  outFormat: raw\n"),
            &tmp.path().join(format!("{profile}-raw")),
        );
        let yaml = format!("{base}output:\n  outFormat: raw\n");
        let a = build(&yaml, &tmp.path().join(format!("{profile}-a")));
        let b = build(&yaml, &tmp.path().join(format!("{profile}-b")));
        assert!(
            a.ends_with(format!("{profile}-amd64.{ext}")),
            "{}",
            a.display()
        );
        assert_eq!(sha256_file(&a), sha256_file(&b), "{fmt}: two builds differ");
        let img = if fmt == "ova" {
            let list = ok(Command::new("tar").arg("-tvf").arg(&a));
            let names: Vec<&str> = list
                .lines()
                .filter_map(|l| l.split_whitespace().last())
                .collect();
            assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"], "{list}");
            let x = tmp.path().join("ova");
            std::fs::create_dir(&x).unwrap();
            ok(Command::new("tar").arg("-xf").arg(&a).arg("-C").arg(&x));
            let mf = std::fs::read_to_string(x.join("disk.mf")).unwrap();
            assert!(
                mf.contains(&format!(
                    "SHA256(disk.vmdk)= {}",
                    sha256_file(&x.join("disk.vmdk"))
                )),
                "{mf}"
            );
            let ovf = std::fs::read_to_string(x.join("disk.ovf")).unwrap();
            assert!(
                ovf.contains("vmx-15") && ovf.contains("talos.config"),
                "{ovf}"
            );
            x.join("disk.vmdk")
        } else {
            a.clone()
        };
        if fmt == "qcow2" {
            let info = ok(Command::new("qemu-img")
                .args(["info", "-f", "qcow2"])
                .arg(&img));
            assert!(
                info.contains("cluster_size: 8192"),
                "cluster_size=8k not honoured:\n{info}"
            );
        }
        qemu_img_clean_and_identical(qfmt, &raw, &img);
    }
}

#[test]
fn tar_to_stdout_archives_the_output_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = run(
        imager()
            .args([
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                "pxe",
                "--tar-to-stdout",
                "--output",
            ])
            .arg(&out),
        None,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let tgz = tmp.path().join("out.tar.gz");
    std::fs::write(&tgz, &r.stdout).unwrap();
    let list = ok(Command::new("tar").arg("-tvzf").arg(&tgz));
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(
        names,
        [
            "cmdline-metal-amd64",
            "initramfs-amd64.xz",
            "kernel-amd64",
            "metal-amd64.ipxe"
        ]
    );
    assert!(list.lines().all(|l| l.contains("0/0")), "{list}");
}
