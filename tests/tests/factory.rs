//! The Image Factory service (docs/formats/factory.md) against the real `docker-registry`: inputs
//! published and cosign-signed by the test (an installer-base from `base-assets publish`, an
//! extension and the extensions catalog pushed with skopeo), two instances sharing one
//! registry cache, de-duplicated builds, tampered cache entries, a kill in the middle of a
//! build, and a node network-booted by iPXE from the factory's PXE script.
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, gzip, manifest, oci_layout};
use e2e::registry::{Registry, free_port, key_sig, push_layout, push_signature, skopeo};
use e2e::{assets, bin, ok, run, sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = "v1.14.0";
/// A version with an arm64 installer-base and board overlays ([`Lab::board`]).
const BOARD_VERSION: &str = "v1.14.1";
const EPOCH: &str = "1700000000";

/// The registry with the factory's inputs, and the keys.
struct Lab {
    reg: Registry,
    dir: tempfile::TempDir,
    /// Keyless signing (the test stand-in's Sigstore and the signer's identity) instead of
    /// the input key.
    keyless: Option<&'static str>,
    base_digest: String,
    ext_digest: String,
}

/// How the inputs are signed: with the input key, or keyless as `identity` by the test
/// stand-in of Fulcio and Rekor (`cosign::testing`).
#[derive(Clone, Copy)]
enum Signer<'a> {
    Key(&'a cosign::SigningKey),
    Keyless(&'a cosign::testing::Sigstore, &'static str),
}

const KEYLESS_ISSUER: &str = "https://accounts.example.com";

fn sign(lab_host: &str, repo: &str, digest: &str, signer: Signer) {
    let name = format!("{lab_host}/{repo}");
    let sig = match signer {
        Signer::Key(key) => key_sig(key, &name, digest),
        Signer::Keyless(sigstore, identity) => {
            let payload = cosign::simple_signing_payload(&name, digest);
            let ann = sigstore.keyless_sign(&payload, identity, KEYLESS_ISSUER, 1_700_000_000);
            (payload, ann)
        }
    };
    push_signature(lab_host, repo, digest, &[sig]);
}

fn tar_layout(dir: &Path, tar: Vec<u8>) {
    oci_layout(dir, &[("amd64", vec![gzip(&tar)])]);
}

impl Lab {
    fn new() -> Lab {
        Self::signed(None)
    }

    /// A lab whose inputs are signed keyless as `identity` (`Some`), or with the input key.
    fn signed(keyless: Option<&'static str>) -> Lab {
        let reg = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let host = reg.host();
        let input_key = cosign::SigningKey::from_seed(b"factory inputs");
        let sigstore = cosign::testing::Sigstore::new(b"factory sigstore");
        std::fs::write(
            dir.path().join("trusted_root.json"),
            sigstore.trusted_root_json(),
        )
        .unwrap();
        let signer = match keyless {
            Some(identity) => Signer::Keyless(&sigstore, identity),
            None => Signer::Key(&input_key),
        };
        std::fs::write(
            dir.path().join("inputs.pub"),
            input_key.public_key().to_pem(),
        )
        .unwrap();
        let cache_key = cosign::SigningKey::from_seed(b"factory cache");
        std::fs::write(dir.path().join("cache.pem"), cache_key.to_pkcs8_pem()).unwrap();
        // the installer-base of the version, as the release build publishes it
        let base_ref = format!("{host}/siderolabs/installer-base:{VERSION}");
        ok(Command::new(bin("base-assets"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["publish", "--arch", "amd64", "--insecure", "--assets"])
            .arg(assets())
            .arg("--installer")
            .arg(bin("installer"))
            .args(["--push", &base_ref]));
        let base_digest = e2e::registry::skopeo_digest(&base_ref, false);
        sign(&host, "siderolabs/installer-base", &base_digest, signer);
        // an official extension
        let ext = Tar::new()
            .file(
                "manifest.yaml",
                0o644,
                manifest("hello", "1.0.0", ">= v1.0.0").as_bytes(),
            )
            .dir("rootfs", 0o755)
            .dir("rootfs/usr", 0o755)
            .dir("rootfs/usr/local", 0o755)
            .dir("rootfs/usr/local/share", 0o755)
            .file(
                "rootfs/usr/local/share/hello.txt",
                0o644,
                b"hello from the factory\n",
            )
            .finish();
        let l = dir.path().join("ext-layout");
        tar_layout(&l, ext);
        let ext_digest = push_layout(&l, &format!("{host}/siderolabs/hello:1.0.0"));
        sign(&host, "siderolabs/hello", &ext_digest, signer);
        // the version's extensions catalog
        let line = format!("{host}/siderolabs/hello:1.0.0@{ext_digest}");
        let catalog = Tar::new()
            .file("image-digests", 0o644, format!("{line}\n").as_bytes())
            .file(
                "descriptions.yaml",
                0o644,
                format!("\"{line}\":\n  author: Test\n  description: Says hello.\n").as_bytes(),
            )
            .finish();
        let l = dir.path().join("catalog-layout");
        tar_layout(&l, catalog);
        let cd = push_layout(&l, &format!("{host}/siderolabs/extensions:{VERSION}"));
        sign(&host, "siderolabs/extensions", &cd, signer);
        Lab {
            reg,
            dir,
            keyless,
            base_digest,
            ext_digest,
        }
    }

    fn host(&self) -> String {
        self.reg.host()
    }

    /// Adds [`BOARD_VERSION`]: an arm64 installer-base, the reference Raspberry Pi overlay
    /// (`_out/overlays/rpi_generic.tar.gz` as an image) and the version's overlay catalog.
    fn board(&self) {
        let host = self.host();
        let key = cosign::SigningKey::from_seed(b"factory inputs");
        let signer = Signer::Key(&key);
        let base_ref = format!("{host}/siderolabs/installer-base:{BOARD_VERSION}");
        ok(Command::new(bin("base-assets"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["publish", "--arch", "arm64", "--insecure", "--assets"])
            .arg(assets())
            .args(["--push", &base_ref]));
        let d = e2e::registry::skopeo_digest(&base_ref, false);
        sign(&host, "siderolabs/installer-base", &d, signer);
        let ov = e2e::root().join("_out/overlays/rpi_generic.tar.gz");
        let l = self.dir.path().join("overlay-layout");
        oci_layout(&l, &[("arm64", vec![std::fs::read(&ov).unwrap()])]);
        let ov_digest = push_layout(&l, &format!("{host}/siderolabs/sbc-raspberrypi:v0.1.0"));
        sign(&host, "siderolabs/sbc-raspberrypi", &ov_digest, signer);
        let catalog = Tar::new()
            .file(
                "overlays.yaml",
                0o644,
                format!(
                    "overlays:\n  - name: rpi_generic\n    image: {host}/siderolabs/sbc-raspberrypi:v0.1.0\n    digest: {ov_digest}\n"
                )
                .as_bytes(),
            )
            .finish();
        let l = self.dir.path().join("overlays-layout");
        tar_layout(&l, catalog);
        let cd = push_layout(&l, &format!("{host}/siderolabs/overlays:{BOARD_VERSION}"));
        sign(&host, "siderolabs/overlays", &cd, signer);
    }

    /// The cache repository's asset tags (profile hashes).
    fn cache_tags(&self) -> Vec<String> {
        let o = run(
            skopeo().args([
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{}/siderolabs/image-factory/cache", self.host()),
            ]),
            None,
        );
        if !o.status.success() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .collect();
        tags.sort();
        tags
    }
}

/// A running `factory`, killed on drop.
struct Factory {
    child: Child,
    port: u16,
    log: PathBuf,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into()
}

impl Factory {
    fn start(lab: &Lab, name: &str, extra: &[(&str, &str)]) -> Factory {
        let port = free_port();
        let log = lab.dir.path().join(format!("{name}.log"));
        let host = lab.host();
        let mut c = Command::new(bin("factory"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IF_HTTP_HTTPLISTENADDR", format!("127.0.0.1:{port}"))
            .env("IF_CACHE_OCI_REGISTRY", &host)
            .env("IF_CACHE_OCI_INSECURE", "true")
            .env("IF_CACHE_SIGNINGKEYPATH", lab.dir.path().join("cache.pem"))
            .env("IF_ARTIFACTS_CORE_REGISTRY", &host)
            .env("IF_ARTIFACTS_CORE_INSECURE", "true")
            .env("IF_ARTIFACTS_SCHEMATIC_REGISTRY", &host)
            .env("IF_ARTIFACTS_SCHEMATIC_INSECURE", "true")
            .env(
                "IF_BUILD_WORKDIR",
                lab.dir.path().join(format!("work-{name}")),
            );
        match lab.keyless {
            None => {
                c.env(
                    "IF_CONTAINERSIGNATURE_PUBLICKEYFILE",
                    lab.dir.path().join("inputs.pub"),
                );
            }
            Some(_) => {
                c.env("IF_CONTAINERSIGNATURE_SUBJECTREGEXP", r"@example\.com$")
                    .env("IF_CONTAINERSIGNATURE_ISSUER", KEYLESS_ISSUER)
                    .env(
                        "IF_CONTAINERSIGNATURE_TRUSTEDROOTFILE",
                        lab.dir.path().join("trusted_root.json"),
                    );
            }
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let f = Factory { child, port, log };
        let start = Instant::now();
        loop {
            if let Ok(r) = agent().get(&f.url("/healthz")).call()
                && r.status() == 200
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the factory did not start:\n{}",
                f.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        f
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = agent().get(&self.url(path)).call().unwrap();
        let status = r.status().as_u16();
        let mut body = Vec::new();
        r.into_body().into_reader().read_to_end(&mut body).unwrap();
        (status, body)
    }

    fn get_ok(&self, path: &str) -> Vec<u8> {
        let (s, b) = self.get(path);
        assert_eq!(
            s,
            200,
            "GET {path}: {}\n{}",
            String::from_utf8_lossy(&b),
            self.log_text()
        );
        b
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let r = agent()
            .post(&self.url(path))
            .header("Content-Type", "application/yaml")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let mut text = String::new();
        r.into_body()
            .into_reader()
            .read_to_string(&mut text)
            .unwrap();
        (status, text)
    }

    fn schematic(&self, yaml: &str) -> String {
        let (s, t) = self.post("/schematics", yaml);
        assert_eq!(s, 201, "{t}");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn schematic_normalized(&self, yaml: &str) -> String {
        let (s, t) = self.post("/schematics?normalize=true", yaml);
        assert_eq!(s, 201, "{t}");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn metric(&self, name: &str) -> u64 {
        let text = String::from_utf8(self.get_ok("/metrics")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        self.kill();
    }
}

const SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - console=ttyS0\n    - node_runtime.test_poweroff\n  meta:\n    - key: 12\n      value: factory-meta\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/hello\n";

/// The profile the factory builds `initramfs-amd64.xz` of [`SCHEMATIC`] with, written by hand
/// from docs/formats/factory.md (an initramfs carries the extensions; kernel arguments and META go
/// to the command line), built by the `imager` CLI.
fn local_build(lab: &Lab, out: &Path, id: &str, canonical: &str) -> Vec<u8> {
    let host = lab.host();
    // the schematic's virtual extension, as the factory makes it
    let ext = lab.dir.path().join(format!("{id}.tar"));
    std::fs::write(
        &ext,
        factory::enhance::schematic_extension(id, canonical, true).unwrap(),
    )
    .unwrap();
    let profile = format!(
        "arch: amd64\nplatform: metal\nversion: {VERSION}\noutput:\n  kind: initramfs\n  outFormat: raw\n\
         input:\n  baseInstaller:\n    imageRef: {host}/siderolabs/installer-base@{}\n    forceInsecure: true\n  \
         systemExtensions:\n    - imageRef: {host}/siderolabs/hello@{}\n      forceInsecure: true\n    \
         - tarballPath: {}\n",
        lab.base_digest,
        lab.ext_digest,
        ext.display()
    );
    let o = run(
        e2e::imager()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("IMAGER_CACHE_DIR", lab.dir.path().join("local-cache"))
            .args(["-", "--output"])
            .arg(out),
        Some(profile.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = e2e::dir_entries(out);
    assert_eq!(files, ["initramfs-metal-amd64.xz"]);
    std::fs::read(out.join(&files[0])).unwrap()
}

#[test]
fn two_instances_share_one_signed_cache() {
    let lab = Lab::new();
    let a = Factory::start(&lab, "a", &[]);
    let b = Factory::start(&lab, "b", &[]);

    // upstream's golden IDs, through the API; the stored text reads back from the other
    // instance (the registry is the store)
    assert_eq!(
        a.schematic("{}"),
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
    );
    let noapic = a.schematic("customization:\n  extraKernelArgs:\n    - noapic\n    - nolapic\n");
    assert!(noapic.starts_with("9cba8e32"), "{noapic}");
    let text = String::from_utf8(b.get_ok(&format!("/schematics/{noapic}"))).unwrap();
    assert_eq!(
        text,
        "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n"
    );
    // the normalized ID does not depend on the extension order
    let n1 = a.schematic_normalized(
        "customization:\n  systemExtensions:\n    officialExtensions: [b/y, a/x]\n",
    );
    let n2 = a.schematic_normalized(
        "customization:\n  systemExtensions:\n    officialExtensions: [a/x, b/y, a/x]\n",
    );
    assert_eq!(n1, n2);
    let id = a.schematic(SCHEMATIC);

    // bad requests are 4xx with a reason, never 5xx
    for (path, status, needle) in [
        (
            format!("/image/{id}/{VERSION}/metal-amd64.bogus"),
            400,
            "not an asset name",
        ),
        (
            format!("/image/{id}/{VERSION}/venus-amd64.iso"),
            400,
            "platform",
        ),
        (
            format!("/image/{id}/{VERSION}/kernel-sparc"),
            400,
            "architecture",
        ),
        (
            format!("/image/{id}/v9.9.9/kernel-amd64"),
            404,
            "not available",
        ),
        (
            format!("/image/{}/{VERSION}/kernel-amd64", "0".repeat(64)),
            404,
            "not found",
        ),
        (
            format!("/image/xyz/{VERSION}/kernel-amd64"),
            400,
            "invalid schematic ID",
        ),
        (
            format!("/image/{id}/{VERSION}/metal-amd64.iso?filename=../x"),
            400,
            "invalid filename",
        ),
        ("/schematics/abc".to_string(), 400, "invalid schematic ID"),
        ("/nowhere".to_string(), 404, "no route"),
    ] {
        let (s, body) = a.get(&path);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    for (body, needle) in [
        ("customization:\n  bogus: 1\n", "unknown field"),
        ("customization:\n  bootloader: lilo\n", "bootloader"),
        ("owner: me\n", "Enterprise"),
        ("- not a mapping\n", "invalid schematic"),
        ("", "empty"),
    ] {
        let (s, t) = a.post("/schematics", body);
        assert_eq!(s, 400, "{body:?}: {t}");
        assert!(t.contains(needle), "{body:?}: {t}");
    }
    let unknown_ext = a.schematic(
        "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/nope]\n",
    );
    let (s, t) = a.get(&format!(
        "/image/{unknown_ext}/{VERSION}/initramfs-amd64.xz"
    ));
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&t));

    // metadata
    let versions: serde_json::Value = serde_json::from_slice(&a.get_ok("/versions")).unwrap();
    assert_eq!(versions, serde_json::json!([VERSION]));
    let exts: serde_json::Value =
        serde_json::from_slice(&a.get_ok(&format!("/version/{VERSION}/extensions/official")))
            .unwrap();
    assert_eq!(exts[0]["name"], "siderolabs/hello");
    assert_eq!(exts[0]["digest"], lab.ext_digest.as_str());
    assert_eq!(exts[0]["description"], "Says hello.");
    let overlays = a.get_ok(&format!("/version/{VERSION}/overlays/official"));
    assert_eq!(overlays, b"[]\n");
    let pem = String::from_utf8(a.get_ok("/oci/cosign/signing-key.pub")).unwrap();
    assert_eq!(
        pem,
        cosign::SigningKey::from_seed(b"factory cache")
            .public_key()
            .to_pem()
    );

    // 20 requests at once for an asset nobody built: one build, the same bytes for all
    let path = format!("/image/{id}/{VERSION}/initramfs-amd64.xz");
    let bodies: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20).map(|_| s.spawn(|| a.get_ok(&path))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(a.metric("factory_builds_total"), 1, "{}", a.log_text());
    assert!(a.metric("factory_cache_misses_total") >= 1);
    // the same bytes as the imager CLI makes of the same profile
    let canonical = String::from_utf8(a.get_ok(&format!("/schematics/{id}"))).unwrap();
    let local = local_build(&lab, &lab.dir.path().join("local"), &id, &canonical);
    assert_eq!(
        sha256(&bodies[0]),
        sha256(&local),
        "factory and local build differ"
    );
    assert!(bodies[0].len() > 1 << 20);

    // instance B serves A's build from the registry, without building
    assert_eq!(b.get_ok(&path), bodies[0]);
    assert_eq!(b.metric("factory_builds_total"), 0);
    assert_eq!(b.metric("factory_cache_hits_total"), 1);
    assert_eq!(
        b.metric("factory_bytes_served_total"),
        bodies[0].len() as u64
    );
    // HEAD: the length, no body
    let r = agent().head(&b.url(&path)).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        bodies[0].len().to_string()
    );
    // the checksum and the Sigstore bundle next to the asset
    let sum = String::from_utf8(b.get_ok(&format!("{path}.sha256"))).unwrap();
    assert_eq!(sum, format!("{}  initramfs-amd64.xz\n", sha256(&bodies[0])));
    let asset = lab.dir.path().join("initramfs-amd64.xz");
    std::fs::write(&asset, &bodies[0]).unwrap();
    std::fs::write(
        lab.dir.path().join("initramfs-amd64.xz.sigstore.json"),
        b.get_ok(&format!("{path}.sigstore.json")),
    )
    .unwrap();
    std::fs::write(lab.dir.path().join("cache.pub"), &pem).unwrap();
    ok(e2e::imager()
        .arg("verify-blob")
        .arg(&asset)
        .arg("--key")
        .arg(lab.dir.path().join("cache.pub")));

    // a cache entry whose signature does not verify is not served: B builds it again
    let tags = lab.cache_tags();
    assert_eq!(tags.len(), 1, "{tags:?}");
    let entry = format!("{}/siderolabs/image-factory/cache", lab.host());
    let digest = e2e::registry::skopeo_digest(&format!("{entry}:{}", tags[0]), false);
    let forger = cosign::SigningKey::from_seed(b"not the cache key");
    push_signature(
        &lab.host(),
        "siderolabs/image-factory/cache",
        &digest,
        &[key_sig(&forger, &entry, &digest)],
    );
    assert_eq!(b.get_ok(&path), bodies[0]);
    assert_eq!(b.metric("factory_builds_total"), 1, "{}", b.log_text());
    assert!(b.metric("factory_cache_rejected_total") >= 1);
    assert!(b.log_text().contains("cache entry refused"));
    // and the rebuilt entry is signed again: A serves it as a hit
    let hits = a.metric("factory_cache_hits_total");
    assert_eq!(a.get_ok(&path), bodies[0]);
    assert_eq!(a.metric("factory_cache_hits_total"), hits + 1);
    assert_eq!(a.metric("factory_builds_total"), 1);

    // the PXE script points at the kernel and initramfs of the same schematic and version
    let script = String::from_utf8(a.get_ok(&format!("/pxe/{id}/{VERSION}/metal-amd64"))).unwrap();
    let base = a.url(&format!("/image/{id}/{VERSION}"));
    assert!(
        script.starts_with(&format!("#!ipxe\n\nimgfree\nkernel {base}/kernel-amd64 ")),
        "{script}"
    );
    for arg in [
        " console=ttyS0 ",
        " node_runtime.test_poweroff\n",
        " talos.environment=INSTALLER_META_BASE64=",
    ] {
        assert!(script.contains(arg), "{arg:?} missing from\n{script}");
    }
    assert!(
        script.contains(&format!("\ninitrd {base}/initramfs-amd64.xz\nboot\n")),
        "{script}"
    );

    // a signed entry moved under another key's tag is not served for that key: the
    // initramfs entry copied over the command line's tag is refused and the command line
    // built again
    let initramfs_hash = tags[0].clone();
    let now = lab.cache_tags();
    let cmdline_hash = now.iter().find(|t| **t != initramfs_hash).unwrap().clone();
    e2e::registry::skopeo_copy(
        &format!("{entry}:{initramfs_hash}"),
        &format!("{entry}:{cmdline_hash}"),
        &[
            e2e::registry::PRESERVE,
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ],
    );
    let rejected = a.metric("factory_cache_rejected_total");
    let builds = a.metric("factory_builds_total");
    let again = String::from_utf8(a.get_ok(&format!("/pxe/{id}/{VERSION}/metal-amd64"))).unwrap();
    assert_eq!(again, script);
    assert!(a.metric("factory_cache_rejected_total") > rejected);
    assert_eq!(a.metric("factory_builds_total"), builds + 1);
    assert!(
        a.log_text().contains("the entry is for"),
        "{}",
        a.log_text()
    );
}

/// Ends SIGTERM gracefully: exit status 0 and the stop line.
fn terminate(f: &mut Factory) {
    let pid = f.child.id().to_string();
    ok(Command::new("kill").args(["-TERM", &pid]));
    let start = Instant::now();
    loop {
        if let Some(st) = f.child.try_wait().unwrap() {
            assert!(st.success(), "{st}\n{}", f.log_text());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        f.log_text().contains("\"msg\":\"stopped\""),
        "{}",
        f.log_text()
    );
}

#[test]
fn a_build_killed_midway_leaves_no_cache_entry() {
    let lab = Lab::new();
    let mut c = Factory::start(&lab, "c", &[]);
    let id = c.schematic(SCHEMATIC);
    let path = format!("/image/{id}/{VERSION}/metal-amd64.iso");
    let before = lab.cache_tags();
    // the request runs in the background; the instance dies as soon as its build starts
    let url = c.url(&path);
    let bg = std::thread::spawn(move || agent().get(&url).call().map(|r| r.status().as_u16()));
    let start = Instant::now();
    while !c.log_text().contains("build started") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill();
    assert!(bg.join().unwrap().is_err(), "the request was answered");
    assert_eq!(
        lab.cache_tags(),
        before,
        "a killed build left a cache entry"
    );
    // a new instance builds it, once, and the entry is there afterwards
    let mut d = Factory::start(&lab, "d", &[]);
    let iso = d.get_ok(&path);
    assert_eq!(&iso[0x8001..0x8006], b"CD001");
    assert_eq!(d.metric("factory_builds_total"), 1);
    assert_eq!(lab.cache_tags().len(), before.len() + 1);
    terminate(&mut d);
}

/// QEMU's iPXE ROM takes the factory's PXE script over HTTP (DHCP boot file name), fetches
/// the kernel and initramfs from the factory, and the node boots to the ready line with the
/// schematic's kernel arguments and META.
#[test]
fn ipxe_boots_a_node_from_the_factory() {
    let lab = Lab::new();
    let f = Factory::start(&lab, "pxe", &[]);
    let id = f.schematic(SCHEMATIC);
    // warm the cache so that the guest's downloads do not wait for builds
    let script_path = format!("/pxe/{id}/{VERSION}/metal-amd64");
    f.get_ok(&script_path);
    f.get_ok(&format!("/image/{id}/{VERSION}/kernel-amd64"));
    f.get_ok(&format!("/image/{id}/{VERSION}/initramfs-amd64.xz"));
    let boot = format!(",bootfile=http://10.0.2.2:{}{script_path}", f.port);
    let m = qemu_harness::Machine {
        firmware: qemu_harness::Firmware::Bios,
        extra: [
            qemu_harness::user_nic("n0", &boot),
            vec!["-boot".into(), "n".into()],
        ]
        .concat(),
        ..Default::default()
    };
    let b = e2e::boot_to_ready(&m);
    assert!(b.powered_off, "the guest did not power off");
    let want = format!("0x0c:{}", sha256(b"factory-meta"));
    assert_eq!(
        qemu_harness::field(&b.line, "meta"),
        Some(want.as_str()),
        "{}",
        b.line
    );
    // the official extension, and the schematic's virtual extension naming the ID
    let want = format!("hello@1.0.0,schematic@{id}");
    assert_eq!(
        qemu_harness::field(&b.line, "extensions"),
        Some(want.as_str()),
        "{}",
        b.line
    );
    let ready = f.log_text();
    assert!(ready.contains("kernel-amd64"), "{ready}");
}

/// `/v2/<platform>-installer/<schematic>:<version>`: the index is built on the first pull
/// (one installer image per architecture of the installer-base, through the asset cache),
/// signed, and served to `skopeo` and to the imager as its base installer image.
#[test]
fn installer_images_from_the_registry_frontend() {
    let lab = Lab::new();
    let f = Factory::start(&lab, "v2", &[]);
    let id = f.schematic(SCHEMATIC);
    let reference = format!("127.0.0.1:{}/metal-installer/{id}:{VERSION}", f.port);
    let out = lab.dir.path().join("pulled");
    let o = run(
        skopeo()
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}", out.display())),
        None,
    );
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        f.log_text()
    );
    let raw = e2e::registry::skopeo_inspect_raw(&reference, false);
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(f.metric("factory_builds_total"), 1, "{}", f.log_text());
    // the index in the internal repository carries the cache key's signature
    let cache_pub = lab.dir.path().join("cache.pub");
    std::fs::write(
        &cache_pub,
        cosign::SigningKey::from_seed(b"factory cache")
            .public_key()
            .to_pem(),
    )
    .unwrap();
    let policy = lab.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "images:\n  - glob: \"**\"\n    key: {}\n",
            cache_pub.display()
        ),
    )
    .unwrap();
    ok(e2e::imager()
        .env("IMAGER_CACHE_DIR", lab.dir.path().join("imager-cache"))
        .args(["verify", "--insecure", "--signature-policy"])
        .arg(&policy)
        .arg(format!(
            "{}/siderolabs/image-factory/installer/metal-installer/{id}:{VERSION}",
            lab.host()
        )));
    let unknown = agent()
        .get(&f.url(&format!("/v2/metal-installer/{id}/manifests/v9.9.9")))
        .call()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // the per-arch installer tarball is the asset of /image/…, not built again
    let (s, _) = f.get(&format!("/image/{id}/{VERSION}/metal-installer-amd64.tar"));
    assert_eq!(s, 200);
    assert_eq!(f.metric("factory_builds_total"), 1);
    // the imager builds from it as from any base installer image
    let iso_dir = lab.dir.path().join("from-factory");
    let o = run(
        e2e::imager()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("IMAGER_CACHE_DIR", lab.dir.path().join("imager-cache"))
            .args([
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                "iso",
                "--insecure",
            ])
            .args(["--base-installer-image", &reference, "--output"])
            .arg(&iso_dir),
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = e2e::dir_entries(&iso_dir);
    assert!(
        files.len() == 1 && files[0].starts_with("metal-amd64.iso"),
        "{files:?}"
    );
    // a second pull is served from the signed index
    e2e::registry::skopeo_inspect_raw(&reference, false);
    assert_eq!(f.metric("factory_builds_total"), 1);
    assert!(!f.log_text().contains("installer index refused"));
}

/// The wizard in headless Chromium: choose the version, an extension and kernel arguments,
/// submit, read the schematic ID (the API's for the same schematic), follow the download
/// links (the same bytes as the API serves).
#[test]
fn the_wizard_in_a_browser() {
    let lab = Lab::new();
    let f = Factory::start(&lab, "wizard", &[]);
    let downloads = tempfile::tempdir().unwrap();
    let browser = e2e::webdriver::Browser::start(downloads.path());
    browser.go(&f.url("/"));
    assert_eq!(
        browser.attribute("#version option[selected]", "value"),
        VERSION
    );
    browser.click("#choose-version");
    browser.click("#ext-siderolabs-hello");
    browser.type_into("#args", "console=ttyS0 noapic");
    browser.click("#arch-amd64");
    browser.click("#create");
    let id = browser.text("#schematic-id");
    let api = f.schematic(
        "customization:\n  extraKernelArgs: [console=ttyS0, noapic]\n  systemExtensions:\n    \
         officialExtensions: [siderolabs/hello]\n",
    );
    assert_eq!(id, api, "{}", browser.source());
    assert_eq!(
        browser.text("#installer-image"),
        format!("127.0.0.1:{}/metal-installer/{id}:{VERSION}", f.port)
    );
    assert_eq!(
        browser.text("#pxe-url"),
        f.url(&format!("/pxe/{id}/{VERSION}/metal-amd64"))
    );
    // following the download links saves the API's bytes
    let cmdline_url = browser.attribute("#link-kernel-command-line", "href");
    assert_eq!(
        cmdline_url,
        f.url(&format!("/image/{id}/{VERSION}/cmdline-metal-amd64"))
    );
    for (link, name) in [
        ("#link-kernel-command-line", "cmdline-metal-amd64"),
        ("#link-initramfs", "initramfs-amd64.xz"),
    ] {
        browser.click(link);
        let saved = downloads.path().join(name);
        let start = Instant::now();
        while !saved.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} was not downloaded: {:?}",
                e2e::dir_entries(downloads.path())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            f.get_ok(&format!("/image/{id}/{VERSION}/{name}")),
            "{name}"
        );
    }
    assert!(
        std::fs::read_to_string(downloads.path().join("cmdline-metal-amd64"))
            .unwrap()
            .contains(" noapic")
    );
}

/// With `secureBoot` keys the factory builds `-secureboot` assets signed with them, serves
/// the certificate, and its SecureBoot PXE script boots the UKI with the command line given.
#[test]
fn secureboot_assets_are_signed_with_the_configured_keys() {
    let lab = Lab::new();
    let (key, cert) = e2e::other_key_and_cert(&lab.dir.path().join("sb"));
    let f = Factory::start(
        &lab,
        "sb",
        &[
            ("IF_SECUREBOOT_ENABLED", "true"),
            ("IF_SECUREBOOT_FILE_SIGNINGKEYPATH", key.to_str().unwrap()),
            ("IF_SECUREBOOT_FILE_SIGNINGCERTPATH", cert.to_str().unwrap()),
            ("IF_SECUREBOOT_FILE_PCRKEYPATH", key.to_str().unwrap()),
        ],
    );
    assert_eq!(
        f.get_ok("/secureboot/signing-cert.pem"),
        std::fs::read(&cert).unwrap()
    );
    let id = f.schematic("customization:\n  extraKernelArgs: [console=ttyS0]\n");
    let uki = lab.dir.path().join("uki.efi");
    std::fs::write(
        &uki,
        f.get_ok(&format!(
            "/image/{id}/{VERSION}/metal-amd64-secureboot-uki.efi"
        )),
    )
    .unwrap();
    assert!(e2e::sbverify(&uki, &cert), "the UKI does not verify");
    let script =
        String::from_utf8(f.get_ok(&format!("/pxe/{id}/{VERSION}/metal-amd64-secureboot")))
            .unwrap();
    let base = f.url(&format!("/image/{id}/{VERSION}"));
    assert!(
        script.starts_with(&format!(
            "#!ipxe\n\nimgfree\nkernel {base}/metal-amd64-secureboot-uki.efi talos.platform=metal "
        )),
        "{script}"
    );
    assert!(
        script.contains(" console=ttyS0 ")
            && script.ends_with("\nboot\n")
            && !script.contains("initrd"),
        "{script}"
    );
    // a factory without keys says so
    let plain = Factory::start(&lab, "plain", &[]);
    let (s, body) = plain.get(&format!(
        "/image/{id}/{VERSION}/metal-amd64-secureboot-uki.efi"
    ));
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("secureBoot"));
    assert_eq!(plain.get("/secureboot/signing-cert.pem").0, 404);
}

/// Keyless input verification (`containerSignature.subjectRegExp` / `issuer` against a pinned
/// trusted root): inputs signed by an identity the pattern accepts build; the same inputs
/// signed by another identity are refused, naming it.
#[test]
fn keyless_inputs_verify_and_another_identity_is_refused() {
    let lab = Lab::signed(Some("release@example.com"));
    let f = Factory::start(&lab, "keyless", &[]);
    let id = f.schematic(SCHEMATIC);
    let path = format!("/image/{id}/{VERSION}/initramfs-amd64.xz");
    assert!(f.get_ok(&path).len() > 1 << 20);
    assert!(
        f.log_text().contains("release@example.com"),
        "{}",
        f.log_text()
    );

    let evil = Lab::signed(Some("mallory@evil.test"));
    let g = Factory::start(&evil, "keyless-evil", &[]);
    let id = g.schematic(SCHEMATIC);
    let (s, body) = g.get(&format!("/image/{id}/{VERSION}/initramfs-amd64.xz"));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("mallory@evil.test"), "{body}");
    assert_eq!(g.metric("factory_builds_total"), 0);
}

/// A schematic with an overlay (a board from the version's overlay catalog): the disk image
/// is the board's — GRUB layout, the overlay's files in the ESP with the schematic's overlay
/// options, the board's u-boot.
#[test]
fn board_images_with_an_official_overlay() {
    let lab = Lab::new();
    lab.board();
    let f = Factory::start(&lab, "board", &[]);
    let overlays: serde_json::Value =
        serde_json::from_slice(&f.get_ok(&format!("/version/{BOARD_VERSION}/overlays/official")))
            .unwrap();
    assert_eq!(overlays[0]["name"], "rpi_generic", "{overlays}");
    assert_eq!(overlays[0]["image"], "siderolabs/sbc-raspberrypi");
    let id = f.schematic(
        "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  options:\n    \
         configTxtAppend: dtparam=audio=on\ncustomization:\n  extraKernelArgs: [node_runtime.test_poweroff]\n",
    );
    let xz = lab.dir.path().join("board.raw.xz");
    std::fs::write(
        &xz,
        f.get_ok(&format!("/image/{id}/{BOARD_VERSION}/metal-arm64.raw.xz")),
    )
    .unwrap();
    let raw = lab.dir.path().join("board.raw");
    e2e::decompress(&xz, &raw);
    let p = ok(Command::new("sgdisk").arg("-p").arg(&raw));
    assert!(p.contains("BOOT"), "{p}");
    let esp = lab.dir.path().join("esp");
    std::fs::create_dir_all(&esp).unwrap();
    let files = e2e::esp_files(&raw, &esp);
    let get = |n: &str| {
        files
            .iter()
            .find(|f| f.0 == n)
            .unwrap_or_else(|| panic!("{n} not in the ESP"))
            .1
            .clone()
    };
    assert_eq!(
        get("config.txt"),
        b"arm_64bit=1\nenable_uart=1\nkernel=u-boot.bin\ndtparam=audio=on\n"
    );
    // it boots on the Raspberry Pi's u-boot (QEMU raspi3b), firmware taken from the image,
    // to the ready line with the schematic's extension
    let b = e2e::boot_raspi(&raw, &files, lab.dir.path());
    let want = format!("schematic@{id}");
    assert_eq!(
        qemu_harness::field(&b.line, "extensions"),
        Some(want.as_str()),
        "{}",
        b.line
    );
    // an overlay that is not in the catalog is a 400
    let other = f.schematic("overlay:\n  image: siderolabs/sbc-nope\n  name: x\n");
    let (s, body) = f.get(&format!(
        "/image/{other}/{BOARD_VERSION}/metal-arm64.raw.xz"
    ));
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    // the amd64-only version has no arm64 base: 404
    let (s, _) = f.get(&format!("/image/{id}/{VERSION}/metal-arm64.raw.xz"));
    assert_eq!(s, 404);
}
