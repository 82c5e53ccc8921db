//! Output identity: every output kind, built from small synthetic inputs that this test makes
//! (so no Debian update can change them) with a fixed SOURCE_DATE_EPOCH, hashed and compared
//! with the goldens in `tests/golden/identity.sha256`.
//!
//! The goldens were recorded before the imager was restructured into its stage folders
//! (profile → inputs → assemble → output) and must not change when code only moves: a
//! difference here is an output change, which needs its own reason and a new recording
//! (`IMAGER_UPDATE_GOLDENS=1 cargo test --release -p e2e --test identity`).
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip, manifest, oci_layout, rewrite_config};
use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

/// A signing key used only by this test (outputs are signed deterministically, RFC 6979).
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgO3YXTljl7AYFH3eu
YJc58sgATt6ami5ANanth7lYppahRANCAATTunVLan/3Ca3zPBeoCKxwubROjq9V
aeKbNfZO2n8U7KwiTdaU1tVD/+4EkZ34j9y4bqVND5S3rKc+3LL8rol3
-----END PRIVATE KEY-----
";

/// Deterministic filler bytes (xorshift64*), with a readable prefix naming the file.
fn bytes(name: &str, len: usize) -> Vec<u8> {
    let mut v = format!("synthetic {name}\n").into_bytes();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (len as u64);
    for b in name.bytes() {
        x = x.rotate_left(5) ^ u64::from(b);
    }
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // half the bytes repeat, so the compressors have something to do
        v.push(if r & 1 == 0 { b'A' } else { (r >> 32) as u8 });
    }
    v.truncate(len);
    v
}

/// `<dir>/amd64/{vmlinuz,initramfs.xz,systemd-boot.efi,systemd-stub.efi,grub/…}`.
fn synthetic_assets(dir: &Path) {
    let a = dir.join("amd64");
    std::fs::create_dir_all(a.join("grub")).unwrap();
    for (name, len) in [
        ("vmlinuz", 300_000),
        ("initramfs.xz", 200_000),
        ("systemd-boot.efi", 60_000),
        ("grub/boot.img", 512),
        ("grub/boot_hybrid.img", 512),
        ("grub/core.img", 30_000),
        ("grub/eltorito.img", 31_000),
        ("grub/grub-efi.img", 80_000),
    ] {
        std::fs::write(a.join(name), bytes(name, len)).unwrap();
    }
    // a real (tiny) PE: from Talos 1.10 the ISO and disk images boot a UKI built on it
    std::fs::write(a.join("systemd-stub.efi"), pe::testing::stub(0)).unwrap();
}

/// A two-layer base installer image as an OCI layout: a base layer and the assets under
/// `usr/install/amd64/`.
fn base_installer(dir: &Path) {
    let base = Tar::new()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/installer", 0o755, &bytes("installer", 20_000))
        .finish();
    let mut t = Tar::new()
        .dir("usr", 0o755)
        .dir("usr/install", 0o755)
        .dir("usr/install/amd64", 0o755)
        .dir("usr/install/amd64/grub", 0o755);
    for (name, len) in [
        ("vmlinuz", 310_000),
        ("initramfs.xz", 210_000),
        ("systemd-boot.efi", 61_000),
    ] {
        t = t.file(
            &format!("usr/install/amd64/{name}"),
            0o644,
            &bytes(&format!("base {name}"), len),
        );
    }
    // a real (tiny) PE: the installer output of Talos >= 1.10 carries a UKI built on it
    t = t.file(
        "usr/install/amd64/systemd-stub.efi",
        0o644,
        &pe::testing::stub(0),
    );
    let assets = t.finish();
    // the installer output keeps the first layer and needs the config's diff_ids
    oci_layout(dir, &[("amd64", vec![gzip(&base), gzip(&assets)])]);
    let diff_ids = format!(
        r#""diff_ids":["sha256:{}","sha256:{}"]"#,
        sha256(&base),
        sha256(&assets)
    );
    rewrite_config(dir, &diff_ids);
}

/// A tarball extension with one file and a manifest.
fn extension(path: &Path) {
    let t = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("identity", "1.0.0", ">= v1.0.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .dir("rootfs/usr/local/lib", 0o755)
        .file(
            "rootfs/usr/local/lib/identity.txt",
            0o644,
            &bytes("identity.txt", 5000),
        )
        .finish();
    std::fs::write(path, t).unwrap();
}

/// Every file under `dir`, relative, sorted, with its sha256.
fn hashes(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut names = dir_entries(dir);
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let rel = format!("{prefix}{n}");
        if p.is_dir() {
            hashes(&p, &format!("{rel}/"), out);
        } else {
            out.push(format!("{}  {rel}", sha256_file(&p)));
        }
    }
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Option<String>,
}

fn case(name: &'static str, args: &[&str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    }
}

fn stdin_case(name: &'static str, yaml: String) -> Case {
    Case {
        name,
        args: vec!["-".into()],
        stdin: Some(yaml),
    }
}

fn image_yaml(bootloader: &str, format: &str, opts: &str) -> String {
    format!(
        "arch: amd64\nplatform: metal\nsecureboot: false\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0\n  metaContents:\n    - key: 0xa\n      value: 'hostname: identity'\noutput:\n  kind: image\n  imageOptions:\n    diskSize: 1306525696\n    bootloader: {bootloader}\n    diskFormat: {format}\n    diskFormatOptions: '{opts}'\n  outFormat: raw\n"
    )
}

#[test]
fn every_output_kind_matches_the_recorded_goldens() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let assets = w.join("assets");
    synthetic_assets(&assets);
    let base = w.join("base-installer");
    base_installer(&base);
    let ext = w.join("identity-ext.tar");
    extension(&ext);
    let config = w.join("config.yaml");
    std::fs::write(&config, "version: v1alpha1\nmachine:\n  type: worker\n").unwrap();
    let key = w.join("test.key");
    std::fs::write(&key, TEST_KEY).unwrap();
    let network = w.join("network.yaml");
    std::fs::write(&network, "addresses:\n  - address: 10.5.0.2/24\n").unwrap();
    let meta_file = format!("0xa=@{}", network.display());
    let ext_s = ext.display().to_string();
    let cfg_s = config.display().to_string();
    let key_s = key.display().to_string();

    let cases = vec![
        // the flags path: metal's defaults (dual-boot, .zst) with META and kernel args
        case(
            "metal-flags",
            &[
                "metal",
                "--arch",
                "amd64",
                "--extra-kernel-arg",
                "console=ttyS0",
                "--extra-kernel-arg",
                "-consoleblank",
                "--meta",
                &meta_file,
            ],
        ),
        stdin_case("raw-sd-boot", image_yaml("sd-boot", "raw", "")),
        stdin_case("raw-grub", image_yaml("grub", "raw", "")),
        stdin_case("raw-dual-boot", image_yaml("dual-boot", "raw", "")),
        stdin_case("qcow2", image_yaml("sd-boot", "qcow2", "cluster_size=8k")),
        stdin_case("vhd", image_yaml("sd-boot", "vhd", "subformat=fixed")),
        stdin_case("ova", image_yaml("sd-boot", "ova", "")),
        case(
            "iso",
            &[
                "iso",
                "--arch",
                "amd64",
                "--extra-kernel-arg",
                "console=ttyS0",
            ],
        ),
        case(
            "pxe",
            &[
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                "pxe",
                "--meta",
                "0xc=pxe",
            ],
        ),
        case(
            "kernel",
            &["metal", "--arch", "amd64", "--output-kind", "kernel"],
        ),
        case(
            "initramfs-extension",
            &[
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                "initramfs",
                "--system-extension-image",
                &ext_s,
                "--embedded-config-path",
                &cfg_s,
            ],
        ),
        case(
            "cmdline-signed",
            &[
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                "cmdline",
                "--extra-kernel-arg",
                "talos.dashboard.disabled=1",
                "--meta",
                "0xa=hostname: x",
                "--sign-key",
                &key_s,
            ],
        ),
        stdin_case(
            "installer",
            format!(
                "baseProfileName: installer\narch: amd64\ninput:\n  baseInstaller:\n    ociPath: {}\n",
                base.display()
            ),
        ),
    ];

    let mut lines = Vec::new();
    for c in &cases {
        let out = w.join("out").join(c.name);
        let mut cmd = Command::new(bin("imager"));
        cmd.args(&c.args)
            .arg("--output")
            .arg(&out)
            .env("IMAGER_INSTALL_DIR", &assets)
            .env("IMAGER_CACHE_DIR", w.join("cache"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("IMAGER_SIGN_KEY")
            .env_remove("IMAGER_REGISTRIES_CONFIG")
            .env_remove("IMAGER_SIGNATURE_POLICY");
        let r = run(&mut cmd, c.stdin.as_ref().map(|s| s.as_bytes()));
        assert!(
            r.status.success(),
            "{}: imager {:?} failed:\n{}",
            c.name,
            c.args,
            String::from_utf8_lossy(&r.stderr)
        );
        let mut h = Vec::new();
        hashes(&out, &format!("{}/", c.name), &mut h);
        assert!(!h.is_empty(), "{}: no output", c.name);
        lines.extend(h);
    }
    let got = lines.join("\n") + "\n";
    let golden: PathBuf = root().join("tests/golden/identity.sha256");
    if std::env::var_os("IMAGER_UPDATE_GOLDENS").is_some() {
        std::fs::write(&golden, &got).unwrap();
        eprintln!("recorded {}", golden.display());
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record with IMAGER_UPDATE_GOLDENS=1)",
            golden.display()
        )
    });
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .map(|l| format!("- {l}"))
            .chain(
                got.lines()
                    .filter(|l| !want.lines().any(|g| g == *l))
                    .map(|l| format!("+ {l}")),
            )
            .collect();
        panic!(
            "outputs differ from tests/golden/identity.sha256:\n{}",
            diff.join("\n")
        );
    }
}
