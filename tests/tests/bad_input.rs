//! Hostile and mistaken input: each case gives one clear error naming the field or path, the
//! documented exit code (docs/ARCHITECTURE.md, "Invariants"), and leaves nothing in the output
//! directory.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::Path;

struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Option<&'static str>,
    env: Vec<(&'static str, String)>,
    code: i32,
    says: Vec<&'static str>,
}

fn case(name: &'static str, args: &[&str], code: i32, says: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        env: vec![],
        code,
        says: says.to_vec(),
    }
}

fn stdin_case(name: &'static str, yaml: &'static str, code: i32, says: &[&'static str]) -> Case {
    Case {
        stdin: Some(yaml),
        ..case(name, &["-"], code, says)
    }
}

fn check(c: &Case, out_dir: &Path) {
    let mut cmd = imager();
    cmd.args(&c.args).arg("--output").arg(out_dir);
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, c.stdin.map(str::as_bytes));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(c.code),
        "{}: exit code; stderr:\n{err}",
        c.name
    );
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(
        error_lines.len(),
        1,
        "{}: expected one error line:\n{err}",
        c.name
    );
    for s in &c.says {
        assert!(err.contains(s), "{}: message lacks {s:?}:\n{err}", c.name);
    }
    assert!(
        dir_entries(out_dir).is_empty(),
        "{}: output left behind: {:?}",
        c.name,
        dir_entries(out_dir)
    );
}

#[test]
fn bad_input_is_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.yaml");
    std::fs::write(&big, "x".repeat(300 * 1024)).unwrap();
    let big_arg = format!("0xa=@{}", big.display());
    let missing_arg = format!("0xa=@{}", tmp.path().join("nope.yaml").display());
    let mut cases = vec![
        stdin_case("invalid YAML", "platform: [metal\n", 2, &["invalid YAML"]),
        stdin_case(
            "unknown field",
            "platform: metal\noutput:\n  kind: image\n  imageOptions:\n    diskSise: 5\n",
            2,
            &["output.imageOptions", "diskSise"],
        ),
        stdin_case("not a mapping", "- metal\n", 2, &["mapping"]),
        stdin_case(
            "META key out of range in a profile",
            "baseProfileName: metal\ncustomization:\n  metaContents:\n    - key: 300\n      value: x\n",
            2,
            &["customization.metaContents[0].key"],
        ),
        stdin_case(
            "missing platform",
            "arch: amd64\noutput:\n  kind: cmdline\n",
            2,
            &["platform"],
        ),
        stdin_case(
            "image without diskSize",
            "arch: amd64\nplatform: metal\noutput:\n  kind: image\n  imageOptions:\n    diskFormat: raw\n",
            2,
            &["output.imageOptions.diskSize"],
        ),
        stdin_case(
            "unknown base profile in YAML",
            "baseProfileName: metalx\n",
            2,
            &["unknown profile \"metalx\""],
        ),
        stdin_case(
            "a SecureBoot disk image without its keys",
            "baseProfileName: metal\narch: amd64\nsecureboot: true\n",
            6,
            &[
                "input.secureboot.secureBootSigner.keyPath",
                "/secureboot/uki-signing-key.pem",
            ],
        ),
        case(
            "unknown profile name",
            &["no-such-profile"],
            2,
            &["unknown profile \"no-such-profile\"", "metal"],
        ),
        case(
            "META key > 0xff",
            &["metal", "--meta", "0x100=x"],
            2,
            &["0x100", "out of range"],
        ),
        case(
            "META key not a number",
            &["metal", "--meta", "ten=x"],
            2,
            &["\"ten\""],
        ),
        case(
            "META flag without =",
            &["metal", "--meta", "0xa"],
            2,
            &["KEY=VALUE"],
        ),
        case(
            "oversize META",
            &["metal", "--meta", &big_arg],
            2,
            &["customization.metaContents[0]", "0x0a"],
        ),
        case(
            "META value file missing",
            &["metal", "--meta", &missing_arg],
            2,
            &["nope.yaml"],
        ),
        case(
            "bad arch",
            &["metal", "--arch", "riscv64"],
            2,
            &["arch", "riscv64"],
        ),
        case(
            "bad platform",
            &["metal", "--platform", "moon"],
            2,
            &["platform", "moon"],
        ),
        case(
            "bad output kind",
            &["metal", "--output-kind", "floppy"],
            2,
            &["--output-kind", "floppy"],
        ),
        case(
            "kernel output with META",
            &["metal", "--output-kind", "kernel", "--meta", "0xa=x"],
            2,
            &["metaContents"],
        ),
        case(
            "a SecureBoot ISO without its keys",
            &["secureboot-iso"],
            6,
            &[
                "input.secureboot.secureBootSigner.keyPath",
                "/secureboot/uki-signing-key.pem",
            ],
        ),
    ];
    cases.push(stdin_case(
        "dual-boot on arm64",
        "baseProfileName: metal\narch: arm64\noutput:\n  imageOptions:\n    bootloader: dual-boot\n",
        2,
        &["dual-boot", "amd64"],
    ));
    cases.push(stdin_case(
        "a gRPC SecureBoot signer",
        "baseProfileName: secureboot-metal-uki\narch: amd64\ninput:\n  secureboot:\n    secureBootSigner:\n      signerAddress: unix:///run/signer.sock\n",
        3,
        &["input.secureboot.secureBootSigner.signerAddress", "gRPC signers are not implemented"],
    ));
    cases.push(case(
        "a SecureBoot UKI without its keys",
        &["secureboot-metal-uki"],
        6,
        &[
            "input.secureboot.secureBootSigner.keyPath",
            "/secureboot/uki-signing-key.pem",
        ],
    ));
    cases.push(case(
        "unknown enroll mode",
        &["metal", "--secureboot-enroll-keys", "sometimes"],
        2,
        &["--secureboot-enroll-keys", "sometimes"],
    ));
    let mut missing_kernel = case(
        "missing kernel file",
        &["metal"],
        6,
        &["input.kernel.path", "/nonexistent/amd64/vmlinuz"],
    );
    missing_kernel
        .env
        .push(("IMAGER_INSTALL_DIR", "/nonexistent".into()));
    cases.push(missing_kernel);
    let mut bad_epoch = case(
        "bad SOURCE_DATE_EPOCH",
        &["metal"],
        2,
        &["SOURCE_DATE_EPOCH"],
    );
    bad_epoch
        .env
        .push(("SOURCE_DATE_EPOCH", "yesterday".into()));
    cases.push(bad_epoch);
    assert!(cases.len() >= 15);
    for c in &cases {
        let out = tempfile::tempdir().unwrap();
        check(c, out.path());
    }
}

#[test]
fn failure_during_assembly_leaves_no_partial_file() {
    // an initramfs that is a directory passes no check; a kernel that vanishes mid-build is
    // simulated by an unreadable sd-boot path: the image write fails after the temp file exists
    let tmp = tempfile::tempdir().unwrap();
    let assets = tmp.path().join("assets/amd64");
    std::fs::create_dir_all(&assets).unwrap();
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-boot.efi",
        "systemd-stub.efi",
    ] {
        std::fs::copy(e2e::assets().join("amd64").join(f), assets.join(f)).unwrap();
    }
    // disk too small for the layout: refused before anything is written (a failure in the
    // middle of a write is tests/tests/exit_codes.rs's full disk)
    let out = tmp.path().join("out");
    let mut cmd = imager();
    cmd.env("IMAGER_INSTALL_DIR", tmp.path().join("assets"))
        .arg("-")
        .arg("--output")
        .arg(&out);
    let r = run(
        &mut cmd,
        Some(b"baseProfileName: metal\narch: amd64\noutput:\n  imageOptions:\n    bootloader: sd-boot\n    diskSize: 1048576\n  outFormat: raw\n"),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    // diskSize + 1000 MiB is still too small for a 2101 MiB ESP: the profile's fault
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: field output.imageOptions.diskSize: ") && err.contains("\"EFI\""),
        "{err}"
    );
    assert!(
        dir_entries(&out).is_empty(),
        "left behind: {:?}",
        dir_entries(&out)
    );
}
