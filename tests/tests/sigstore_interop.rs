//! Sigstore interop with an independent client, sigstore-js (`@sigstore/verify`,
//! `@sigstore/sign`, pinned by tests/sigstore-js/package-lock.json and installed here with
//! `npm ci`): the bundles `--sign-key` writes verify with it, bundles it writes verify with
//! `imager verify-blob`, and a tampered file fails both.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sigstore-js scripts with their dependencies installed, in a private directory.
fn sigstore_js(t: &Path) -> PathBuf {
    let d = t.join("sigstore-js");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["package.json", "package-lock.json", "verify.js", "sign.js"] {
        std::fs::copy(root().join("tests/sigstore-js").join(f), d.join(f)).unwrap();
    }
    ok(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&d));
    d
}

/// A fresh P-256 key as PKCS#8 PEM and its public key PEM (openssl, independent of our code).
fn keypair(t: &Path) -> (PathBuf, PathBuf) {
    let (ec, key, public) = (t.join("ec.pem"), t.join("key.pem"), t.join("pub.pem"));
    ok(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&ec));
    ok(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(&ec)
        .arg("-out")
        .arg(&key));
    ok(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&ec)
        .arg("-out")
        .arg(&public));
    (key, public)
}

fn node(js: &Path, script: &str, args: &[&Path]) -> std::process::Output {
    let mut c = Command::new("node");
    c.arg(js.join(script)).args(args).current_dir(js);
    run(&mut c, None)
}

fn verify_blob(file: &Path, bundle: &Path, key: &Path) -> std::process::Output {
    run(
        imager()
            .arg("verify-blob")
            .arg(file)
            .arg("--bundle")
            .arg(bundle)
            .arg("--key")
            .arg(key),
        None,
    )
}

#[test]
fn bundles_verify_both_ways_with_sigstore_js() {
    let t = tempfile::tempdir().unwrap();
    let js = sigstore_js(t.path());
    let (key, public) = keypair(t.path());

    // ours → sigstore-js
    let out = t.path().join("out");
    ok(imager()
        .args(["metal", "--output-kind", "cmdline", "--sign-key"])
        .arg(&key)
        .arg("--output")
        .arg(&out));
    let file = out.join("cmdline-metal-amd64.zst");
    let bundle = out.join("cmdline-metal-amd64.zst.sigstore.json");
    let v = node(&js, "verify.js", &[&bundle, &file, &public]);
    assert!(
        v.status.success(),
        "sigstore-js refused our bundle:\n{}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(String::from_utf8_lossy(&v.stdout).contains("sigstore-js: verified"));

    // sigstore-js → ours
    let theirs = t.path().join("theirs.sigstore.json");
    let s = node(&js, "sign.js", &[&file, &key, &theirs]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let text = std::fs::read_to_string(&theirs).unwrap();
    assert!(
        text.contains("application/vnd.dev.sigstore.bundle"),
        "{text}"
    );
    let o = verify_blob(&file, &theirs, &public);
    assert!(
        o.status.success(),
        "imager verify-blob refused sigstore-js's bundle:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // a tampered file fails both clients, with either bundle
    let tampered = t.path().join("tampered");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    for b in [&bundle, &theirs] {
        let v = node(&js, "verify.js", &[b, &tampered, &public]);
        assert!(!v.status.success(), "sigstore-js accepted a tampered file");
        let o = verify_blob(&tampered, b, &public);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "imager accepted a tampered file");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    // and another key fails both
    let other_dir = t.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (_, other) = keypair(&other_dir);
    let v = node(&js, "verify.js", &[&bundle, &file, &other]);
    assert!(!v.status.success(), "sigstore-js accepted the wrong key");
    assert!(!verify_blob(&file, &theirs, &other).status.success());
}
