//! SecureBoot media (docs/formats/uki-secureboot.md): disk images, ISOs and installer images
//! whose systemd-boot and UKI are Authenticode-signed (checked by sbsigntool's `sbverify`),
//! with PK/KEK/db enrollment files; booted under Debian's SecureBoot OVMF with the snakeoil
//! keys enrolled, refused when signed with another key, and enrolled by systemd-boot from the
//! image itself when the firmware starts in setup mode. Every SecureBoot built-in profile
//! builds, twice to the same bytes.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Signing material: (Authenticode key, its certificate, PCR key).
struct Keys {
    key: PathBuf,
    cert: PathBuf,
    pcr: PathBuf,
}

fn pcr_key(dir: &Path) -> PathBuf {
    rsa_key(&dir.join("pcr.key"))
}

/// OVMF's snakeoil key (decrypted with openssl), the certificate its vars enroll.
fn snakeoil(dir: &Path) -> Keys {
    Keys {
        key: snakeoil_key(dir),
        cert: SNAKEOIL_PEM.into(),
        pcr: pcr_key(dir),
    }
}

/// A fresh key and self-signed certificate no firmware knows.
fn other(dir: &Path) -> Keys {
    let (key, cert) = other_key_and_cert(dir);
    Keys {
        key,
        cert,
        pcr: pcr_key(dir),
    }
}

/// A profile over built-in `base` signed with `k`; `output` is extra YAML under `output:`.
fn profile(base: &str, k: &Keys, output: &str) -> String {
    format!(
        "baseProfileName: {base}\narch: amd64\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0\n    - node_runtime.test_poweroff\noutput:\n  outFormat: raw\n{output}input:\n  secureboot:\n    secureBootSigner:\n      keyPath: {}\n      certPath: {}\n    pcrSigner:\n      keyPath: {}\n",
        k.key.display(),
        k.cert.display(),
        k.pcr.display()
    )
}

/// Signed with `k`'s certificate, and not with another one.
fn assert_signed(data: &[u8], name: &str, k: &Keys, other_cert: &Path, dir: &Path) {
    let f = dir.join(name.replace('/', "_"));
    std::fs::write(&f, data).unwrap();
    assert!(sbverify(&f, &k.cert), "sbverify refused {name}");
    assert!(
        !sbverify(&f, other_cert),
        "sbverify accepted {name} with another certificate"
    );
}

fn der_of(pem: &Path) -> Vec<u8> {
    let o = run(
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(pem),
        None,
    );
    assert!(o.status.success());
    o.stdout
}

/// `secureboot-metal`: signed systemd-boot and UKI on the ESP with the enrollment files;
/// reproducible; boots under SecureBoot with the snakeoil keys; signed with another key it
/// is refused; and from setup mode systemd-boot enrolls our keys (`secure-boot-enroll
/// force`), resets, and the machine then boots with SecureBoot enabled.
#[test]
fn secureboot_disk_image_signed_booted_refused_and_enrolled() {
    let t = tempfile::tempdir().unwrap();
    let k = snakeoil(&t.path().join("keys"));
    let o = other(&t.path().join("other"));
    let enroll = "  imageOptions:\n    sdBootEnrollKeys: force\n";
    let p = profile("secureboot-metal", &k, enroll);
    let raw = build_stdin(&p, &t.path().join("a"));
    assert!(
        raw.ends_with("metal-amd64-secureboot.raw"),
        "{}",
        raw.display()
    );
    let again = build_stdin(&p, &t.path().join("b"));
    assert_eq!(sha256_file(&raw), sha256_file(&again), "two builds differ");
    std::fs::remove_file(&again).unwrap();

    let files = esp_files(&raw, t.path());
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "EFI/Linux/Talos-v1.14.0.efi",
            "EFI/boot/BOOTX64.efi",
            "loader/keys/auto/KEK.auth",
            "loader/keys/auto/PK.auth",
            "loader/keys/auto/db.auth",
            "loader/loader.conf",
        ]
    );
    let get = |n: &str| files.iter().find(|f| f.0 == n).unwrap().1.clone();
    assert_eq!(
        get("loader/loader.conf"),
        b"# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll force\n"
    );
    for f in ["EFI/boot/BOOTX64.efi", "EFI/Linux/Talos-v1.14.0.efi"] {
        assert_signed(&get(f), f, &k, &o.cert, t.path());
    }
    // the enrolled lists hold the signing certificate as DER
    let der = der_of(&k.cert);
    for f in ["PK", "KEK", "db"] {
        let auth = get(&format!("loader/keys/auto/{f}.auth"));
        assert!(
            auth.windows(der.len()).any(|w| w == der.as_slice()),
            "{f}.auth does not list the signing certificate"
        );
    }

    // enforcing firmware with the snakeoil keys boots it
    let machine = |fw: Firmware, disk: &Path| Machine {
        firmware: fw,
        disks: vec![(disk.to_path_buf(), DiskKind::Virtio)],
        ..Default::default()
    };
    let booted = boot_to_ready(&machine(Firmware::UefiSecureBootSnakeoil, &raw));
    assert!(
        booted.line.contains("secureboot=enabled"),
        "{}",
        booted.line
    );

    // setup mode: systemd-boot enrolls the image's keys and resets (QEMU exits on -no-reboot)
    let vars = t.path().join("vars.fd");
    let mut m = machine(Firmware::UefiSecureBootSetup, &raw);
    std::fs::copy(m.vars_template().unwrap().unwrap(), &vars).unwrap();
    m.vars_file = Some(vars.clone());
    let mut first = m.start().unwrap();
    let line = first
        .wait_for(
            "Enrolling secure boot keys from directory",
            &["Linux version", "Failed to"],
            Duration::from_secs(180),
            false,
        )
        .unwrap_or_else(|e| panic!("no enrollment: {e}"));
    eprintln!(
        "enrolling after {:.1} s: {line}",
        first.elapsed().as_secs_f64()
    );
    // systemd-boot 252 counts down 15 s, writes db, KEK and PK, and resets, which ends QEMU
    // (-no-reboot); the next boot shows whether the keys are in place
    let exited = first.finish(Duration::from_secs(180));
    assert!(exited, "no reset after the enrollment");
    // the same machine (its variables kept) now enforces SecureBoot with our keys
    let booted = boot_to_ready(&m);
    assert!(
        booted.line.contains("secureboot=enabled"),
        "{}",
        booted.line
    );
    assert!(
        !booted
            .console
            .iter()
            .any(|l| l.contains("Enrolling secure boot keys")),
        "enrolled a second time"
    );

    // signed with another key: the firmware refuses systemd-boot
    std::fs::remove_file(&raw).unwrap();
    let wrong = build_stdin(
        &profile("secureboot-metal", &o, enroll),
        &t.path().join("c"),
    );
    assert_refused(&machine(Firmware::UefiSecureBootSnakeoil, &wrong));
}

/// `secureboot-iso`: UEFI-only, signed, with the enrollment files and the certificate in
/// `EFI/keys/`; reproducible; boots from CD under SecureBoot with the snakeoil keys.
#[test]
fn secureboot_iso_signed_and_booted() {
    let t = tempfile::tempdir().unwrap();
    let k = snakeoil(&t.path().join("keys"));
    let o = other(&t.path().join("other"));
    let p = profile("secureboot-iso", &k, "");
    let iso = build_stdin(&p, &t.path().join("a"));
    assert!(
        iso.ends_with("metal-amd64-secureboot.iso"),
        "{}",
        iso.display()
    );
    let again = build_stdin(&p, &t.path().join("b"));
    assert_eq!(sha256_file(&iso), sha256_file(&again), "two builds differ");
    std::fs::remove_file(&again).unwrap();

    let list = ok(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(&iso));
    for want in [
        "/EFI/BOOT/BOOTX64.EFI",
        "/EFI/Linux/Talos-v1.14.0.efi",
        "/EFI/keys/uki-signing-cert.der",
        "/loader/keys/auto/PK.auth",
        "/loader/keys/auto/KEK.auth",
        "/loader/keys/auto/db.auth",
        "/loader/loader.conf",
    ] {
        assert!(list.lines().any(|l| l == want), "{want} missing:\n{list}");
    }
    assert!(
        !list.contains("/boot/grub"),
        "a SecureBoot ISO has no GRUB:\n{list}"
    );
    assert_eq!(
        iso_file(&iso, "/loader/loader.conf"),
        b"# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll if-safe\n"
    );
    assert_eq!(
        iso_file(&iso, "/EFI/keys/uki-signing-cert.der"),
        der_of(&k.cert)
    );
    for f in ["/EFI/BOOT/BOOTX64.EFI", "/EFI/Linux/Talos-v1.14.0.efi"] {
        assert_signed(&iso_file(&iso, f), f, &k, &o.cert, t.path());
    }

    let booted = boot_to_ready(&Machine {
        firmware: Firmware::UefiSecureBootSnakeoil,
        disks: vec![(iso.clone(), DiskKind::Cdrom)],
        ..Default::default()
    });
    assert!(
        booted.line.contains("secureboot=enabled"),
        "{}",
        booted.line
    );
}

fn builtins() -> Vec<String> {
    builtin_profiles()
        .into_iter()
        .filter(|n| n.starts_with("secureboot-") || n == "metal-uki")
        .collect()
}

/// Every file under `dir` with its sha256, sorted.
fn tree_digests(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, sha256_file(&p)));
            }
        }
    }
    out.sort();
    out
}

/// A two-layer base installer image as an OCI layout: the installer, then the boot assets
/// (this build's, which the installer output is made from and replaces).
fn base_installer(dir: &Path) {
    use e2e::fixture::{Tar, gzip, oci_layout, rewrite_config};
    let base = Tar::new()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/installer", 0o755, b"#!/bin/sh\n")
        .finish();
    let mut assets_tar = Tar::new()
        .dir("usr", 0o755)
        .dir("usr/install", 0o755)
        .dir("usr/install/amd64", 0o755);
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-boot.efi",
        "systemd-stub.efi",
    ] {
        let data = std::fs::read(assets().join("amd64").join(f)).unwrap();
        assets_tar = assets_tar.file(&format!("usr/install/amd64/{f}"), 0o644, &data);
    }
    let assets = assets_tar.finish();
    oci_layout(dir, &[("amd64", vec![gzip(&base), gzip(&assets)])]);
    rewrite_config(
        dir,
        &format!(
            r#""diff_ids":["sha256:{}","sha256:{}"]"#,
            sha256(&base),
            sha256(&assets)
        ),
    );
}

/// `metal-uki` and every `secureboot-*` built-in profile builds, and two builds give the same
/// bytes; the SecureBoot installer image carries a signed UKI and a signed systemd-boot.
#[test]
fn every_secureboot_profile_builds_reproducibly() {
    let t = tempfile::tempdir().unwrap();
    let k = snakeoil(&t.path().join("keys"));
    let o = other(&t.path().join("other"));
    let base = t.path().join("base");
    base_installer(&base);
    let names = builtins();
    assert_eq!(names.len(), 11, "{names:?}");
    for name in &names {
        // the built-in profile's own output options, only the keys (and the base) are ours
        let mut yaml = format!("baseProfileName: {name}\narch: amd64\ninput:\n");
        if name.ends_with("installer") {
            yaml.push_str(&format!(
                "  baseInstaller:\n    ociPath: {}\n",
                base.display()
            ));
        }
        if name.starts_with("secureboot-") {
            yaml.push_str(&format!(
                "  secureboot:\n    secureBootSigner:\n      keyPath: {}\n      certPath: {}\n    pcrSigner:\n      keyPath: {}\n",
                k.key.display(),
                k.cert.display(),
                k.pcr.display()
            ));
        }
        let (a, b) = (
            t.path().join(format!("{name}-a")),
            t.path().join(format!("{name}-b")),
        );
        for out in [&a, &b] {
            let r = run(
                imager().args(["-", "--output"]).arg(out),
                Some(yaml.as_bytes()),
            );
            assert!(
                r.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
        }
        let (da, db) = (tree_digests(&a), tree_digests(&b));
        assert!(!da.is_empty(), "{name}: nothing built");
        assert_eq!(da, db, "{name}: two builds differ");
        eprintln!("{name}: {:?}", da.iter().map(|d| &d.0).collect::<Vec<_>>());
        if name == "secureboot-installer" {
            let layer = last_layer(
                &a.join("installer-amd64-secureboot"),
                &t.path().join("layer"),
            );
            for f in ["vmlinuz.efi", "systemd-boot.efi"] {
                let data = std::fs::read(layer.join("usr/install/amd64").join(f)).unwrap();
                assert_signed(&data, f, &k, &o.cert, t.path());
            }
        }
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
