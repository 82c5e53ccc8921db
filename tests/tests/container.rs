//! The Dockerfile's promise: the imager runs from an otherwise empty root (a `FROM scratch`
//! image) holding only `/usr/bin/imager` and `/usr/install/amd64/*`, without /tmp, /dev,
//! /proc or a libc, as an unprivileged user (mapped to root in a user namespace).
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::process::Command;

#[test]
fn imager_runs_in_an_empty_root() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("usr/install/amd64/grub")).unwrap();
    std::fs::create_dir_all(r.join("out")).unwrap();
    std::fs::copy(bin("imager"), r.join("usr/bin/imager")).unwrap();
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-boot.efi",
        "systemd-stub.efi",
    ] {
        std::fs::copy(
            assets().join("amd64").join(f),
            r.join("usr/install/amd64").join(f),
        )
        .unwrap();
    }
    // the GRUB images of the grub and dual-boot layouts (the Dockerfile copies grub/ too)
    for e in std::fs::read_dir(assets().join("amd64/grub")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(
            e.path(),
            r.join("usr/install/amd64/grub").join(e.file_name()),
        )
        .unwrap();
    }
    let out = ok(Command::new("unshare")
        .env_clear()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--map-root-user")
        .arg(format!("--root={}", r.display()))
        .args([
            "/usr/bin/imager",
            "metal",
            "--output-kind",
            "cmdline",
            "--output",
            "/out",
            "--json",
        ]));
    assert!(
        out.contains("\"path\":\"/out/cmdline-metal-amd64.zst\""),
        "{out}"
    );
    // metal's outFormat (.zst) applies to every output kind, as in Talos
    let plain = root.path().join("cmdline");
    decompress(&r.join("out/cmdline-metal-amd64.zst"), &plain);
    let cmdline = std::fs::read_to_string(&plain).unwrap();
    assert!(
        cmdline.starts_with("talos.platform=metal console=tty0 "),
        "{cmdline}"
    );
    assert!(!cmdline.ends_with('\n'));
    // a disk image too: default input paths under /usr/install, temp files in /out
    ok(Command::new("unshare")
        .env_clear()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--map-root-user")
        .arg(format!("--root={}", r.display()))
        .args(["/usr/bin/imager", "metal", "--output", "/out"]));
    assert_eq!(
        dir_entries(&r.join("out")),
        vec!["cmdline-metal-amd64.zst", "metal-amd64.raw.zst"]
    );
}
