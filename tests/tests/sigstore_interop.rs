//! Sigstore interop with an independent client, sigstore-js (`@sigstore/verify`,
//! `@sigstore/sign`, `@sigstore/mock`, pinned by tests/sigstore-js/package-lock.json and
//! installed here with `npm ci`): the bundles `--sign-key` writes verify with it, bundles it
//! writes verify with `imager verify-blob` (key-signed, and keyless through its offline
//! Fulcio, CT log, Rekor and TSA stand-ins), and a tampered file fails both.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// `imager verify-blob` keyless, with sigstore-js's trusted root.
fn verify_keyless(file: &Path, out: &Path, identity: &str, issuer: &str) -> std::process::Output {
    run(
        imager()
            .arg("verify-blob")
            .arg(file)
            .arg("--bundle")
            .arg(out.join("bundle.sigstore.json"))
            .arg("--trusted-root")
            .arg(out.join("trusted_root.json"))
            .args(["--certificate-identity", identity])
            .args(["--certificate-oidc-issuer", issuer]),
        None,
    )
}

/// A keyless bundle made by sigstore-js against @sigstore/mock's Fulcio (certificate with an
/// embedded SCT), Rekor v1 (SET, inclusion proof, checkpoint) and TSA (RFC 3161) verifies with
/// `imager verify-blob --trusted-root`; a tampered file, another identity, another issuer, a
/// trust root without the CT log or the CA, and a broken inclusion proof are refused.
#[test]
fn keyless_bundles_from_sigstore_js_verify() {
    let t = tempfile::tempdir().unwrap();
    let js = sigstore_js(t.path());
    let file = t.path().join("artifact.bin");
    std::fs::write(&file, b"an artifact signed keyless by sigstore-js\n").unwrap();
    let out = t.path().join("keyless");
    let (identity, issuer) = keyless_js(&js, &[&file, &out]);
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.sigstore.json")).unwrap()).unwrap();
    let entry = &bundle["verificationMaterial"]["tlogEntries"][0];
    assert!(entry["inclusionPromise"].is_object(), "{bundle}");
    assert!(
        entry["inclusionProof"]["checkpoint"]["envelope"].is_string(),
        "{bundle}"
    );
    assert!(
        bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
            ["signedTimestamp"]
            .is_string(),
        "{bundle}"
    );

    let o = verify_keyless(&file, &out, &identity, &issuer);
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "imager refused sigstore-js's keyless bundle:\n{said}"
    );
    assert!(
        said.contains(&format!("signed by {identity} (issuer {issuer})")),
        "{said}"
    );

    let refused = |o: std::process::Output, want: &str| {
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(5), "{err}");
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    };
    let tampered = t.path().join("tampered.bin");
    std::fs::write(&tampered, b"an artifact signed keyless by sigstore-js!\n").unwrap();
    std::fs::copy(
        out.join("bundle.sigstore.json"),
        t.path().join("tampered.bin.sigstore.json"),
    )
    .unwrap();
    let tout = t.path().join("tout");
    std::fs::create_dir_all(&tout).unwrap();
    for f in ["bundle.sigstore.json", "trusted_root.json"] {
        std::fs::copy(out.join(f), tout.join(f)).unwrap();
    }
    refused(
        verify_keyless(&tampered, &tout, &identity, &issuer),
        "does not match the file's sha256",
    );
    refused(
        verify_keyless(
            &file,
            &out,
            "https://oidc.interop.test/users/mallory",
            &issuer,
        ),
        "does not match https://oidc.interop.test/users/mallory",
    );
    refused(
        verify_keyless(&file, &out, &identity, "https://accounts.example.com"),
        "does not match https://accounts.example.com",
    );
    // the same bundle under edited trust roots and with an edited proof
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value, &mut serde_json::Value)| {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut b = bundle.clone();
        let mut r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("trusted_root.json")).unwrap()).unwrap();
        f(&mut b, &mut r);
        std::fs::write(d.join("bundle.sigstore.json"), b.to_string()).unwrap();
        std::fs::write(d.join("trusted_root.json"), r.to_string()).unwrap();
        verify_keyless(&file, &d, &identity, &issuer)
    };
    refused(
        edit("no-ctlog", &|_, r| r["ctlogs"] = serde_json::json!([])),
        "certificate transparency: the trust root lists no certificate-transparency log",
    );
    refused(
        edit("retired-ca", &|_, r| {
            r["certificateAuthorities"][0]["validFor"]["end"] = "2020-01-01T00:00:00Z".into()
        }),
        "outside its trust-root validity window",
    );
    refused(
        edit("bad-proof", &|b, _| {
            b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["rootHash"] =
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()
        }),
        "does not match the checkpoint",
    );
    // without the SET, sigstore-js's RFC 3161 timestamp alone is the verified time
    let no_set = |b: &mut serde_json::Value| {
        b["verificationMaterial"]["tlogEntries"][0]
            .as_object_mut()
            .unwrap()
            .remove("inclusionPromise");
    };
    let o = edit("tsa-time-only", &|b, _| no_set(b));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // and then a trust root without the TSA leaves no verified time
    refused(
        edit("no-tsa", &|b, r| {
            no_set(b);
            r["timestampAuthorities"] = serde_json::json!([]);
        }),
        "signed timestamp: no verified signing time: timestamp 0: the timestamp's signing certificate is not in the token or the trust root",
    );
    // with the SET, a timestamp the trust root cannot check is not counted (as sigstore-go)
    let o = edit("no-tsa-but-set", &|_, r| {
        r["timestampAuthorities"] = serde_json::json!([])
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
