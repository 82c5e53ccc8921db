//! The OCI supply chain against a real registry (Debian's docker-registry on 127.0.0.1):
//! base installer published by base-assets, installer output pushed and read back by skopeo,
//! reproducible installer images, cosign signatures on inputs (key and keyless, refused when
//! missing, from the wrong key or identity, or for another manifest) and on outputs, and an
//! air-gapped metal build through a mirror that boots to the ready line.

#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip, manifest, oci_layout};
use e2e::registry::{
    Registry, key_sig, push_layout, push_signature, skopeo, skopeo_copy, skopeo_digest,
    skopeo_inspect_raw,
};
use e2e::{assets, bin, run, sha256_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";

fn imager(cache: &Path) -> Command {
    let mut c = Command::new(bin("imager"));
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("IMAGER_INSTALL_DIR", assets())
        .env("IMAGER_CACHE_DIR", cache)
        .env("HOME", cache)
        .env_remove("DOCKER_CONFIG")
        .env_remove("IMAGER_SIGNATURE_POLICY")
        .env_remove("IMAGER_REGISTRIES_CONFIG");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn fails(o: Output, code: i32, needle: &str) -> String {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    assert!(t.contains(needle), "expected {needle:?} in:\n{t}");
    eprintln!(
        "refused as expected: {}",
        t.lines()
            .find(|l| l.starts_with("error") || l.contains("error:"))
            .unwrap_or("")
    );
    t
}

/// An extension image as a single-manifest OCI layout.
fn extension_layout(dir: &Path, name: &str, content: &[u8]) {
    let layer = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest(name, "1.0", ">= v1.0.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/share", 0o755)
        .file(&format!("rootfs/usr/share/{name}.txt"), 0o644, content)
        .finish();
    oci_layout(dir, &[("amd64", vec![gzip(&layer)])]);
}

fn write_key(dir: &Path, seed: &[u8]) -> (cosign::SigningKey, PathBuf, PathBuf) {
    let k = cosign::SigningKey::from_seed(seed);
    let private = dir.join(format!("{}.key", String::from_utf8_lossy(seed)));
    let public = dir.join(format!("{}.pub", String::from_utf8_lossy(seed)));
    std::fs::write(&private, k.to_pkcs8_pem()).unwrap();
    std::fs::write(&public, k.public_key().to_pem()).unwrap();
    (k, private, public)
}

fn publish_base(host: &str, repo: &str) -> String {
    let o = run(
        Command::new(bin("base-assets"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["publish", "--assets"])
            .arg(assets())
            .args(["--insecure", "--push", &format!("{host}/{repo}")]),
        None,
    );
    ok(o);
    skopeo_digest(&format!("docker://{host}/{repo}"), false)
}

/// Installer output: pushed, read back by skopeo, byte-identical across builds, signed with a
/// key, and that signature verifies under a policy (and fails under another key).
#[test]
fn installer_image_push_reproducible_signed() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (_, private, public) = write_key(work.path(), b"release");
    let (_, _, other_pub) = write_key(work.path(), b"other");
    let base_digest = publish_base(&host, "talos/installer-base:v1.14.0");
    // base-assets publish is reproducible too: a second run gives the same manifest
    assert_eq!(
        publish_base(&host, "talos/installer-base-again:v1"),
        base_digest
    );

    let build = |out: &Path, push: Option<&str>| {
        let mut c = imager(&cache);
        c.args([
            "installer",
            "--insecure",
            "--json",
            "--base-installer-image",
        ])
        .arg(format!("{host}/talos/installer-base:v1.14.0"))
        .arg("--output")
        .arg(out)
        .arg("--sign-key")
        .arg(&private);
        if let Some(p) = push {
            c.args(["--push", p]);
        }
        ok(run(&mut c, None))
    };
    let a = work.path().join("a");
    let b = work.path().join("b");
    let target = format!("{host}/talos/installer:v1.14.0-custom");
    let oa = build(&a, Some(&target));
    build(&b, None);
    // byte-identical tar and layout, same manifest digest
    let tar_a = a.join("installer-amd64.tar");
    assert_eq!(
        sha256_file(&tar_a),
        sha256_file(&b.join("installer-amd64.tar"))
    );
    let index_a = std::fs::read(a.join("installer-amd64/index.json")).unwrap();
    assert_eq!(
        index_a,
        std::fs::read(b.join("installer-amd64/index.json")).unwrap()
    );
    let idx: serde_json::Value = serde_json::from_slice(&index_a).unwrap();
    let digest = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        format!("{host}/talos/installer-base:v1.14.0")
    );
    // --json: the report on stdout and no progress lines on stderr
    assert!(!String::from_utf8_lossy(&oa.stderr).contains("imager: pull "));
    let report: serde_json::Value = serde_json::from_slice(&oa.stdout).unwrap();
    let pushed = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "pushed")
        .unwrap();
    assert_eq!(pushed["sha256"].as_str().unwrap(), &digest[7..]);
    // no partial files or staging left behind
    for d in [&a, &b] {
        for e in std::fs::read_dir(d).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "left behind: {n}");
        }
    }

    // skopeo reads the pushed image back: same digest, base layer kept, artifacts layer added
    assert_eq!(skopeo_digest(&format!("docker://{target}"), false), digest);
    let raw = skopeo_inspect_raw(&format!("docker://{target}"), false);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let base_raw = skopeo_inspect_raw(
        &format!("docker://{host}/talos/installer-base@{base_digest}"),
        false,
    );
    let bm: serde_json::Value = serde_json::from_slice(&base_raw).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        m["layers"][0]["digest"], bm["layers"][0]["digest"],
        "first base layer kept"
    );
    assert_ne!(
        m["layers"][1]["digest"], bm["layers"][1]["digest"],
        "artifacts layer replaced"
    );
    let copy = work.path().join("copy");
    skopeo_copy(
        &format!("docker://{target}"),
        &format!("oci:{}:x", copy.display()),
        &["--src-tls-verify=false"],
    );
    let o = skopeo()
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", tar_a.display()))
        .output()
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&ok(o).stdout).unwrap();
    assert_eq!(
        cfg["created"], "2023-11-14T22:13:20Z",
        "created = SOURCE_DATE_EPOCH"
    );
    assert_eq!(cfg["architecture"], "amd64");
    let o = skopeo()
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", tar_a.display()))
        .output()
        .unwrap();
    assert_eq!(format!("sha256:{}", e2e::sha256(&ok(o).stdout)), digest);
    // the artifacts layer holds the boot assets at the Talos paths (mode 0, as Talos' filemap)
    let layer = a
        .join("installer-amd64/blobs/sha256")
        .join(&m["layers"][1]["digest"].as_str().unwrap()[7..]);
    let o = ok(run(Command::new("tar").arg("-tvzf").arg(&layer), None));
    let listing = String::from_utf8_lossy(&o.stdout);
    // Talos >= 1.10: a UKI and systemd-boot
    for f in [
        "usr/install/amd64/vmlinuz.efi",
        "usr/install/amd64/systemd-boot.efi",
    ] {
        assert!(listing.contains(f), "{listing}");
    }
    assert!(!listing.contains("initramfs.xz"), "{listing}");
    assert!(
        listing.lines().all(|l| l.starts_with("---------- 0/0")),
        "{listing}"
    );

    // the cosign signature verifies under a key policy, not under another key
    let policy = |key: &Path| {
        let p = work.path().join("policy.yaml");
        std::fs::write(
            &p,
            format!(
                "images:\n  - glob: \"127.0.0.1:*/talos/**\"\n    key: {}\n",
                key.display()
            ),
        )
        .unwrap();
        p
    };
    let o = ok(run(
        imager(&cache)
            .args(["verify", &target, "--insecure", "--signature-policy"])
            .arg(policy(&public)),
        None,
    ));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&digest),
        "{}",
        text(&o)
    );
    fails(
        run(
            imager(&cache)
                .args(["verify", &target, "--insecure", "--signature-policy"])
                .arg(policy(&other_pub)),
            None,
        ),
        5,
        "signature verification",
    );
    // the file bundle verifies with the key, with openssl, and not after tampering
    let bundle = a.join("installer-amd64.tar.sigstore.json");
    ok(run(
        imager(&cache)
            .arg("verify-blob")
            .arg(&tar_a)
            .arg("--key")
            .arg(&public),
        None,
    ));
    let bj: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(bj["messageSignature"]["signature"].as_str().unwrap())
        .unwrap();
    let sig_file = work.path().join("sig.der");
    std::fs::write(&sig_file, sig).unwrap();
    ok(run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&tar_a),
        None,
    ));
    fails(
        run(
            imager(&cache)
                .arg("verify-blob")
                .arg(b.join("installer-amd64.tar.sigstore.json"))
                .arg("--bundle")
                .arg(&bundle)
                .arg("--key")
                .arg(&public),
            None,
        ),
        5,
        "bundle",
    );
}

/// Inputs under a signature policy: key-signed and keyless-signed images build; unsigned,
/// wrong-key, wrong-identity and re-pointed (tampered) images are refused; the opt-out warns.
#[test]
fn signature_policy_on_inputs() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (key, _, public) = write_key(work.path(), b"vendor");
    let (wrong, _, _) = write_key(work.path(), b"mallory");
    let sigstore = cosign::testing::Sigstore::new(b"test-sigstore");
    let root = work.path().join("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root_json()).unwrap();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  - glob: \"127.0.0.1:*/key/**\"\n    key: {}\n  - glob: \"127.0.0.1:*/keyless/**\"\n    keyless:\n      identityRegexp: '@example\\.com$'\n      issuer: https://accounts.example.com\n      trustedRoot: trusted_root.json\n",
            public.display()
        ),
    )
    .unwrap();
    let mut digests = BTreeMap::new();
    for (repo, content) in [
        ("key/signed", b"a".as_slice()),
        ("key/unsigned", b"b"),
        ("key/wrongkey", b"c"),
        ("key/tampered", b"d"),
        ("keyless/alice", b"e"),
        ("keyless/mallory", b"f"),
        ("open/free", b"g"),
    ] {
        let l = work.path().join(repo.replace('/', "-"));
        extension_layout(&l, "hello", content);
        digests.insert(repo, push_layout(&l, &format!("{host}/{repo}:v1")));
    }
    let name = |repo: &str| format!("{host}/{repo}");
    push_signature(
        &host,
        "key/signed",
        &digests["key/signed"],
        &[key_sig(&key, &name("key/signed"), &digests["key/signed"])],
    );
    push_signature(
        &host,
        "key/wrongkey",
        &digests["key/wrongkey"],
        &[key_sig(
            &wrong,
            &name("key/wrongkey"),
            &digests["key/wrongkey"],
        )],
    );
    // tampered: the tag now names another manifest; its .sig carries a payload for the old one
    let other = work.path().join("tampered2");
    extension_layout(&other, "hello", b"evil");
    let old = digests["key/tampered"].clone();
    let new = push_layout(&other, &format!("{host}/key/tampered:v1"));
    push_signature(
        &host,
        "key/tampered",
        &new,
        &[key_sig(&key, &name("key/tampered"), &old)],
    );
    let now = 1_700_000_000;
    for (repo, email) in [
        ("keyless/alice", "alice@example.com"),
        ("keyless/mallory", "mallory@evil.test"),
    ] {
        let payload = cosign::simple_signing_payload(&name(repo), &digests[repo]);
        let ann = sigstore.keyless_sign(&payload, email, "https://accounts.example.com", now);
        push_signature(&host, repo, &digests[repo], &[(payload, ann)]);
    }

    let build = |repo: &str, extra: &[&str]| {
        let out = work.path().join(format!("out-{}", repo.replace('/', "-")));
        run(
            imager(&cache)
                .args([
                    "metal",
                    "--output-kind",
                    "initramfs",
                    "--insecure",
                    "--signature-policy",
                ])
                .arg(&policy)
                .arg("--system-extension-image")
                .arg(format!("{host}/{repo}:v1"))
                .arg("--output")
                .arg(&out)
                .args(extra),
            None,
        )
    };
    let o = ok(build("key/signed", &[]));
    assert!(
        text(&o).contains("verified ") && text(&o).contains("signed by key"),
        "{}",
        text(&o)
    );
    // stderr is a pipe here: each blob download ends with one progress summary line
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines().any(
            |l| l.starts_with(&format!("imager: pull {host}/key/signed@sha256:"))
                && l.ends_with(" s")
        ),
        "{err}"
    );
    let o = ok(build("keyless/alice", &[]));
    assert!(text(&o).contains("alice@example.com"), "{}", text(&o));
    fails(build("key/unsigned", &[]), 5, "no signatures found");
    fails(build("key/wrongkey", &[]), 5, "does not verify");
    fails(build("key/tampered", &[]), 5, "does not match image digest");
    fails(build("keyless/mallory", &[]), 5, "mallory@evil.test");
    // no rule, no requirement
    ok(build("open/free", &[]));
    // the opt-out is loud
    let o = ok(build("key/unsigned", &["--insecure-skip-signature-verify"]));
    assert!(
        text(&o).contains("WARNING: signature verification"),
        "{}",
        text(&o)
    );
}

/// Air-gapped: the images are named by their public references (ghcr.io, unreachable here);
/// only the mirror serves them. A metal image with the base installer and one extension from
/// the mirror, both signature-checked through it, builds and boots to the ready line.
#[test]
fn air_gapped_metal_through_mirror_boots() {
    let mirror = Registry::start();
    let host = mirror.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (key, _, public) = write_key(work.path(), b"siderolabs");
    let base = publish_base(&host, "siderolabs/installer-base:v1.14.0");
    let ext = work.path().join("ext");
    extension_layout(&ext, "airgap", b"served by the mirror\n");
    let ext_digest = push_layout(&ext, &format!("{host}/siderolabs/airgap:v1"));
    push_signature(
        &host,
        "siderolabs/installer-base",
        &base,
        &[key_sig(&key, "ghcr.io/siderolabs/installer-base", &base)],
    );
    push_signature(
        &host,
        "siderolabs/airgap",
        &ext_digest,
        &[key_sig(&key, "ghcr.io/siderolabs/airgap", &ext_digest)],
    );
    let cfg = work.path().join("registries.yaml");
    std::fs::write(
        &cfg,
        format!("machine:\n  registries:\n    mirrors:\n      ghcr.io:\n        endpoints:\n          - http://{host}/\n        skipFallback: true\n"),
    )
    .unwrap();
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  - glob: \"ghcr.io/siderolabs/*\"\n    key: {}\n",
            public.display()
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let o = ok(run(
        imager(&cache)
            .args(["metal", "--extra-kernel-arg", "console=ttyS0"])
            .args([
                "--base-installer-image",
                "ghcr.io/siderolabs/installer-base:v1.14.0",
            ])
            .args(["--system-extension-image", "ghcr.io/siderolabs/airgap:v1"])
            .arg("--registries-config")
            .arg(&cfg)
            .arg("--signature-policy")
            .arg(&policy)
            .arg("--output")
            .arg(&out),
        None,
    ));
    let t = text(&o);
    assert!(
        t.matches("verified ghcr.io/siderolabs/").count() == 2,
        "{t}"
    );
    // the log of the mirror shows it served both images
    let log = mirror.log_tail();
    assert!(
        log.contains("siderolabs/airgap") && log.contains("siderolabs/installer-base"),
        "{log}"
    );
    let o = run(
        Command::new(bin("imager"))
            .arg("boot")
            .arg(out.join("metal-amd64.raw.zst"))
            .arg("--until-ready"),
        None,
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("extensions=airgap@1.0"), "{t}");
}

/// The imager container image (`imager self-image --push`): the index goes to the tag, each
/// platform manifest by digest, the cosign signature of the index verifies under a policy,
/// and skopeo reads back exactly the index the layout holds.
#[test]
fn imager_image_pushed_as_an_index_and_signed() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (_, private, public) = write_key(work.path(), b"release");
    let out = work.path().join("out");
    let target = format!("{host}/tools/imager:v1");
    let o = ok(run(
        imager(&cache)
            .args([
                "self-image",
                "--json",
                "--insecure",
                "--push",
                &target,
                "--sign-key",
            ])
            .arg(&private)
            .arg("--output")
            .arg(&out),
        None,
    ));
    let index = std::fs::read(out.join("imager-image/index.json")).unwrap();
    let digest = format!("sha256:{}", e2e::sha256(&index));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["imager-image", "oci-layout", "pushed", "signature"]);
    assert!(out.join("imager-image.tar.sigstore.json").is_file());
    // the tag names the index, byte for byte
    let raw = skopeo_inspect_raw(&format!("docker://{target}"), false);
    assert_eq!(raw, index);
    assert_eq!(skopeo_digest(&format!("docker://{target}"), false), digest);
    // the amd64 manifest resolves through it
    let idx: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let m = idx["manifests"][0]["digest"].as_str().unwrap();
    let raw = skopeo_inspect_raw(&format!("docker://{host}/tools/imager@{m}"), false);
    assert_eq!(format!("sha256:{}", e2e::sha256(&raw)), m);
    // the signature verifies under a key policy
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  - glob: \"127.0.0.1:*/tools/**\"\n    key: {}\n",
            public.display()
        ),
    )
    .unwrap();
    let o = ok(run(
        imager(&cache)
            .args(["verify", &target, "--insecure", "--signature-policy"])
            .arg(&policy),
        None,
    ));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&digest),
        "{}",
        text(&o)
    );
}

/// Signs `digest` of `repo` the cosign v3 way on a registry without the referrers API: a
/// Sigstore bundle v0.3 (DSSE over an in-toto statement, predicate
/// `https://sigstore.dev/cosign/sign/v1`) in an OCI 1.1 artifact manifest (empty config,
/// one bundle layer, `subject` = the image), pushed by digest, and the `sha256-<hex>` tag
/// holding the referrers index, as cosign lays them out.
fn push_v3_signature(host: &str, repo: &str, digest: &str, key: &cosign::SigningKey, dir: &Path) {
    push_v3_bundle(host, repo, digest, &key_v3_bundle(digest, key), dir);
}

/// A key-signed v0.3 bundle over `digest` as cosign v3 makes it.
fn key_v3_bundle(digest: &str, key: &cosign::SigningKey) -> Vec<u8> {
    let b64 = |d: &[u8]| base64_std(d);
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": &digest[7..]}, "annotations": {}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    });
    let payload = serde_json::to_vec(&statement).unwrap();
    let mut pae = format!(
        "DSSEv1 {} application/vnd.in-toto+json {} ",
        "application/vnd.in-toto+json".len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": b64(&key.public_key().key_id())},
            "tlogEntries": [],
            "timestampVerificationData": {},
        },
        "dsseEnvelope": {
            "payload": b64(&payload),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": b64(&key.sign(&pae)), "keyid": ""}],
        },
    }))
    .unwrap()
}

/// Pushes `bundle` as the cosign v3 referrer of `digest` in `repo` (see push_v3_signature).
/// Returns the referrers index (also pushed to the fallback tag): an oversized referrer, then
/// the signature.
fn push_v3_bundle(
    host: &str,
    repo: &str,
    digest: &str,
    bundle: &[u8],
    dir: &Path,
) -> serde_json::Value {
    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    std::fs::create_dir_all(dir).unwrap();
    let (empty, bundle_path) = (dir.join("empty"), dir.join("bundle"));
    std::fs::write(&empty, b"{}").unwrap();
    std::fs::write(&bundle_path, bundle).unwrap();
    let desc = |mt: &str, bytes: &[u8]| oci::types::Descriptor::of(mt, bytes);
    let config = desc("application/vnd.oci.empty.v1+json", b"{}");
    let layer = desc(BUNDLE, bundle);
    let subject_size = skopeo_inspect_raw(&format!("docker://{host}/{repo}@{digest}"), false).len();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE,
        "config": config,
        "layers": [layer],
        "subject": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": subject_size,
        },
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
            "org.opencontainers.image.created": "2026-12-04T00:00:00Z",
        },
    }))
    .unwrap();
    let mdigest = format!("sha256:{}", e2e::sha256(&manifest));
    let client = oci::Client::new(
        oci::ClientOptions::default(),
        oci::Cache::open(&dir.join("cache")).unwrap(),
    )
    .unwrap();
    let target = oci::Reference::parse(&format!("{host}/{repo}@{mdigest}")).unwrap();
    client
        .push(
            &target,
            true,
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
            &[(config, empty.clone()), (layer, bundle_path)],
        )
        .unwrap();
    // a second referrer whose bundle is 1.5 MiB
    let big = dir.join("big");
    std::fs::write(&big, vec![b' '; 3 << 19]).unwrap();
    let big_layer = desc(BUNDLE, &std::fs::read(&big).unwrap());
    let mut big_doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    big_doc["layers"] = serde_json::json!([big_layer]);
    let big_manifest = serde_json::to_vec(&big_doc).unwrap();
    let big_digest = format!("sha256:{}", e2e::sha256(&big_manifest));
    client
        .push(
            &oci::Reference::parse(&format!("{host}/{repo}@{big_digest}")).unwrap(),
            true,
            &big_manifest,
            "application/vnd.oci.image.manifest.v1+json",
            &[
                (
                    desc("application/vnd.oci.empty.v1+json", b"{}"),
                    empty.clone(),
                ),
                (big_layer, big.clone()),
            ],
        )
        .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        // an unreadable referrer first (its bundle is over the bound): it must not hide the
        // real one
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": big_digest,
            "size": big_manifest.len(),
            "artifactType": BUNDLE,
        }, {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdigest,
            "size": manifest.len(),
            "artifactType": BUNDLE,
        }],
    }))
    .unwrap();
    let tag = oci::Reference::parse(&format!("{host}/{repo}:sha256-{}", &digest[7..])).unwrap();
    client
        .push(
            &tag,
            true,
            &index,
            "application/vnd.oci.image.index.v1+json",
            &[],
        )
        .unwrap();
    serde_json::from_slice(&index).unwrap()
}

fn base64_std(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// cosign v3's signature format (an OCI 1.1 referrer holding a Sigstore bundle, found
/// through the tag fallback on a registry without the referrers API) verifies under a key
/// policy; another key, and an unsigned image, are refused.
#[test]
fn cosign_v3_referrer_signatures_verify_under_a_policy() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (key, _, public) = write_key(work.path(), b"release");
    let (_, _, other_pub) = write_key(work.path(), b"other");
    let signed = publish_base(&host, "v3/signed:v1");
    let unsigned = publish_base(&host, "v3/unsigned:v1");
    assert_eq!(signed, unsigned, "the same image in two repositories");
    push_v3_signature(&host, "v3/signed", &signed, &key, &work.path().join("sig"));
    let policy = |key: &Path| {
        let p = work.path().join("policy.yaml");
        std::fs::write(
            &p,
            format!(
                "images:\n  - glob: \"127.0.0.1:*/v3/**\"\n    key: {}\n",
                key.display()
            ),
        )
        .unwrap();
        p
    };
    let verify = |r: &str, key: &Path| {
        run(
            imager(&cache)
                .args(["verify", r, "--insecure", "--signature-policy"])
                .arg(policy(key)),
            None,
        )
    };
    let o = ok(verify(&format!("{host}/v3/signed:v1"), &public));
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &text(&o);
    assert!(out.contains("cosign v3 bundle"), "{out}");
    assert!(
        out.contains("skipped referrer sha256:") && out.contains("(at most 1 MiB)"),
        "{out}"
    );
    assert!(out.contains(&signed), "{out}");
    fails(
        verify(&format!("{host}/v3/signed:v1"), &other_pub),
        5,
        "referrer bundle 0: signature by key",
    );
    fails(
        verify(&format!("{host}/v3/unsigned:v1"), &public),
        5,
        "signature verification",
    );
}

/// Keyless cosign v3 signatures: referrer bundles made by sigstore-js (DSSE statement, Fulcio
/// certificate with SCT, Rekor v1 entry with SET + inclusion proof + checkpoint, RFC 3161
/// timestamp, all from @sigstore/mock) and by our stand-in logged in Rekor v2 (no SET, a
/// TSA time) verify under a keyless policy; another identity is refused.
#[test]
fn cosign_v3_keyless_referrer_signatures_verify_under_a_policy() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let signed = publish_base(&host, "kl/js:v1");
    publish_base(&host, "kl/v2:v1");

    // sigstore-js, against its mock services
    let js = e2e::sigstore_js(work.path());
    let out = work.path().join("js-out");
    let (identity, issuer) = e2e::keyless_js(
        &js,
        &[
            Path::new("/dev/null"),
            &out,
            Path::new("--dsse"),
            Path::new(&signed[7..]),
        ],
    );
    let bundle = std::fs::read(out.join("bundle.sigstore.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&bundle).contains("\"kind\": \"dsse\""),
        "a Rekor v1 dsse entry"
    );
    push_v3_bundle(
        &host,
        "kl/js",
        &signed,
        &bundle,
        &work.path().join("sig-js"),
    );

    // our stand-in, Rekor v2
    let sigstore = cosign::testing::Sigstore::new(b"registry-keyless");
    let v2 = sigstore.keyless_bundle(
        cosign::testing::Signed::Image(&signed),
        "release@example.com",
        "https://accounts.example.com",
        1_790_000_000,
        cosign::testing::BundleOptions {
            log: cosign::testing::Log::RekorV2,
            ..Default::default()
        },
    );
    push_v3_bundle(
        &host,
        "kl/v2",
        &signed,
        v2.as_bytes(),
        &work.path().join("sig-v2"),
    );
    let v2_root = work.path().join("v2_root.json");
    std::fs::write(&v2_root, sigstore.trusted_root_json()).unwrap();

    let policy = |name: &str, identity: &str, issuer: &str, root: &Path| {
        let p = work.path().join(name);
        std::fs::write(
            &p,
            format!(
                "images:\n  - glob: \"127.0.0.1:*/kl/**\"\n    keyless:\n      identity: {identity}\n      issuer: {issuer}\n      trustedRoot: {}\n",
                root.display()
            ),
        )
        .unwrap();
        p
    };
    let verify = |r: &str, p: &Path| {
        run(
            imager(&cache)
                .args(["verify", r, "--insecure", "--signature-policy"])
                .arg(p),
            None,
        )
    };
    let js_policy = policy(
        "js.yaml",
        &identity,
        &issuer,
        &out.join("trusted_root.json"),
    );
    let o = ok(verify(&format!("{host}/kl/js:v1"), &js_policy));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &text(&o);
    assert!(said.contains(&format!("signed by {}", identity)), "{said}");
    assert!(said.contains("cosign v3 bundle"), "{said}");
    let v2_policy = policy(
        "v2.yaml",
        "release@example.com",
        "https://accounts.example.com",
        &v2_root,
    );
    let o = ok(verify(&format!("{host}/kl/v2:v1"), &v2_policy));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &text(&o);
    assert!(said.contains("log2.rekor.sigstore.test index 4"), "{said}");
    let wrong = policy(
        "wrong.yaml",
        "mallory@example.com",
        "https://accounts.example.com",
        &v2_root,
    );
    fails(
        verify(&format!("{host}/kl/v2:v1"), &wrong),
        5,
        "certificate identity release@example.com does not match mallory@example.com",
    );
    // the sigstore-js signature does not verify under the stand-in's trust root
    let cross = policy("cross.yaml", &identity, &issuer, &v2_root);
    fails(
        verify(&format!("{host}/kl/js:v1"), &cross),
        5,
        "is not a transparency log of the trust root",
    );
}

/// The referrers API in pages (`Link: <…>; rel="next"`, distribution-spec 1.1), served by a
/// proxy in front of a registry that lacks the API: the signature on the second page is
/// found; a next page on another host is refused with a skipped line (and the tag fallback
/// still finds the signature).
#[test]
fn cosign_v3_referrers_api_pages_are_followed() {
    let reg = Registry::start();
    let proxy = e2e::faultproxy::FaultProxy::start(&reg.host());
    let host = proxy.host();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (key, _, public) = write_key(work.path(), b"pages");
    let signed = publish_base(&reg.host(), "pg/img:v1");
    let index = push_v3_bundle(
        &reg.host(),
        "pg/img",
        &signed,
        &key_v3_bundle(&signed, &key),
        &work.path().join("sig"),
    );
    let entries = index["manifests"].as_array().unwrap();
    let page = |m: &serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [m],
        }))
        .unwrap()
    };
    let policy = work.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  - glob: \"127.0.0.1:*/pg/**\"\n    key: {}\n",
            public.display()
        ),
    )
    .unwrap();
    let verify = || {
        run(
            imager(&cache)
                .args([
                    "verify",
                    &format!("{host}/pg/img:v1"),
                    "--insecure",
                    "--signature-policy",
                ])
                .arg(&policy),
            None,
        )
    };
    let api = format!("/v2/pg/img/referrers/{signed}");
    let idx = [("Content-Type", "application/vnd.oci.image.index.v1+json")];
    // page 1: only the oversized referrer, and a link to page 2 on the same registry
    let next = format!("<{api}?last=1>; rel=\"next\"");
    proxy.set_canned(
        &api,
        200,
        &[idx[0], ("Link", next.as_str())],
        &page(&entries[0]),
    );
    proxy.set_canned(&format!("{api}?last=1"), 200, &idx, &page(&entries[1]));
    // the fallback tag is hidden, so only the API's pages can lead to the signature
    let tag_path = format!("/v2/pg/img/manifests/sha256-{}", &signed[7..]);
    proxy.set_canned(&tag_path, 404, &[], b"{}");
    let o = ok(verify());
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &text(&o);
    assert!(said.contains("cosign v3 bundle"), "{said}");
    assert!(
        said.contains("skipped referrer sha256:"),
        "page 1 was read: {said}"
    );

    // a next page on another host is not followed
    let proxy2 = e2e::faultproxy::FaultProxy::start(&reg.host());
    let host2 = proxy2.host();
    proxy2.set_canned(
        &api,
        200,
        &[
            idx[0],
            (
                "Link",
                "<http://127.0.0.1:9/v2/pg/img/referrers/x>; rel=\"next\"",
            ),
        ],
        &page(&entries[0]),
    );
    let o = ok(run(
        imager(&cache)
            .args([
                "verify",
                &format!("{host2}/pg/img:v1"),
                "--insecure",
                "--signature-policy",
            ])
            .arg(&policy),
        None,
    ));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &text(&o);
    assert!(
        said.contains("referrers API:") && said.contains("is not on"),
        "{said}"
    );
    assert!(
        said.contains("cosign v3 bundle"),
        "the tag fallback: {said}"
    );
}
