//! Shared plumbing for the end-to-end tests: where the binaries and base assets are, one way to
//! run a command (stderr captured into the failure message), and digests.
//!
//! The binaries and assets come from `hack/build.sh` (the README's test command runs it before
//! `cargo test`); a missing one is a failure that says so, never a skip.
#![allow(clippy::unwrap_used)]
// test plumbing (child processes, servers, builders): nothing here reaches a user's message
#![allow(missing_debug_implementations)]

pub mod connectproxy;
pub mod faultproxy;
pub mod fixture;
pub mod node;
pub mod registry;
pub mod webdriver;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A sparse blank disk image of `size` bytes at `path`.
pub fn blank_disk(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// The sigstore-js interop scripts (tests/sigstore-js) with their dependencies installed by
/// `npm ci` from the committed lock file, in `dir/sigstore-js`.
pub fn sigstore_js(dir: &Path) -> PathBuf {
    let d = dir.join("sigstore-js");
    std::fs::create_dir_all(&d).unwrap();
    for f in [
        "package.json",
        "package-lock.json",
        "verify.js",
        "sign.js",
        "keyless.js",
    ] {
        std::fs::copy(root().join("tests/sigstore-js").join(f), d.join(f)).unwrap();
    }
    ok(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&d));
    d
}

/// Runs `node js/script args…` and returns its output (status not checked).
pub fn node(js: &Path, script: &str, args: &[&Path]) -> Output {
    let mut c = Command::new("node");
    c.arg(js.join(script)).args(args).current_dir(js);
    run(&mut c, None)
}

/// Runs `keyless.js args…` (sigstore-js signing keyless against @sigstore/mock, writing
/// `bundle.sigstore.json` and `trusted_root.json`); returns the certificate identity and the
/// OIDC issuer it printed.
pub fn keyless_js(js: &Path, args: &[&Path]) -> (String, String) {
    let o = node(js, "keyless.js", args);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "keyless.js failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let field = |k: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {stdout}"))
            .to_string()
    };
    (field("identity"), field("issuer"))
}

/// Workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A release binary of the workspace (next to this test executable's `deps/` directory).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run hack/build.sh (the README's test command does)",
        p.display()
    );
    p
}

/// A binary hack/build.sh cross-built for arm64 (`<target>/aarch64/aarch64-unknown-linux-gnu/
/// release/`, beside this test executable's target directory).
pub fn bin_arm64(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/x86_64-unknown-linux-gnu/release/deps/<test>
    let target = exe.ancestors().nth(4).unwrap();
    let p = target
        .join("aarch64/aarch64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run hack/build.sh (the README's test command does)",
        p.display()
    );
    p
}

/// The base assets directory (`IMAGER_INSTALL_DIR` or `_out/assets`).
pub fn assets() -> PathBuf {
    let p = std::env::var("IMAGER_INSTALL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("_out/assets"));
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-boot.efi",
        "systemd-stub.efi",
    ] {
        let a = p.join("amd64").join(f);
        assert!(a.exists(), "{} is missing: run hack/build.sh", a.display());
    }
    p
}

/// The kernel hack/deps.sh extracted (`$KERNEL_CACHE/current`, default
/// `~/.cache/talos-rs/kernel/current`): its version is read from the tree, never named.
pub fn kernel_root() -> PathBuf {
    std::env::var("KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/talos-rs/kernel")
        })
        .join("current")
}

/// Runs a command, feeding `stdin`, and returns its output (never panics on a non-zero exit).
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs a command and asserts success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An imager command with the base assets and a fixed SOURCE_DATE_EPOCH.
pub fn imager() -> Command {
    let mut c = Command::new(bin("imager"));
    c.env("IMAGER_INSTALL_DIR", assets())
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// sha256 of bytes, hex.
pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Decompresses a `.zst`/`.xz`/`.gz` disk image into a sparse file.
pub fn decompress(src: &Path, dst: &Path) {
    let mut f = std::fs::File::create(dst).unwrap();
    imager::cli::boot::decompress_sparse(src, &mut f).unwrap();
}

/// Copies `len` bytes at `offset` of `src` into a new file `dst`.
pub fn extract(src: &Path, offset: u64, len: u64, dst: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(src).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(dst).unwrap();
    let n = std::io::copy(&mut f.take(len), &mut out).unwrap();
    assert_eq!(n, len);
}

/// Entries of an xz-compressed newc initramfs.
pub fn initramfs_entries(path: &Path) -> Vec<cpio::Entry> {
    let f = std::fs::File::open(path).unwrap();
    cpio::read_all(liblzma::read::XzDecoder::new(f)).unwrap()
}

/// Names of the entries in a directory.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A boot that reached node-runtime's ready line.
pub struct Booted {
    /// The ready line.
    pub line: String,
    /// The console up to it.
    pub console: Vec<String>,
    /// Whether the guest then powered off by itself (`node_runtime.test_poweroff`).
    pub powered_off: bool,
}

/// Boots `m` until node-runtime's ready line (failing the test on an error line, a panic or
/// after 300 s, with the console tail), then waits up to 60 s for the guest to power off.
pub fn boot_to_ready(m: &qemu_harness::Machine) -> Booted {
    use std::time::Duration;
    let mut run = m.start().unwrap();
    let line = run
        .wait_for(
            "node-runtime: ready meta=",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("ready after {:.1} s: {line}", run.elapsed().as_secs_f64());
    let console = run.console().to_vec();
    let powered_off = run.finish(Duration::from_secs(60));
    Booted {
        line,
        console,
        powered_off,
    }
}

/// The files of a disk image's ESP (the GPT partition of type ESP, 512-byte sectors), read
/// with the fat crate, sorted by path; `dir` holds the extracted partition meanwhile.
pub fn esp_files(raw: &Path, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let size = std::fs::metadata(raw).unwrap().len();
    let l = gpt::read(&mut std::fs::File::open(raw).unwrap(), 512, size).unwrap();
    let esp = l
        .partitions
        .iter()
        .find(|p| p.type_guid == gpt::types::ESP)
        .unwrap();
    let img = dir.join("esp.img");
    extract(raw, esp.offset(512), esp.size(512), &img);
    let mut out = fat_files(&img);
    std::fs::remove_file(&img).unwrap();
    out.sort();
    out
}

/// Boots the Raspberry Pi SD image `raw` under QEMU's `raspi3b` to the ready line: the
/// board's u-boot (`u-boot.bin`) and device tree (`bcm2837-rpi-3-b.dtb`) come out of the
/// image's own ESP (`esp`, as [`esp_files`] read it), and the image is grown to a power of
/// two first, as an SD card's size is. `dir` holds the firmware files.
pub fn boot_raspi(raw: &Path, esp: &[(String, Vec<u8>)], dir: &Path) -> Booted {
    let get = |n: &str| {
        esp.iter()
            .find(|f| f.0 == n)
            .unwrap_or_else(|| panic!("{n} not in the ESP"))
            .1
            .clone()
    };
    let (fw, dtb) = (dir.join("u-boot.bin"), dir.join("rpi3.dtb"));
    std::fs::write(&fw, get("u-boot.bin")).unwrap();
    std::fs::write(&dtb, get("bcm2837-rpi-3-b.dtb")).unwrap();
    let size = std::fs::metadata(raw).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .unwrap()
        .set_len(size.next_power_of_two())
        .unwrap();
    boot_to_ready(&qemu_harness::Machine {
        arch: qemu_harness::Arch::Arm64,
        board: Some(qemu_harness::Board::Raspi3b { firmware: fw, dtb }),
        firmware: qemu_harness::Firmware::Bios,
        disks: vec![(raw.to_path_buf(), qemu_harness::DiskKind::Sd)],
        ..Default::default()
    })
}

/// Every file of a FAT filesystem image, read with the fat crate, in its walk order.
pub fn fat_files(img: &Path) -> Vec<(String, Vec<u8>)> {
    let mut r = fat::read::FatReader::open(std::fs::File::open(img).unwrap(), 0).unwrap();
    let mut out = Vec::new();
    for (path, e) in r.walk().unwrap() {
        if !e.is_dir() {
            let mut data = Vec::new();
            r.read_file(&e, &mut data).unwrap();
            out.push((path.trim_start_matches('/').to_string(), data));
        }
    }
    out
}

/// A base installer image of `arch` as an OCI layout in `dir`, published by `base-assets
/// publish` from the build's assets.
pub fn publish_base_layout(arch: &str, dir: &Path) {
    ok(Command::new(bin("base-assets"))
        .args(["publish", "--arch", arch, "--assets"])
        .arg(assets())
        .arg("--oci-layout")
        .arg(dir));
}

/// A fresh RSA-2048 private key (PKCS#8 PEM) from openssl at `path`.
pub fn rsa_key(path: &Path) -> PathBuf {
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(path));
    path.to_path_buf()
}

/// The layer blobs of the (single) image of an OCI layout directory, in order.
fn layout_layers(layout: &Path) -> Vec<PathBuf> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blobs = layout.join("blobs/sha256");
    let md = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(md)).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blobs.join(&l["digest"].as_str().unwrap()[7..]))
        .collect()
}

fn untar_gz(blob: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    ok(Command::new("tar").arg("-xzf").arg(blob).arg("-C").arg(dir));
}

/// The last layer of the (single) image of an OCI layout directory, extracted by tar into
/// `dir`.
pub fn last_layer(layout: &Path, dir: &Path) -> PathBuf {
    untar_gz(layout_layers(layout).last().unwrap(), dir);
    dir.to_path_buf()
}

/// Every layer of the (single) image of an OCI layout directory, extracted by tar into
/// `dir` in order (the image's root filesystem).
pub fn unpack_layout(layout: &Path, dir: &Path) {
    for l in layout_layers(layout) {
        untar_gz(&l, dir);
    }
}

/// A file of an ISO 9660 tree, read with isoinfo.
pub fn iso_file(iso: &Path, path: &str) -> Vec<u8> {
    let o = run(
        Command::new("isoinfo")
            .args(["-R", "-x", path, "-i"])
            .arg(iso),
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The names of the built-in profiles (`profiles/*.yaml`), sorted.
pub fn builtin_profiles() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("profiles"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".yaml")
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Builds a profile given on stdin into `out`; returns its single artifact.
pub fn build_stdin(profile: &str, out: &Path) -> PathBuf {
    let o = run(
        imager().args(["-", "--output"]).arg(out),
        Some(profile.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = dir_entries(out);
    assert_eq!(files.len(), 1, "{files:?}");
    out.join(&files[0])
}

/// OVMF's snakeoil certificate: the snakeoil variable store enrolls it as PK, KEK and db.
pub const SNAKEOIL_PEM: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

/// OVMF's snakeoil key, decrypted by openssl (its passphrase is `snakeoil`) into `dir`.
pub fn snakeoil_key(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("snakeoil.key");
    ok(Command::new("openssl")
        .args(["pkcs8", "-passin", "pass:snakeoil", "-in"])
        .arg("/usr/share/ovmf/PkKek-1-snakeoil.key")
        .arg("-out")
        .arg(&key));
    key
}

/// A fresh RSA key and self-signed certificate (CN `other`) that no firmware knows, in `dir`:
/// (key, certificate).
pub fn other_key_and_cert(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (key, cert) = (dir.join("other.key"), dir.join("other.pem"));
    ok(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=other", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (key, cert)
}

/// Whether sbsigntool's `sbverify` accepts `file`'s Authenticode signature with `cert`.
pub fn sbverify(file: &Path, cert: &Path) -> bool {
    run(
        Command::new("sbverify").arg("--cert").arg(cert).arg(file),
        None,
    )
    .status
    .success()
}

/// Boots `m` and asserts that the firmware refuses what it loads: no ready line, the kernel
/// never starts, and the console shows the refusal ("Access Denied" or "Security Violation").
pub fn assert_refused(m: &qemu_harness::Machine) {
    let mut run = m.start().unwrap();
    // the firmware's refusal ends the wait early
    let r = run.wait_for(
        "node-runtime: ready",
        &["Linux version", "Access Denied", "Security Violation"],
        std::time::Duration::from_secs(120),
        false,
    );
    let console = run.console().join("\n");
    eprintln!(
        "firmware refused it after {:.1} s",
        run.elapsed().as_secs_f64()
    );
    assert!(
        r.is_err(),
        "an image signed with another key started:\n{console}"
    );
    assert!(
        !console.contains("Linux version"),
        "the kernel started:\n{console}"
    );
    assert!(
        console.contains("Access Denied") || console.contains("Security Violation"),
        "no firmware refusal on the console:\n{console}"
    );
    run.finish(std::time::Duration::from_secs(5));
}
