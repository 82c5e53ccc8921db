//! Unit tests: keys (with openssl cross-checks), encrypted keys, payloads, policy, glob,
//! key-mode and keyless verification (against the `testing` stand-in), blob bundles.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::testing::{Sigstore, hashedrekord_body, rekor_bundle};
use crate::verify::RekorBundle;
use crate::*;

const DIGEST: &str = "sha256:6b2d5b8b2bd41a3d5b9d3c1b5f5a5d8f2f0f6c1e6a8f3b5b4c2d1e0f9a8b7c6d";
const REPO: &str = "127.0.0.1:5000/signed/app";
const EMAIL: &str = "alice@example.com";
const OIDC: &str = "https://accounts.google.com";
const T0: i64 = 1_750_000_000;

fn err_text<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_err_contains<T: std::fmt::Debug>(r: Result<T, Error>, want: &str) {
    let e = err_text(r);
    assert!(e.contains(want), "error {e:?} does not contain {want:?}");
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl")
}

fn key_verifier(key: &SigningKey) -> Verifier {
    Verifier::Key {
        path: "cosign.pub".into(),
        key: key.public_key(),
    }
}

// ---------------------------------------------------------------- keys

#[test]
fn sign_verify_round_trip_and_wrong_key_refused() {
    let k = SigningKey::from_seed(b"a");
    let other = SigningKey::from_seed(b"b");
    let sig = k.sign(b"hello");
    k.public_key().verify(b"hello", &sig).expect("verifies");
    assert!(matches!(
        k.public_key().verify(b"hellO", &sig),
        Err(Error::BadSignature)
    ));
    assert!(matches!(
        other.public_key().verify(b"hello", &sig),
        Err(Error::BadSignature)
    ));
    // Deterministic (RFC 6979).
    assert_eq!(sig, k.sign(b"hello"));
    assert_ne!(SigningKey::from_seed(b"a").public_key(), other.public_key());
    // Garbage signatures are malformed, not a panic.
    assert!(matches!(
        k.public_key().verify(b"hello", b"\x30\x03junk"),
        Err(Error::MalformedSignature(_))
    ));
}

#[test]
fn raw_r_s_signature_accepted() {
    let k = SigningKey::from_seed(b"raw");
    let der = k.sign(b"msg");
    let sig = p256::ecdsa::Signature::from_der(&der).expect("der");
    let raw = sig.to_bytes();
    assert_eq!(raw.len(), 64);
    k.public_key()
        .verify(b"msg", &raw)
        .expect("raw r||s verifies");
}

#[test]
fn pem_round_trips() {
    let k = SigningKey::from_seed(b"pem");
    let pub_pem = k.public_key().to_pem();
    assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(
        PublicKey::from_pem(pub_pem.as_bytes()).expect("spki"),
        k.public_key()
    );
    let priv_pem = k.to_pkcs8_pem();
    assert!(priv_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let k2 = SigningKey::from_pem(priv_pem.as_bytes(), None).expect("pkcs8");
    assert_eq!(k2.public_key(), k.public_key());
    // Wrong block types and garbage are refused with a message.
    assert_err_contains(
        PublicKey::from_pem(priv_pem.as_bytes()),
        "expected a PUBLIC KEY block, found PRIVATE KEY",
    );
    assert_err_contains(
        SigningKey::from_pem(pub_pem.as_bytes(), None),
        "expected a private key block",
    );
    assert_err_contains(PublicKey::from_pem(b"hello"), "no PEM block");
    assert_err_contains(
        PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        "not an ECDSA P-256, ECDSA P-384 or Ed25519 public key",
    );
}

#[test]
fn openssl_pem_formats_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let o = openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
        d,
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        openssl(
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "sec1.pem",
                "-out",
                "pkcs8.pem"
            ],
            d
        )
        .status
        .success()
    );
    assert!(
        openssl(
            &["pkey", "-in", "sec1.pem", "-pubout", "-out", "pub.pem"],
            d
        )
        .status
        .success()
    );
    let sec1 = std::fs::read(d.join("sec1.pem")).expect("read");
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    let pkcs8 = std::fs::read(d.join("pkcs8.pem")).expect("read");
    assert!(String::from_utf8_lossy(&pkcs8).contains("BEGIN PRIVATE KEY"));
    let spki = std::fs::read(d.join("pub.pem")).expect("read");
    let a = SigningKey::from_pem(&sec1, None).expect("sec1");
    let b = SigningKey::from_pem(&pkcs8, Some(b"ignored")).expect("pkcs8");
    let p = PublicKey::from_pem(&spki).expect("spki");
    assert_eq!(a.public_key(), p);
    assert_eq!(b.public_key(), p);
    // Our SPKI PEM is byte-identical to openssl's.
    assert_eq!(p.to_pem().as_bytes(), spki.as_slice());
}

#[test]
fn openssl_cross_check_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    assert!(
        openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "k.pem"
            ],
            d
        )
        .status
        .success()
    );
    assert!(
        openssl(&["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"], d)
            .status
            .success()
    );
    let key =
        SigningKey::from_pem(&std::fs::read(d.join("k.pem")).expect("read"), None).expect("key");
    let public = key.public_key();
    // Several messages, so that both low-S and high-S signatures are exercised.
    for i in 0..8 {
        let msg = format!("file contents {i}\n").repeat(100 + i);
        std::fs::write(d.join("file"), &msg).expect("write");
        // Ours, verified by openssl.
        std::fs::write(d.join("ours.sig"), key.sign(msg.as_bytes())).expect("write");
        let o = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "ours.sig",
                "file",
            ],
            d,
        );
        assert!(o.status.success(), "openssl refused our signature: {o:?}");
        // Prehash signing gives a signature over the same message.
        let digest = crate::sha256(msg.as_bytes());
        std::fs::write(d.join("pre.sig"), key.sign_prehash(&digest)).expect("write");
        let o = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "pre.sig",
                "file",
            ],
            d,
        );
        assert!(
            o.status.success(),
            "openssl refused our prehash signature: {o:?}"
        );
        // openssl's, verified by us.
        let o = openssl(
            &[
                "dgst",
                "-sha256",
                "-sign",
                "k.pem",
                "-out",
                "theirs.sig",
                "file",
            ],
            d,
        );
        assert!(o.status.success(), "{o:?}");
        let theirs = std::fs::read(d.join("theirs.sig")).expect("read");
        public
            .verify(msg.as_bytes(), &theirs)
            .expect("openssl signature verifies");
        public
            .verify_prehash(&digest, &theirs)
            .expect("openssl signature verifies over the prehash");
        assert!(public.verify(b"other", &theirs).is_err());
    }
}

/// Written by `cosign generate-key-pair` with an empty password (scrypt N=65536): test data
/// of sigstore-rs (`tests/data/keys/cosign_generated_encrypted_empty_private.key`).
const COSIGN_GENERATED_EMPTY_PASSWORD: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJFY3pJR3Z0bnpFcCsxaEpudERnbGI1UnoxN3gwQVMy
YklvWGRNcDQrU1NJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJtSVVKbG1OMzNINExvZ0dhaG5MamdmK3R4SmJwci93MCJ9LCJj
aXBoZXJ0ZXh0IjoiM3FtS2FidXRuYm1WT1IvTkZGM2NDaUErTXp1WWQ5L0VERDVI
MVlUSGhQVzZsSzAvdjVqdDZCQzlsME12NGV5am9qZkl0d3B6a2JJOXQrZGx5VXZ3
VUgvMWZjbkFZT2dEdXRLQzkvSkNiOE02SVY2VHpVaDF5c0ZFWDFzeG9xb1FzeUpL
bjM0UVlldFNlaVdDaGtmUHUyZXByQjFEV0pwekdzTGZIakxNVTkzOEdmNk1xM1A0
N0ZSd2syZzY1cFZnSGMwVWV1L1N1OUs0Zmc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";

/// cosign's older label, password `123` (scrypt N=32768): test data of sigstore-rs
/// (`tests/data/keys/ecdsa_encrypted_private.key`).
const SIGSTORE_RS_PASSWORD_123: &str = "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiIrRFJrTXNRZmNUNTNKNCs1Y3VkUnlnWTUyWUMrK0RW
TmxaSTN4VnlwWFlvPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJnNTFORnBqQUxlemhvbGVWTWVjUFJUNUErMVhMcDAxeiJ9LCJj
aXBoZXJ0ZXh0Ijoib0YvN09mOGlQRDlkNlc2Mk5SWGVibEszWXZmNFFucTZORm16
Q0VyV2FTVUJOZTNXSFJiRVNYK2dJOCszejg4TDBDVXlWdm9LTHhuR0xhVnhnczVD
YUdyekcrMWxFTEI1cGRMVmZXd1VlQzlLelNab0hxZHZLaUsvUmNodVhpS0VqYmdv
ajNGd2pMcmhEYkY5a2lVWk93REpuT01kUkoxNnI3emxjRHdwT3htOXFrbWFDWDlB
VjQ4b1RXVG0rQXExOHlDZE50MDYybGdudVE9PSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----
";

#[test]
fn encrypted_keys_from_public_test_vectors() {
    let k = SigningKey::from_pem(COSIGN_GENERATED_EMPTY_PASSWORD.as_bytes(), None)
        .expect("cosign-generated key with empty password");
    let sig = k.sign(b"x");
    k.public_key().verify(b"x", &sig).expect("usable");
    let k = SigningKey::from_pem(SIGSTORE_RS_PASSWORD_123.as_bytes(), Some(b"123"))
        .expect("password 123");
    k.public_key().verify(b"y", &k.sign(b"y")).expect("usable");
    assert_err_contains(
        SigningKey::from_pem(SIGSTORE_RS_PASSWORD_123.as_bytes(), Some(b"124")),
        "wrong password",
    );
}

#[test]
fn encrypted_key_round_trip() {
    let k = SigningKey::from_seed(b"enc");
    let pem = k
        .to_encrypted_pem(b"s3cret", &[7; 32], &[9; 24])
        .expect("encrypt");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let block = crate::pem::parse_one(pem.as_bytes()).expect("pem");
    let doc: serde_json::Value = serde_json::from_slice(&block.der).expect("json");
    assert_eq!(doc["kdf"]["name"], "scrypt");
    assert_eq!(doc["kdf"]["params"]["N"], 32768);
    assert_eq!(doc["kdf"]["params"]["r"], 8);
    assert_eq!(doc["kdf"]["params"]["p"], 1);
    assert_eq!(doc["cipher"]["name"], "nacl/secretbox");
    let k2 = SigningKey::from_pem(pem.as_bytes(), Some(b"s3cret")).expect("decrypt");
    assert_eq!(k2.public_key(), k.public_key());
    assert_err_contains(SigningKey::from_pem(pem.as_bytes(), None), "wrong password");
    // Tampered ciphertext does not open.
    let mut doc2 = doc.clone();
    let ct = doc2["ciphertext"].as_str().expect("ct").to_string();
    let mut raw = crate::unb64(&ct).expect("b64");
    raw[20] ^= 1;
    doc2["ciphertext"] = serde_json::Value::String(crate::b64(&raw));
    let pem2 = crate::pem::encode("ENCRYPTED COSIGN PRIVATE KEY", doc2.to_string().as_bytes());
    assert_err_contains(
        SigningKey::from_pem(pem2.as_bytes(), Some(b"s3cret")),
        "wrong password or corrupted",
    );
}

// ---------------------------------------------------------------- payload

#[test]
fn payload_bytes_exact() {
    let p = simple_signing_payload("127.0.0.1:5000/signed/app", "sha256:abc");
    assert_eq!(
        String::from_utf8(p.clone()).expect("utf8"),
        r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/signed/app"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#
    );
    let parsed = parse_payload(&p).expect("parse");
    assert_eq!(parsed.docker_reference, "127.0.0.1:5000/signed/app");
    assert_eq!(parsed.manifest_digest, "sha256:abc");
}

#[test]
fn payload_parsing() {
    let with_optional = br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:1"},"type":"cosign container image signature"},"optional":{"creator":"x","n":1}}"#;
    assert_eq!(
        parse_payload(with_optional).expect("ok").manifest_digest,
        "sha256:1"
    );
    assert_err_contains(
        parse_payload(br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"other"}}"#),
        "critical.type is \"other\"",
    );
    assert_err_contains(
        parse_payload(br#"{"critical":{"image":{"docker-manifest-digest":"d"},"type":"cosign container image signature"}}"#),
        "missing critical.identity.docker-reference",
    );
    assert_err_contains(parse_payload(b"nope"), "invalid payload: not JSON");
}

// ---------------------------------------------------------------- policy

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cosign.pub"),
        SigningKey::from_seed(b"policy").public_key().to_pem(),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("trusted_root.json"),
        Sigstore::new(b"policy").trusted_root_json(),
    )
    .expect("write");
    dir
}

#[test]
fn policy_parses() {
    let dir = policy_dir();
    let inline = SigningKey::from_seed(b"inline").public_key().to_pem();
    let yaml = format!(
        r#"
images:
  - glob: "127.0.0.1:*/signed/**"
    key: cosign.pub
  - glob: "ghcr.io/siderolabs/*"
    keyless:
      identityRegexp: '@siderolabs\.com$'
      issuer: https://accounts.google.com
      trustedRoot: trusted_root.json
  - glob: "docker.io/library/alpine"
    keyless:
      identity: x@y
      issuerRegexp: '^https://'
      trustedRoot: trusted_root.json
  - glob: "inline/**"
    key: |
{}
"#,
        inline
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let p = Policy::from_yaml(&yaml, dir.path()).expect("parse");
    assert_eq!(p.rules.len(), 4);
    let r = p.find("127.0.0.1:5000/signed/a/b").expect("match");
    assert!(matches!(&r.verifier, Verifier::Key { path, .. } if path == "cosign.pub"));
    let r = p.find("ghcr.io/siderolabs/kernel").expect("match");
    match &r.verifier {
        Verifier::Keyless {
            identity, issuer, ..
        } => {
            assert!(identity.matches("bot@siderolabs.com"));
            assert!(!identity.matches("bot@siderolabs.com.evil"));
            assert!(issuer.matches("https://accounts.google.com"));
        }
        Verifier::Key { .. } => panic!("expected keyless"),
    }
    assert!(p.find("ghcr.io/siderolabs/a/b").is_none());
    assert!(p.find("docker.io/library/alpine").is_some());
    let r = p.find("inline/x").expect("match");
    assert!(matches!(&r.verifier, Verifier::Key { path, .. } if path == "<inline>"));
    assert!(p.find("quay.io/x").is_none());
    // Empty policies are valid and match nothing.
    assert!(
        Policy::from_yaml("", dir.path())
            .expect("empty")
            .find("a")
            .is_none()
    );
}

#[test]
fn policy_is_strict() {
    let dir = policy_dir();
    let d = dir.path();
    assert_err_contains(Policy::from_yaml("imagez: []", d), "imagez: unknown key");
    assert_err_contains(
        Policy::from_yaml("images:\n  - glob: a\n    key: cosign.pub\n    kye: x\n", d),
        "images[0].kye: unknown key",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    key: cosign.pub\n  - glob: b\n    keyless:\n      identity: a\n      issuer: b\n      trustedRoot: trusted_root.json\n      issuers: c\n",
            d,
        ),
        "images[1].keyless.issuers: unknown key",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    key: cosign.pub\n    keyless:\n      identity: a\n      issuer: b\n      trustedRoot: trusted_root.json\n",
            d,
        ),
        "images[0]: exactly one of key and keyless",
    );
    assert_err_contains(
        Policy::from_yaml("images:\n  - glob: a\n", d),
        "images[0]: one of key or keyless is required",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    keyless:\n      identity: a\n      identityRegexp: b\n      issuer: b\n      trustedRoot: trusted_root.json\n",
            d,
        ),
        "images[0].keyless: exactly one of identity and identityRegexp",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    keyless:\n      identity: a\n      trustedRoot: trusted_root.json\n",
            d,
        ),
        "images[0].keyless: exactly one of issuer and issuerRegexp",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    keyless:\n      identity: a\n      issuer: b\n",
            d,
        ),
        "images[0].keyless.trustedRoot: required",
    );
    assert_err_contains(
        Policy::from_yaml(
            "images:\n  - glob: a\n    keyless:\n      identityRegexp: '('\n      issuer: b\n      trustedRoot: trusted_root.json\n",
            d,
        ),
        "images[0].keyless.identityRegexp",
    );
    assert_err_contains(
        Policy::from_yaml("images:\n  - key: cosign.pub\n", d),
        "images[0].glob: required",
    );
    assert_err_contains(
        Policy::from_yaml("images:\n  - glob: a\n    key: missing.pub\n", d),
        "images[0].key",
    );
    assert_err_contains(
        Policy::from_yaml("images:\n  - glob: a\n    key: trusted_root.json\n", d),
        "images[0].key: trusted_root.json: invalid PEM",
    );
}

#[test]
fn glob_table() {
    let table: &[(&str, &str, bool)] = &[
        ("docker.io/library/alpine", "docker.io/library/alpine", true),
        (
            "docker.io/library/alpine",
            "docker.io/library/alpinex",
            false,
        ),
        ("docker.io/library/*", "docker.io/library/alpine", true),
        ("docker.io/library/*", "docker.io/library/a/b", false),
        ("docker.io/**", "docker.io/library/a/b", true),
        ("docker.io/**", "docker.io/", true),
        ("docker.io/**", "docker.ioX/a", false),
        ("127.0.0.1:*/signed/**", "127.0.0.1:5000/signed/app", true),
        (
            "127.0.0.1:*/signed/**",
            "127.0.0.1:5000/unsigned/app",
            false,
        ),
        ("127.0.0.1:*/signed/**", "127.0.0.1:50/00/signed/app", false),
        ("ghcr.io/?oo", "ghcr.io/foo", true),
        ("ghcr.io/?oo", "ghcr.io//oo", false),
        ("ghcr.io/?oo", "ghcr.io/fooo", false),
        ("*", "", true),
        ("*", "a/b", false),
        ("**", "a/b", true),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY/c", false),
        ("a.b", "aXb", false),
        ("**/x", "a/b/x", true),
        ("**/x", "x", false),
    ];
    for (glob, s, want) in table {
        assert_eq!(glob_match(glob, s), *want, "glob {glob:?} on {s:?}");
    }
}

// ---------------------------------------------------------------- key mode

fn key_layer(key: &SigningKey, reference: &str, digest: &str) -> SignatureLayer {
    let payload = simple_signing_payload(reference, digest);
    SignatureLayer {
        annotations: sign_payload(key, &payload),
        payload,
    }
}

#[test]
fn key_mode_verifies() {
    let k = SigningKey::from_seed(b"k");
    let v = key_verifier(&k);
    let ok = verify_image(&v, REPO, DIGEST, &[key_layer(&k, REPO, DIGEST)]).expect("verifies");
    assert_eq!(ok.description, "signed by key cosign.pub");
    // A tagged reference in the payload still names the repository.
    verify_image(
        &v,
        REPO,
        DIGEST,
        &[key_layer(&k, &format!("{REPO}:v1"), DIGEST)],
    )
    .expect("tag stripped");
    // cosign writes index.docker.io/library/alpine for alpine.
    verify_image(
        &v,
        "docker.io/library/alpine",
        DIGEST,
        &[key_layer(&k, "index.docker.io/library/alpine", DIGEST)],
    )
    .expect("docker hub normalized");
    // One good layer among bad ones is enough.
    let other = SigningKey::from_seed(b"other");
    verify_image(
        &v,
        REPO,
        DIGEST,
        &[key_layer(&other, REPO, DIGEST), key_layer(&k, REPO, DIGEST)],
    )
    .expect("second layer verifies");
}

#[test]
fn key_mode_refusals() {
    let k = SigningKey::from_seed(b"k");
    let v = key_verifier(&k);
    let other = SigningKey::from_seed(b"other");
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, &[key_layer(&other, REPO, DIGEST)]),
        "signature by key cosign.pub does not verify",
    );
    assert_err_contains(verify_image(&v, REPO, DIGEST, &[]), "no signatures found");
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, &[key_layer(&k, REPO, "sha256:0000")]),
        "payload digest sha256:0000 does not match image digest",
    );
    assert_err_contains(
        verify_image(
            &v,
            REPO,
            DIGEST,
            &[key_layer(&k, "127.0.0.1:5000/other", DIGEST)],
        ),
        "payload docker-reference 127.0.0.1:5000/other does not match repository",
    );
    let mut tampered = key_layer(&k, REPO, DIGEST);
    tampered.payload = simple_signing_payload(REPO, "sha256:1111");
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, &[tampered]),
        "signature by key cosign.pub does not verify",
    );
    let mut unsigned = key_layer(&k, REPO, DIGEST);
    unsigned.annotations.clear();
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, &[unsigned]),
        "missing annotation dev.cosignproject.cosign/signature",
    );
    // Each layer's reason is listed.
    let e = err_text(verify_image(
        &v,
        REPO,
        DIGEST,
        &[
            key_layer(&other, REPO, DIGEST),
            key_layer(&k, REPO, "sha256:2"),
        ],
    ));
    assert!(
        e.contains("layer 0: signature by key cosign.pub does not verify"),
        "{e}"
    );
    assert!(e.contains("layer 1: payload digest sha256:2"), "{e}");
}

#[test]
fn repository_normalization() {
    use crate::verify::{normalize_repository, strip_tag};
    assert_eq!(strip_tag("ghcr.io/a/b:v1"), "ghcr.io/a/b");
    assert_eq!(strip_tag("127.0.0.1:5000/a@sha256:00"), "127.0.0.1:5000/a");
    assert_eq!(
        strip_tag("127.0.0.1:5000/a:v1@sha256:00"),
        "127.0.0.1:5000/a"
    );
    assert_eq!(strip_tag("127.0.0.1:5000/a"), "127.0.0.1:5000/a");
    assert_eq!(normalize_repository("alpine"), "docker.io/library/alpine");
    assert_eq!(normalize_repository("alpine:3"), "docker.io/library/alpine");
    assert_eq!(normalize_repository("user/app"), "docker.io/user/app");
    assert_eq!(
        normalize_repository("index.docker.io/library/alpine"),
        "docker.io/library/alpine"
    );
    assert_eq!(normalize_repository("localhost/x"), "localhost/x");
    assert_eq!(normalize_repository("ghcr.io/a/b"), "ghcr.io/a/b");
}

// ---------------------------------------------------------------- keyless

fn keyless_verifier(s: &Sigstore, identity: Identity, issuer: Issuer) -> Verifier {
    Verifier::Keyless {
        identity,
        issuer,
        trust_root: TrustRoot::from_json(s.trusted_root_json().as_bytes()).expect("trust root"),
    }
}

fn good_verifier(s: &Sigstore) -> Verifier {
    keyless_verifier(s, Identity::Exact(EMAIL.into()), Issuer::Exact(OIDC.into()))
}

fn keyless_layer(s: &Sigstore, digest: &str) -> SignatureLayer {
    let payload = simple_signing_payload(REPO, digest);
    SignatureLayer {
        annotations: s.keyless_sign(&payload, EMAIL, OIDC, T0),
        payload,
    }
}

fn bundle_of(layer: &SignatureLayer) -> RekorBundle {
    serde_json::from_str(&layer.annotations[BUNDLE_ANNOTATION]).expect("bundle")
}

fn body_of(layer: &SignatureLayer) -> serde_json::Value {
    let b = bundle_of(layer);
    serde_json::from_slice(&crate::unb64(&b.payload.body).expect("b64")).expect("json")
}

#[test]
fn keyless_good_signature_verifies() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    let ok = verify_image(
        &good_verifier(&s),
        REPO,
        DIGEST,
        std::slice::from_ref(&layer),
    )
    .expect("verifies");
    assert_eq!(
        ok.description,
        "signed by alice@example.com (issuer https://accounts.google.com), tlog index 0"
    );
    let v = keyless_verifier(
        &s,
        Identity::Regexp(regex::Regex::new(r"@example\.com$").expect("re")),
        Issuer::Regexp(regex::Regex::new("accounts").expect("re")),
    );
    verify_image(&v, REPO, DIGEST, std::slice::from_ref(&layer)).expect("regexps match");
    // The chain annotation is optional when the leaf's issuer is itself a trust-root CA.
    let mut no_chain = layer.clone();
    no_chain.annotations.remove(CHAIN_ANNOTATION);
    verify_image(&good_verifier(&s), REPO, DIGEST, &[no_chain]).expect("no chain needed");
    // The body is the hashedrekord cosign logs.
    let body = body_of(&layer);
    assert_eq!(body["kind"], "hashedrekord");
    assert_eq!(body["apiVersion"], "0.0.1");
    assert_eq!(
        body["spec"]["data"]["hash"]["value"],
        hex::encode(crate::sha256(&layer.payload))
    );
    // The SET covers the canonical JSON with sorted keys.
    let b = bundle_of(&layer);
    let canon = String::from_utf8(b.payload.canonical_json()).expect("utf8");
    assert!(canon.starts_with("{\"body\":\""), "{canon}");
    assert!(
        canon.ends_with(&format!(
            "\",\"integratedTime\":{T0},\"logID\":\"{}\",\"logIndex\":0}}",
            b.payload.log_id
        )),
        "{canon}"
    );
}

#[test]
fn keyless_wrong_identity_refused() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    let v = keyless_verifier(
        &s,
        Identity::Exact("bob@example.com".into()),
        Issuer::Exact(OIDC.into()),
    );
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, std::slice::from_ref(&layer)),
        "certificate identity alice@example.com does not match bob@example.com",
    );
    let payload = simple_signing_payload(REPO, DIGEST);
    let evil = SignatureLayer {
        annotations: s.keyless_sign(&payload, "alice@evil.com", OIDC, T0),
        payload,
    };
    let v = keyless_verifier(
        &s,
        Identity::Regexp(regex::Regex::new(r"@example\.com$").expect("re")),
        Issuer::Exact(OIDC.into()),
    );
    assert_err_contains(
        verify_image(&v, REPO, DIGEST, &[evil]),
        r"certificate identity alice@evil.com does not match regexp '@example\.com$'",
    );
}

#[test]
fn keyless_wrong_issuer_refused() {
    let s = Sigstore::new(b"sigstore");
    let payload = simple_signing_payload(REPO, DIGEST);
    let layer = SignatureLayer {
        annotations: s.keyless_sign(&payload, EMAIL, "https://x", T0),
        payload,
    };
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[layer]),
        "issuer https://x does not match https://accounts.google.com",
    );
}

#[test]
fn keyless_certificate_from_another_ca_refused() {
    let trusted = Sigstore::new(b"sigstore");
    let rogue = Sigstore::new(b"rogue");
    let layer = keyless_layer(&rogue, DIGEST);
    assert_err_contains(
        verify_image(
            &good_verifier(&trusted),
            REPO,
            DIGEST,
            std::slice::from_ref(&layer),
        ),
        "certificate chain does not lead to the trusted root",
    );
    // Without the chain annotation too.
    let mut no_chain = layer;
    no_chain.annotations.remove(CHAIN_ANNOTATION);
    assert_err_contains(
        verify_image(&good_verifier(&trusted), REPO, DIGEST, &[no_chain]),
        "certificate chain does not lead to the trusted root",
    );
}

#[test]
fn keyless_tampered_payload_refused() {
    let s = Sigstore::new(b"sigstore");
    // Validly signed, but for another image.
    let other = keyless_layer(&s, "sha256:ffff");
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[other]),
        "payload digest sha256:ffff does not match image digest",
    );
    // Payload bytes changed after signing.
    let mut layer = keyless_layer(&s, DIGEST);
    layer.payload = simple_signing_payload(REPO, "sha256:eeee");
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, "sha256:eeee", &[layer]),
        "signature by certificate alice@example.com does not verify",
    );
}

fn with_bundle(layer: &SignatureLayer, bundle: String) -> SignatureLayer {
    let mut l = layer.clone();
    l.annotations.insert(BUNDLE_ANNOTATION.into(), bundle);
    l
}

fn body_text(layer: &SignatureLayer) -> String {
    String::from_utf8(crate::unb64(&bundle_of(layer).payload.body).expect("b64")).expect("utf8")
}

#[test]
fn keyless_set_by_unknown_key_refused() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    let unknown = SigningKey::from_seed(b"unknown log");
    // An entry of an unknown log.
    let forged = with_bundle(&layer, rekor_bundle(&unknown, &body_text(&layer), T0, 0));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "transparency log entry: SET does not verify: log ID",
    );
    // The trusted log's ID, but a SET made by another key.
    let mut b = bundle_of(&layer);
    b.signed_entry_timestamp = crate::b64(&unknown.sign(&b.payload.canonical_json()));
    let forged = with_bundle(&layer, serde_json::to_string(&b).expect("json"));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "transparency log entry: SET does not verify with the key of log",
    );
    // A SET over different entry fields (log index changed after signing).
    let mut b = bundle_of(&layer);
    b.payload.log_index += 1;
    let forged = with_bundle(&layer, serde_json::to_string(&b).expect("json"));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "SET does not verify",
    );
    // No bundle at all.
    let mut l = layer;
    l.annotations.remove(BUNDLE_ANNOTATION);
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[l]),
        "missing annotation dev.sigstore.cosign/bundle",
    );
}

#[test]
fn keyless_body_mismatch_refused() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    // Hash of another payload, validly logged.
    let mut body = body_of(&layer);
    body["spec"]["data"]["hash"]["value"] =
        serde_json::Value::String(hex::encode(crate::sha256(b"something else")));
    let forged = with_bundle(&layer, rekor_bundle(s.log_key(), &body.to_string(), T0, 3));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "transparency log entry: body does not match signature: logged hash",
    );
    // Another signature.
    let mut body = body_of(&layer);
    body["spec"]["signature"]["content"] =
        serde_json::Value::String(crate::b64(&SigningKey::from_seed(b"z").sign(b"z")));
    let forged = with_bundle(&layer, rekor_bundle(s.log_key(), &body.to_string(), T0, 3));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "body does not match signature: logged signature differs",
    );
    // Another certificate.
    let (_, other_pem) = s.issue_leaf("mallory@example.com", OIDC, T0);
    let sig = crate::unb64(&layer.annotations[SIGNATURE_ANNOTATION]).expect("b64");
    let body = hashedrekord_body(&layer.payload, &sig, &other_pem);
    let forged = with_bundle(&layer, rekor_bundle(s.log_key(), &body, T0, 3));
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
        "body does not match signature: logged certificate differs",
    );
}

#[test]
fn keyless_integrated_time_outside_validity_refused() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    for t in [T0 - 61, T0 + 601] {
        let forged = with_bundle(&layer, rekor_bundle(s.log_key(), &body_text(&layer), t, 5));
        assert_err_contains(
            verify_image(&good_verifier(&s), REPO, DIGEST, &[forged]),
            &format!(
                "transparency log entry: integratedTime {t} is outside the certificate validity"
            ),
        );
    }
    for t in [T0 - 60, T0 + 600] {
        let ok = with_bundle(&layer, rekor_bundle(s.log_key(), &body_text(&layer), t, 5));
        verify_image(&good_verifier(&s), REPO, DIGEST, &[ok]).expect("edges are valid");
    }
}

#[test]
fn keyless_key_mode_mixups() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    // A keyless layer checked against a key fails on the key.
    let k = SigningKey::from_seed(b"k");
    assert_err_contains(
        verify_image(&key_verifier(&k), REPO, DIGEST, &[layer]),
        "signature by key cosign.pub does not verify",
    );
    // A key layer checked keylessly lacks the certificate.
    assert_err_contains(
        verify_image(
            &good_verifier(&s),
            REPO,
            DIGEST,
            &[key_layer(&k, REPO, DIGEST)],
        ),
        "missing annotation dev.sigstore.cosign/certificate",
    );
}

#[test]
fn trust_root_parsing() {
    let s = Sigstore::new(b"sigstore");
    let tr = TrustRoot::from_json(s.trusted_root_json().as_bytes()).expect("parse");
    assert_eq!(tr.ca_count(), 1);
    assert_eq!(tr.tlog_count(), 2, "Rekor v1 (P-256) and v2 (Ed25519)");
    assert_eq!(tr.ctlog_count(), 1);
    assert_eq!(tr.tsa_count(), 1);
    assert_err_contains(TrustRoot::from_json(b"{}"), "no certificate authority");
    assert_err_contains(TrustRoot::from_json(b"[]"), "invalid trusted root");
    assert_err_contains(
        TrustRoot::from_json(
            br#"{"certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"AAAA"}]}}]}"#,
        ),
        "certificateAuthorities[0].certChain.certificates[0]",
    );
}

#[test]
fn rfc3339() {
    use crate::trust::parse_rfc3339;
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
    assert_eq!(parse_rfc3339("2021-10-07T13:56:59.000Z"), Ok(1_633_615_019));
    assert_eq!(
        parse_rfc3339("2021-10-07T15:56:59+02:00"),
        Ok(1_633_615_019)
    );
    assert!(parse_rfc3339("2021-10-07").is_err());
    assert!(parse_rfc3339("2021-13-07T00:00:00Z").is_err());
}

// ---------------------------------------------------------------- blob bundles

#[test]
fn blob_bundle_sign_verify() {
    let k = SigningKey::from_seed(b"blob");
    let digest = crate::sha256(b"file contents");
    let json = sign_blob_bundle(&k, &digest);
    assert_eq!(json, sign_blob_bundle(&k, &digest), "deterministic");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        v["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        v["verificationMaterial"]["publicKey"]["hint"],
        crate::b64(&crate::sha256(&k.public_key().to_spki_der()))
    );
    assert_eq!(
        v["messageSignature"]["messageDigest"]["algorithm"],
        "SHA2_256"
    );
    // The signature is an ordinary ECDSA-SHA256 signature over the file bytes.
    let sig = crate::unb64(v["messageSignature"]["signature"].as_str().expect("sig")).expect("b64");
    k.public_key()
        .verify(b"file contents", &sig)
        .expect("over the file");

    let ok = verify_blob_bundle(&key_verifier(&k), json.as_bytes(), &digest).expect("verifies");
    assert_eq!(ok.description, "signed by key cosign.pub");
    // Another file.
    assert_err_contains(
        verify_blob_bundle(&key_verifier(&k), json.as_bytes(), &crate::sha256(b"other")),
        "does not match the file's sha256",
    );
    // Digest in the bundle tampered to match another file: the signature fails.
    let mut t = v.clone();
    let other = crate::sha256(b"other");
    t["messageSignature"]["messageDigest"]["digest"] =
        serde_json::Value::String(crate::b64(&other));
    assert_err_contains(
        verify_blob_bundle(&key_verifier(&k), t.to_string().as_bytes(), &other),
        "signature by key cosign.pub",
    );
    // Another key.
    assert_err_contains(
        verify_blob_bundle(
            &key_verifier(&SigningKey::from_seed(b"x")),
            json.as_bytes(),
            &digest,
        ),
        "signature by key cosign.pub (the bundle names key hint",
    );
    // A key-signed bundle under a keyless verifier has no identity to check.
    let s = Sigstore::new(b"sigstore");
    assert_err_contains(
        verify_blob_bundle(&good_verifier(&s), json.as_bytes(), &digest),
        "a key-signed bundle has no certificate to check a keyless rule's identity against",
    );
    let mut kl = v.clone();
    kl["verificationMaterial"] = serde_json::json!({"certificate": {"rawBytes": "AAAA"}});
    assert_err_contains(
        verify_blob_bundle(&key_verifier(&k), kl.to_string().as_bytes(), &digest),
        "unsupported: a certificate-signed (keyless) bundle under a key",
    );
    let mut mt = v;
    mt["mediaType"] = serde_json::Value::String("application/json".into());
    assert_err_contains(
        verify_blob_bundle(&key_verifier(&k), mt.to_string().as_bytes(), &digest),
        "unsupported mediaType",
    );
}

#[test]
fn sign_payload_annotations() {
    let k = SigningKey::from_seed(b"k");
    let m: BTreeMap<String, String> = sign_payload(&k, b"p");
    assert_eq!(m.len(), 1);
    let sig = crate::unb64(&m[SIGNATURE_ANNOTATION]).expect("b64");
    k.public_key().verify(b"p", &sig).expect("verifies");
}

// ---------------------------------------------------------------- real-world data

fn production_trust_root() -> TrustRoot {
    // An excerpt of Sigstore's public-good trusted_root.json (two Fulcio CAs, the Rekor v1
    // ECDSA key, the Rekor v2 Ed25519 key, one CT log).
    TrustRoot::from_json(include_bytes!(
        "../testdata/sigstore-production-trusted_root.json"
    ))
    .expect("production trusted root")
}

#[test]
fn production_trust_root_parses_and_chains() {
    let tr = production_trust_root();
    assert_eq!(tr.ca_count(), 2);
    // The Rekor v1 ECDSA key and the Rekor v2 Ed25519 key.
    assert_eq!(tr.tlog_count(), 2);
    assert_eq!(
        tr.tlogs[0].log_id,
        "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
    );
    assert_eq!(tr.tlogs[0].valid_from, Some(1_610_452_407));
    // Real Fulcio: P-384 intermediate signed by the P-384 root with ECDSA-SHA384.
    let chain = &tr.cas[1].chain;
    chain[0]
        .verify_issued_by(&chain[1])
        .expect("intermediate by root");
    chain[1]
        .verify_issued_by(&chain[1])
        .expect("root self-signed");
    assert!(chain[0].verify_issued_by(&tr.cas[0].chain[0]).is_err());
    assert!(chain[0].is_ca() && chain[1].is_ca());
}

struct RealLayer {
    repository: String,
    digest: String,
    layer: SignatureLayer,
}

fn real_keyless_layer() -> RealLayer {
    let v: serde_json::Value =
        serde_json::from_slice(include_bytes!("../testdata/real-keyless-layer.json"))
            .expect("fixture");
    let s = |k: &str| v[k].as_str().expect("string").to_string();
    let annotations = v["annotations"]
        .as_object()
        .expect("annotations")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect();
    RealLayer {
        repository: s("repository"),
        digest: s("manifest_digest"),
        layer: SignatureLayer {
            payload: s("payload").into_bytes(),
            annotations,
        },
    }
}

const GITHUB_OIDC: &str = "https://token.actions.githubusercontent.com";

#[test]
fn real_cosign_keyless_signature_verifies() {
    let real = real_keyless_layer();
    // Our payload writer produces exactly what cosign signed.
    assert_eq!(
        simple_signing_payload("index.docker.io/salrashid123/server_image", &real.digest),
        real.layer.payload
    );
    let v = Verifier::Keyless {
        identity: Identity::Regexp(
            regex::Regex::new(r"^https://github\.com/salrashid123/go-bazel-github-workflow/")
                .expect("re"),
        ),
        issuer: Issuer::Exact(GITHUB_OIDC.into()),
        trust_root: production_trust_root(),
    };
    let ok = verify_image(
        &v,
        &real.repository,
        &real.digest,
        std::slice::from_ref(&real.layer),
    )
    .expect("real signature verifies");
    assert_eq!(
        ok.description,
        "signed by https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.14 (issuer https://token.actions.githubusercontent.com), tlog index 924321775"
    );
    // Tampering with any SET-covered field breaks it.
    let mut b = bundle_of(&real.layer);
    b.payload.integrated_time += 1;
    let forged = with_bundle(&real.layer, serde_json::to_string(&b).expect("json"));
    assert_err_contains(
        verify_image(&v, &real.repository, &real.digest, &[forged]),
        "SET does not verify",
    );
    // Wrong identity / issuer.
    let v2 = Verifier::Keyless {
        identity: Identity::Exact("someone@example.com".into()),
        issuer: Issuer::Exact(GITHUB_OIDC.into()),
        trust_root: production_trust_root(),
    };
    assert_err_contains(
        verify_image(
            &v2,
            &real.repository,
            &real.digest,
            std::slice::from_ref(&real.layer),
        ),
        "certificate identity https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.14 does not match someone@example.com",
    );
    // Our stand-in's trust root does not accept it.
    assert_err_contains(
        verify_image(
            &good_verifier(&Sigstore::new(b"sigstore")),
            &real.repository,
            &real.digest,
            std::slice::from_ref(&real.layer),
        ),
        "certificate chain does not lead to the trusted root",
    );
}

/// A cosign v3 image-signature bundle as cosign lays it out: DSSE over an in-toto statement.
fn v3_bundle(k: &SigningKey, statement: &serde_json::Value, sigs: usize) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).unwrap();
    let pae = crate::bundle::dsse_pae("application/vnd.in-toto+json", &payload);
    let sig = b64(&k.sign(&pae));
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": b64(&k.public_key().key_id())}},
        "dsseEnvelope": {
            "payload": b64(&payload),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": vec![serde_json::json!({"sig": sig, "keyid": ""}); sigs],
        },
    }))
    .unwrap()
}

fn statement(digest: &str, predicate_type: &str) -> serde_json::Value {
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": {},
    })
}

#[test]
fn cosign_v3_bundles_verify_under_a_key() {
    let k = SigningKey::from_seed(b"k");
    let v = key_verifier(&k);
    let good = v3_bundle(&k, &statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE), 1);
    let ok = verify_image_bundle(&v, DIGEST, &good).expect("verifies");
    assert_eq!(
        ok.description,
        "signed by key cosign.pub (cosign v3 bundle)"
    );
    // through the combined check, with no legacy layers
    verify_image_with_bundles(&v, REPO, DIGEST, &[], std::slice::from_ref(&good))
        .expect("combined");
    assert!(matches!(
        verify_image_with_bundles(&v, REPO, DIGEST, &[], &[]),
        Err(Error::NoSignatures)
    ));
    // another image, another predicate, another key, a changed payload, two signatures
    let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let e = err_text(verify_image_bundle(&v, other, &good));
    assert!(e.contains("subjects do not include"), "{e}");
    let att = v3_bundle(&k, &statement(DIGEST, "https://slsa.dev/provenance/v1"), 1);
    let e = err_text(verify_image_bundle(&v, DIGEST, &att));
    assert!(e.contains("is not a signature"), "{e}");
    let mallory = SigningKey::from_seed(b"mallory");
    let forged = v3_bundle(
        &mallory,
        &statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE),
        1,
    );
    let e = err_text(verify_image_bundle(&v, DIGEST, &forged));
    assert!(e.contains("key cosign.pub"), "{e}");
    let mut tampered: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let swapped = serde_json::to_vec(&statement(other, bundle::COSIGN_SIGN_PREDICATE)).unwrap();
    tampered["dsseEnvelope"]["payload"] = b64(&swapped).into();
    let e = err_text(verify_image_bundle(
        &v,
        other,
        &serde_json::to_vec(&tampered).unwrap(),
    ));
    assert!(e.contains("key cosign.pub"), "{e}");
    let two = v3_bundle(&k, &statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE), 2);
    let e = err_text(verify_image_bundle(&v, DIGEST, &two));
    assert!(e.contains("exactly one signature"), "{e}");
    // older bundle versions are not image signatures
    let mut old: serde_json::Value = serde_json::from_slice(&good).unwrap();
    old["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    let e = err_text(verify_image_bundle(
        &v,
        DIGEST,
        &serde_json::to_vec(&old).unwrap(),
    ));
    assert!(e.contains("must be v0.3"), "{e}");
}

/// ECDSA P-384 (SHA-384) and Ed25519 public keys from openssl verify openssl's signatures,
/// directly and inside a cosign v3 image bundle; their SPKI DER round-trips byte for byte.
#[test]
fn p384_and_ed25519_keys_verify_openssl_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = openssl(args, d);
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let statement = serde_json::to_vec(&statement(DIGEST, bundle::COSIGN_SIGN_PREDICATE)).unwrap();
    let pae = crate::bundle::dsse_pae("application/vnd.in-toto+json", &statement);
    std::fs::write(d.join("msg"), &pae).expect("write");
    for (name, generate, sign) in [
        (
            "ECDSA P-384",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                "k.pem",
            ][..],
            &["dgst", "-sha384", "-sign", "k.pem", "-out", "sig", "msg"][..],
        ),
        (
            "Ed25519",
            &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"][..],
            &[
                "pkeyutl", "-sign", "-rawin", "-inkey", "k.pem", "-in", "msg", "-out", "sig",
            ][..],
        ),
    ] {
        run(generate);
        run(&["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"]);
        run(&[
            "pkey", "-in", "k.pem", "-pubout", "-outform", "DER", "-out", "pub.der",
        ]);
        run(sign);
        let public = PublicKey::from_pem(&std::fs::read(d.join("pub.pem")).unwrap()).unwrap();
        assert_eq!(public.algorithm(), name);
        assert_eq!(
            public.to_spki_der(),
            std::fs::read(d.join("pub.der")).unwrap()
        );
        let sig = std::fs::read(d.join("sig")).unwrap();
        public.verify(&pae, &sig).expect(name);
        assert!(matches!(
            public.verify(b"other", &sig),
            Err(Error::BadSignature)
        ));
        let bundle = serde_json::to_vec(&serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": b64(&public.key_id())}},
            "dsseEnvelope": {
                "payload": b64(&statement),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": b64(&sig)}],
            },
        }))
        .unwrap();
        let v = Verifier::Key {
            path: "k.pub".into(),
            key: public.clone(),
        };
        verify_image_bundle(&v, DIGEST, &bundle).expect(name);
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        assert!(verify_image_bundle(&v, other, &bundle).is_err());
    }
}

/// A CA the trust root has retired (its `validFor` ended before the signature was logged),
/// or not yet admitted, vouches for nothing; inside its window it does.
#[test]
fn keyless_ca_outside_its_trust_root_window_refused() {
    let s = Sigstore::new(b"sigstore");
    let layer = keyless_layer(&s, DIGEST);
    // T0 = 2025-06-15T15:06:40Z
    for (window, ok) in [
        (
            serde_json::json!({"start": "2000-01-01T00:00:00Z", "end": "2025-06-15T14:00:00Z"}),
            false,
        ),
        (serde_json::json!({"start": "2025-06-16T00:00:00Z"}), false),
        (
            serde_json::json!({"start": "2025-06-15T15:00:00Z", "end": "2025-06-15T16:00:00Z"}),
            true,
        ),
    ] {
        let mut root: serde_json::Value = serde_json::from_str(&s.trusted_root_json()).unwrap();
        root["certificateAuthorities"][0]["validFor"] = window.clone();
        let v = alice_under(TrustRoot::from_json(root.to_string().as_bytes()).unwrap());
        let r = verify_image(&v, REPO, DIGEST, std::slice::from_ref(&layer));
        if ok {
            r.expect("inside the window");
        } else {
            assert_err_contains(r, "outside its trust-root validity window");
        }
    }
    // a malformed window is a trust-root error naming it
    let mut root: serde_json::Value = serde_json::from_str(&s.trusted_root_json()).unwrap();
    root["certificateAuthorities"][0]["validFor"] = serde_json::json!({"end": "yesterday"});
    assert_err_contains(
        TrustRoot::from_json(root.to_string().as_bytes()),
        "certificateAuthorities[0].validFor.end",
    );
}

// ---- keyless Sigstore bundles (Rekor v1 / v2, SCTs, RFC 3161, trust-root windows) ----

const FILE: &[u8] = b"the file that was signed";

fn keyless_blob(s: &Sigstore, opts: crate::testing::BundleOptions) -> serde_json::Value {
    let json = s.keyless_bundle(crate::testing::Signed::File(FILE), EMAIL, OIDC, T0, opts);
    serde_json::from_str(&json).expect("bundle JSON")
}

fn verify_keyless_blob(s: &Sigstore, bundle: &serde_json::Value) -> Result<Verified, Error> {
    verify_blob_bundle(
        &good_verifier(s),
        bundle.to_string().as_bytes(),
        &crate::sha256(FILE),
    )
}

fn v1() -> crate::testing::BundleOptions {
    crate::testing::BundleOptions::default()
}

fn v2() -> crate::testing::BundleOptions {
    crate::testing::BundleOptions {
        log: crate::testing::Log::RekorV2,
        ..Default::default()
    }
}

#[test]
fn keyless_blob_bundles_verify_with_rekor_v1_and_v2() {
    let s = Sigstore::new(b"sigstore");
    let b = keyless_blob(&s, v1());
    let v = verify_keyless_blob(&s, &b).expect("Rekor v1 bundle verifies");
    assert!(v.description.contains(EMAIL), "{}", v.description);
    assert!(
        v.description.contains("rekor.sigstore.test index 100"),
        "{}",
        v.description
    );
    // the SET alone, or the TSA alone, is enough of a verified time
    let mut no_tsa = keyless_blob(
        &s,
        crate::testing::BundleOptions {
            timestamp: false,
            ..v1()
        },
    );
    verify_keyless_blob(&s, &no_tsa).expect("SET time only");
    no_tsa["verificationMaterial"]["tlogEntries"][0]
        .as_object_mut()
        .unwrap()
        .remove("inclusionPromise");
    assert_err_contains(
        verify_keyless_blob(&s, &no_tsa),
        "no verified signing time: no entry has a signed entry timestamp and the bundle has no RFC 3161 timestamp",
    );
    let b2 = keyless_blob(&s, v2());
    let v = verify_keyless_blob(&s, &b2).expect("Rekor v2 bundle verifies");
    assert!(
        v.description.contains("log2.rekor.sigstore.test index 4"),
        "{}",
        v.description
    );
    // Rekor v2 has no SET: without a timestamp there is no verified time
    let b2 = keyless_blob(
        &s,
        crate::testing::BundleOptions {
            timestamp: false,
            ..v2()
        },
    );
    assert_err_contains(verify_keyless_blob(&s, &b2), "no verified signing time");
    // another file
    assert_err_contains(
        verify_blob_bundle(
            &good_verifier(&s),
            b.to_string().as_bytes(),
            &crate::sha256(b"x"),
        ),
        "does not match the file's sha256",
    );
    // the wrong identity
    let v = keyless_verifier(
        &s,
        Identity::Exact("bob@example.com".into()),
        Issuer::Exact(OIDC.into()),
    );
    assert_err_contains(
        verify_blob_bundle(&v, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "certificate identity alice@example.com does not match bob@example.com",
    );
}

#[test]
fn keyless_bundle_sct_missing_or_invalid_refused() {
    let s = Sigstore::new(b"sigstore");
    for log in [v1(), v2()] {
        let b = keyless_blob(
            &s,
            crate::testing::BundleOptions {
                sct: crate::testing::Sct::Missing,
                ..log
            },
        );
        assert_err_contains(
            verify_keyless_blob(&s, &b),
            "certificate transparency: the certificate of alice@example.com carries no SCT (extension 1.3.6.1.4.1.11129.2.4.2)",
        );
        let b = keyless_blob(
            &s,
            crate::testing::BundleOptions {
                sct: crate::testing::Sct::Forged,
                ..log
            },
        );
        assert_err_contains(
            verify_keyless_blob(&s, &b),
            "certificate transparency: no valid SCT: SCT signature does not verify with the key of CT log https://ctfe.sigstore.test",
        );
    }
    // an SCT from a CT log the trust root does not list
    let b = keyless_blob(&s, v1());
    let mut root: serde_json::Value = serde_json::from_str(&s.trusted_root_json()).unwrap();
    let other = Sigstore::new(b"other");
    let other_root: serde_json::Value = serde_json::from_str(&other.trusted_root_json()).unwrap();
    root["ctlogs"] = other_root["ctlogs"].clone();
    let v = alice_under(TrustRoot::from_json(root.to_string().as_bytes()).unwrap());
    assert_err_contains(
        verify_blob_bundle(&v, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "no valid SCT: SCT from unknown log",
    );
    // the legacy (annotation) format checks SCTs too
    let (key, leaf) = s.issue_leaf_with(EMAIL, OIDC, T0, crate::testing::Sct::Missing);
    let payload = simple_signing_payload(REPO, DIGEST);
    let sig = key.sign(&payload);
    let mut layer = keyless_layer(&s, DIGEST);
    layer.payload = payload.clone();
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), crate::b64(&sig));
    layer
        .annotations
        .insert(CERTIFICATE_ANNOTATION.into(), leaf.clone());
    layer.annotations.insert(
        BUNDLE_ANNOTATION.into(),
        rekor_bundle(
            s.log_key(),
            &hashedrekord_body(&payload, &sig, &leaf),
            T0,
            7,
        ),
    );
    assert_err_contains(
        verify_image(&good_verifier(&s), REPO, DIGEST, &[layer]),
        "carries no SCT",
    );
}

/// A keyless verifier for alice@example.com from OIDC under `trust_root`.
fn alice_under(trust_root: TrustRoot) -> Verifier {
    Verifier::Keyless {
        identity: Identity::Exact(EMAIL.into()),
        issuer: Issuer::Exact(OIDC.into()),
        trust_root,
    }
}

/// A trust root whose Fulcio CA window is `[start, end]`.
fn root_with_ca_window(s: &Sigstore, start: &str, end: &str) -> TrustRoot {
    let mut root: serde_json::Value = serde_json::from_str(&s.trusted_root_json()).unwrap();
    root["certificateAuthorities"][0]["validFor"] = serde_json::json!({"start": start, "end": end});
    TrustRoot::from_json(root.to_string().as_bytes()).unwrap()
}

#[test]
fn keyless_bundle_ca_outside_its_validity_window_refused() {
    let s = Sigstore::new(b"sigstore");
    let b = keyless_blob(&s, v1());
    // T0 = 2025-06-15T15:06:40Z; the CA was retired at the end of 2024
    let retired = alice_under(root_with_ca_window(
        &s,
        "2000-01-01T00:00:00Z",
        "2024-12-31T23:59:59Z",
    ));
    assert_err_contains(
        verify_blob_bundle(&retired, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "is outside its trust-root validity window [2000-01-01T00:00:00Z, 2024-12-31T23:59:59Z] at 2025-06-15T15:06:40Z",
    );
    // and one that starts after the signature
    let future = alice_under(root_with_ca_window(
        &s,
        "2026-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z",
    ));
    assert_err_contains(
        verify_blob_bundle(&future, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "trust-root validity window",
    );
    // the TSA time counts too: a window that holds the SET time but not the TSA's (T0 + 1)
    let tight = alice_under(root_with_ca_window(
        &s,
        "2000-01-01T00:00:00Z",
        "2025-06-15T15:06:40Z",
    ));
    assert_err_contains(
        verify_blob_bundle(&tight, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "at the signed timestamp: no CA of the trust root named CN=sigstore-test,O=sigstore.test issued the certificate of alice@example.com and was trusted at 2025-06-15T15:06:41Z",
    );
}

#[test]
fn keyless_bundle_inclusion_proof_must_match_the_checkpoint() {
    let s = Sigstore::new(b"sigstore");
    for (opts, name) in [(v1(), "v1"), (v2(), "v2")] {
        let b = keyless_blob(&s, opts);
        verify_keyless_blob(&s, &b).expect(name);
        let entry = |b: &mut serde_json::Value| -> serde_json::Value {
            b["verificationMaterial"]["tlogEntries"][0].take()
        };
        let put = |b: &mut serde_json::Value, e: serde_json::Value| {
            b["verificationMaterial"]["tlogEntries"][0] = e;
        };
        // a proof hash changed: the path leads elsewhere
        let mut t = b.clone();
        let mut e = entry(&mut t);
        e["inclusionProof"]["hashes"][1] = crate::b64(&[7u8; 32]).into();
        put(&mut t, e);
        assert_err_contains(
            verify_keyless_blob(&s, &t),
            "the inclusion proof does not lead to the checkpoint's root",
        );
        // a checkpoint of another tree, validly signed
        let other = keyless_blob(&s, opts);
        let mut t = b.clone();
        let mut e = entry(&mut t);
        e["inclusionProof"]["checkpoint"] =
            other["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"].clone();
        put(&mut t, e);
        let want = if name == "v1" {
            "does not match the checkpoint"
        } else {
            "the inclusion proof does not lead to the checkpoint's root"
        };
        assert_err_contains(verify_keyless_blob(&s, &t), want);
        // a checkpoint whose signature does not verify
        let mut t = b.clone();
        let mut e = entry(&mut t);
        let text = e["inclusionProof"]["checkpoint"]["envelope"]
            .as_str()
            .unwrap()
            .to_string();
        let forged = text.replacen("\n7\n", "\n8\n", 1);
        assert_ne!(forged, text);
        e["inclusionProof"]["checkpoint"]["envelope"] = forged.into();
        put(&mut t, e);
        assert_err_contains(
            verify_keyless_blob(&s, &t),
            "checkpoint signature does not verify",
        );
        // no proof in a v0.3 bundle
        let mut t = b.clone();
        let mut e = entry(&mut t);
        e.as_object_mut().unwrap().remove("inclusionProof");
        put(&mut t, e);
        assert_err_contains(verify_keyless_blob(&s, &t), "needs an inclusion proof");
    }
    // a Rekor v1 proof whose own root is not the checkpoint's
    let b = keyless_blob(&s, v1());
    let mut t = b.clone();
    t["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["rootHash"] =
        crate::b64(&[9u8; 32]).into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "does not match the checkpoint (tree size 7",
    );
}

#[test]
fn keyless_bundle_timestamps_and_log_entries_are_checked() {
    let s = Sigstore::new(b"sigstore");
    let b = keyless_blob(&s, v2());
    // a timestamp of another signature
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&s.timestamp(b"another signature", T0)).into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "signed timestamp: no verified signing time: timestamp 0: the timestamp is of another signature",
    );
    // beside a verified SET, a timestamp that does not verify is not counted (sigstore-go)
    let mut with_set = keyless_blob(&s, v1());
    with_set["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&s.timestamp(b"another signature", T0)).into();
    verify_keyless_blob(&s, &with_set).expect("the SET time is enough");
    // a genTime that is not ASCII digits is refused, not a panic
    let good = s.timestamp(
        &crate::unb64(b["messageSignature"]["signature"].as_str().unwrap()).unwrap(),
        T0 + 1,
    );
    let pos = good
        .windows(15)
        .position(|w| w == b"20250615150641Z")
        .expect("genTime in the token");
    let mut hostile = good.clone();
    hostile[pos..pos + 15].copy_from_slice("202506151506\u{e9}Z".as_bytes());
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&hostile).into();
    assert_err_contains(verify_keyless_blob(&s, &t), "is not a UTC GeneralizedTime");
    // a token signed by another TSA that carries its own certificate is refused: the signer
    // must be the trust root's TSA certificate
    let other_tsa = Sigstore::new(b"other-tsa");
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&other_tsa.timestamp_with_certificate(
            &crate::unb64(b["messageSignature"]["signature"].as_str().unwrap()).unwrap(),
            T0 + 1,
        ))
        .into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "does not lead to a timestamp authority of the trust root",
    );
    // the TSA's own certificate in the token is fine
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&s.timestamp_with_certificate(
            &crate::unb64(b["messageSignature"]["signature"].as_str().unwrap()).unwrap(),
            T0 + 1,
        ))
        .into();
    verify_keyless_blob(&s, &t).expect("token with the TSA's certificate");
    // a timestamp by a TSA the trust root does not list
    let other = Sigstore::new(b"other");
    let sig = crate::unb64(b["messageSignature"]["signature"].as_str().unwrap()).unwrap();
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        crate::b64(&other.timestamp(&sig, T0)).into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "signed timestamp: no verified signing time: timestamp 0:",
    );
    // a TSA retired before the timestamp
    let mut root: serde_json::Value = serde_json::from_str(&s.trusted_root_json()).unwrap();
    root["timestampAuthorities"][0]["validFor"]["end"] = "2024-01-01T00:00:00Z".into();
    let v = alice_under(TrustRoot::from_json(root.to_string().as_bytes()).unwrap());
    assert_err_contains(
        verify_blob_bundle(&v, b.to_string().as_bytes(), &crate::sha256(FILE)),
        "outside the trust-root validity window of TSA",
    );
    // a corrupted timestamp
    let mut t = b.clone();
    t["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] =
        "MAA=".into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "signed timestamp: no verified signing time: timestamp 0:",
    );
    // a log the trust root does not know
    let mut t = keyless_blob(&s, v1());
    t["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"] = crate::b64(&[1u8; 32]).into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "is not a transparency log of the trust root",
    );
    // a SET over another index
    let mut t = keyless_blob(&s, v1());
    t["verificationMaterial"]["tlogEntries"][0]["logIndex"] = "5".into();
    assert_err_contains(verify_keyless_blob(&s, &t), "SET does not verify");
    // an entry logged for another signature (body swapped, proof rebuilt by the log)
    let first: serde_json::Value = serde_json::from_str(&s.keyless_bundle(
        crate::testing::Signed::File(b"another file"),
        EMAIL,
        OIDC,
        T0,
        v1(),
    ))
    .unwrap();
    let mut t = keyless_blob(&s, v1());
    t["verificationMaterial"]["tlogEntries"][0] =
        first["verificationMaterial"]["tlogEntries"][0].clone();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "logged entry does not match the bundle",
    );
    // v0.1 bundles need a SET; v0.3 refuses a certificate chain
    let mut t = keyless_blob(&s, v2());
    t["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    assert_err_contains(
        verify_keyless_blob(&s, &t),
        "needs an inclusion promise (SET)",
    );
    let mut t = keyless_blob(&s, v1());
    let cert = t["verificationMaterial"]["certificate"].take();
    t["verificationMaterial"]
        .as_object_mut()
        .unwrap()
        .remove("certificate");
    t["verificationMaterial"]["x509CertificateChain"] = serde_json::json!({"certificates": [cert]});
    assert_err_contains(verify_keyless_blob(&s, &t), "not x509CertificateChain");
    t["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into();
    verify_keyless_blob(&s, &t).expect("a v0.2 bundle with a certificate chain");
}

#[test]
fn keyless_image_bundles_verify_the_cosign_v3_way() {
    let s = Sigstore::new(b"sigstore");
    for opts in [v1(), v2()] {
        let json = s.keyless_bundle(crate::testing::Signed::Image(DIGEST), EMAIL, OIDC, T0, opts);
        let v = verify_image_bundle(&good_verifier(&s), DIGEST, json.as_bytes())
            .expect("keyless image bundle");
        assert!(v.description.contains(EMAIL), "{}", v.description);
        assert!(
            v.description.ends_with("(cosign v3 bundle)"),
            "{}",
            v.description
        );
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        assert_err_contains(
            verify_image_bundle(&good_verifier(&s), other, json.as_bytes()),
            "the statement's subjects do not include",
        );
        let k = SigningKey::from_seed(b"k");
        assert_err_contains(
            verify_image_bundle(&key_verifier(&k), DIGEST, json.as_bytes()),
            "a certificate-signed (keyless) bundle under a key",
        );
    }
}
