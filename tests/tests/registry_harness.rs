//! The registry test harness itself: `docker-registry` starts (plain and TLS with a test CA),
//! skopeo pushes an OCI layout with its digests preserved (layer annotations included), and
//! the fault proxy is transparent when idle, injects each fault as documented (then serves
//! intact after `times`), and enforces Basic and Bearer (token) auth, which skopeo passes with
//! `--creds`.
#![allow(clippy::unwrap_used)]

use e2e::faultproxy::{Auth, Fault, FaultProxy};
use e2e::fixture::Tar;
use e2e::registry::{
    PRESERVE, Registry, skopeo, skopeo_copy, skopeo_digest, skopeo_inspect_raw,
    skopeo_inspect_raw_with, test_ca,
};
use e2e::{run, sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A one-image OCI layout written by the test.
struct Layout {
    dir: tempfile::TempDir,
    manifest: Vec<u8>,
    manifest_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

impl Layout {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn oci_ref(&self) -> String {
        format!("oci:{}:v1", self.path().display())
    }
}

fn blob(dir: &Path, data: &[u8]) -> String {
    let hex = sha256(data);
    std::fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// One uncompressed layer (a 64 KiB file, so "half the body" is meaningful) with annotations,
/// a config, a manifest with annotations, `index.json` (ref name `v1`) and `oci-layout`.
fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("blobs/sha256")).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer = Tar::new().file("data.bin", 0o644, &data).finish();
    let layer_digest = blob(d, &layer);
    let diff_id = layer_digest.clone();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = blob(d, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{},"annotations":{{"org.example.layer":"data","org.opencontainers.image.title":"data.tar"}}}}],"annotations":{{"org.example.manifest":"harness"}}}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let manifest_digest = blob(d, &manifest);
    std::fs::write(
        d.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    std::fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Layout {
        dir,
        manifest,
        manifest_digest,
        layer,
        layer_digest,
    }
}

/// A registry with the layout pushed (digests preserved) to `harness/img:v1`.
fn pushed() -> (Registry, Layout) {
    let reg = Registry::start();
    let l = layout();
    skopeo_copy(
        &l.oci_ref(),
        &format!("docker://{}/harness/img:v1", reg.host()),
        &[PRESERVE, "--dest-tls-verify=false"],
    );
    (reg, l)
}

/// What a raw HTTP/1.1 exchange gave: every byte received until close, timeout or error.
struct Raw {
    bytes: Vec<u8>,
    /// The read error that ended it, if not a clean EOF.
    error: Option<ErrorKind>,
}

impl Raw {
    fn split(&self) -> (String, &[u8]) {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no header end in {:?}",
                    String::from_utf8_lossy(&self.bytes)
                )
            });
        (
            String::from_utf8_lossy(&self.bytes[..end]).into_owned(),
            &self.bytes[end + 4..],
        )
    }

    fn status(&self) -> u16 {
        self.split().0[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.split().0.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn body(&self) -> &[u8] {
        self.split().1
    }
}

/// Sends one request (`Connection: close`) and reads until close, with a 2 s read timeout.
fn request(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" || method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let error = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.kind()),
        }
    };
    Raw { bytes, error }
}

fn get(host: &str, path: &str) -> Raw {
    request(host, "GET", path, &[])
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    r
}

#[test]
fn push_preserves_digests_and_proxy_is_transparent() {
    let (reg, l) = timed("start + push", pushed);
    let direct = format!("docker://{}/harness/img:v1", reg.host());
    // the registry holds the layout's manifest byte for byte (layer annotations included)
    let raw = skopeo_inspect_raw(&direct, false);
    assert_eq!(
        raw,
        l.manifest,
        "manifest changed on push:\n{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(String::from_utf8_lossy(&raw).contains(r#""org.example.layer":"data""#));
    assert_eq!(skopeo_digest(&direct, false), l.manifest_digest);
    // distribution 2.8 wants the OCI type in Accept, else 404 (no conversion)
    let m = request(
        &reg.host(),
        "GET",
        "/v2/harness/img/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
    );
    assert_eq!(m.status(), 200);
    assert_eq!(
        m.header("Docker-Content-Digest").as_deref(),
        Some(l.manifest_digest.as_str())
    );
    assert_eq!(
        get(&reg.host(), "/v2/harness/img/manifests/v1").status(),
        404
    );

    // through the idle proxy: identical bytes, and the log shows the requests
    let proxy = FaultProxy::start(&reg.host());
    let via = format!("docker://{}/harness/img:v1", proxy.host());
    assert_eq!(skopeo_inspect_raw(&via, false), raw);
    let log = proxy.requests();
    assert!(
        log.contains(&"GET /v2/harness/img/manifests/v1".to_string()),
        "{log:?}"
    );
    proxy.clear_log();
    assert!(proxy.requests().is_empty());

    // pushing through the proxy exercises POST/PATCH/PUT uploads and the Location rewrite
    let up = request(
        &proxy.host(),
        "POST",
        "/v2/harness/other/blobs/uploads/",
        &[],
    );
    assert_eq!(up.status(), 202);
    let loc = up.header("Location").unwrap();
    assert!(
        loc.starts_with(&format!(
            "http://{}/v2/harness/other/blobs/uploads/",
            proxy.host()
        )),
        "{loc}"
    );
    skopeo_copy(
        &l.oci_ref(),
        &format!("docker://{}/harness/viaproxy:v1", proxy.host()),
        &[PRESERVE, "--dest-tls-verify=false"],
    );
    assert_eq!(
        skopeo_digest(
            &format!("docker://{}/harness/viaproxy:v1", reg.host()),
            false
        ),
        l.manifest_digest
    );
    let log = proxy.requests();
    assert!(
        log.iter()
            .any(|r| r.starts_with("PUT /v2/harness/viaproxy/blobs/uploads/")),
        "{log:?}"
    );
    assert!(
        log.contains(&"PUT /v2/harness/viaproxy/manifests/v1".to_string()),
        "{log:?}"
    );
    assert_eq!(proxy.fault_hits(), 0);
}

#[test]
fn each_fault_on_a_blob_get() {
    let (reg, l) = timed("start + push", pushed);
    let proxy = FaultProxy::start(&reg.host());
    let path = format!("/v2/harness/img/blobs/{}", l.layer_digest);
    let full = l.layer.len();
    let intact = |what: &str| {
        let r = get(&proxy.host(), &path);
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(r.body(), &l.layer[..], "{what}: blob not intact");
    };
    intact("no fault");
    let pc = || l.layer_digest.clone();

    // corrupt: same length, different sha256, twice, then intact
    proxy.set_fault(Fault::CorruptBody {
        path_contains: pc(),
        times: 2,
    });
    for _ in 0..2 {
        let r = get(&proxy.host(), &path);
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("Content-Length"), Some(full.to_string()));
        assert_eq!(r.body().len(), full);
        assert_ne!(format!("sha256:{}", sha256(r.body())), l.layer_digest);
    }
    intact("after corrupt");
    assert_eq!(proxy.fault_hits(), 2);

    // truncate: the full Content-Length, half the body, close
    proxy.set_fault(Fault::Truncate {
        path_contains: pc(),
        times: 1,
    });
    let r = get(&proxy.host(), &path);
    assert_eq!(r.header("Content-Length"), Some(full.to_string()));
    assert!(r.body().len() < full, "{} bytes", r.body().len());
    assert_eq!(r.body(), &l.layer[..full / 2]);
    intact("after truncate");

    // status: answered by the proxy
    for status in [500, 503, 429] {
        proxy.set_fault(Fault::Status {
            path_contains: pc(),
            status,
            times: 1,
        });
        let r = get(&proxy.host(), &path);
        assert_eq!(r.status(), status);
        intact("after status");
    }

    // stall: headers and half the body, then silence (the 2 s read timeout fires)
    proxy.set_fault(Fault::Stall {
        path_contains: pc(),
        times: 1,
    });
    let t = Instant::now();
    let r = get(&proxy.host(), &path);
    assert!(
        matches!(r.error, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{:?}",
        r.error
    );
    assert!(t.elapsed() >= Duration::from_millis(1900));
    assert_eq!(r.status(), 200);
    assert_eq!(r.body(), &l.layer[..full / 2]);
    intact("after stall");

    // reset: no byte at all
    proxy.set_fault(Fault::Reset {
        path_contains: pc(),
        times: 1,
    });
    let r = get(&proxy.host(), &path);
    assert!(r.bytes.is_empty(), "{} bytes", r.bytes.len());
    assert!(
        matches!(r.error, None | Some(ErrorKind::ConnectionReset)),
        "{:?}",
        r.error
    );
    intact("after reset");

    // a fault for another path, or on HEAD, does not fire
    proxy.set_fault(Fault::Reset {
        path_contains: "/manifests/".into(),
        times: 1,
    });
    intact("other path");
    let h = request(&proxy.host(), "HEAD", &path, &[]);
    assert_eq!(h.status(), 200);
    assert_eq!(h.header("Content-Length"), Some(full.to_string()));
    assert_eq!(proxy.fault_hits(), 2 + 1 + 3 + 1 + 1);

    // skopeo sees the injected faults too (fails on a reset manifest GET, the fault is used)
    let out = run(
        skopeo().args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/harness/img:v1", proxy.host()),
        ]),
        None,
    );
    assert!(!out.status.success());
    assert_eq!(proxy.fault_hits(), 9);
}

#[test]
fn basic_auth() {
    let (reg, l) = timed("start + push", pushed);
    let proxy = FaultProxy::start(&reg.host());
    proxy.set_auth(Auth::Basic {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let r = get(&proxy.host(), "/v2/");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.header("WWW-Authenticate").as_deref(),
        Some(r#"Basic realm="test""#)
    );
    let wrong = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:nope")
    );
    let right = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret")
    );
    assert_eq!(
        request(&proxy.host(), "GET", "/v2/", &[("Authorization", &wrong)]).status(),
        401
    );
    let m = request(
        &proxy.host(),
        "GET",
        "/v2/harness/img/manifests/v1",
        &[("Authorization", &right), ("Accept", OCI_MANIFEST)],
    );
    assert_eq!(m.status(), 200);
    assert_eq!(m.body(), &l.manifest[..]);

    let via = format!("docker://{}/harness/img:v1", proxy.host());
    let out = run(
        skopeo().args(["inspect", "--raw", "--tls-verify=false", &via]),
        None,
    );
    assert!(!out.status.success(), "no credentials must fail");
    assert_eq!(
        skopeo_inspect_raw_with(&via, &["--tls-verify=false", "--creds", "alice:s3cret"]),
        l.manifest
    );
}

#[test]
fn bearer_auth() {
    let (reg, l) = timed("start + push", pushed);
    let proxy = FaultProxy::start(&reg.host());
    proxy.set_auth(Auth::Bearer {
        user: "bob".into(),
        pass: "hunter2".into(),
    });
    let h = proxy.host();
    let realm = format!(r#"Bearer realm="http://{h}/token",service="test-registry""#);
    let r = get(&h, "/v2/");
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("WWW-Authenticate"), Some(realm.clone()));
    let r = get(&h, "/v2/harness/img/manifests/v1");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(format!(r#"{realm},scope="repository:harness/img:pull""#))
    );
    let r = request(&h, "POST", "/v2/harness/img/blobs/uploads/", &[]);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(format!(
            r#"{realm},scope="repository:harness/img:pull,push""#
        ))
    );

    let token_path = "/token?service=test-registry&scope=repository:harness/img:pull";
    assert_eq!(get(&h, token_path).status(), 401);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:hunter2")
    );
    let t = request(&h, "GET", token_path, &[("Authorization", &basic)]);
    assert_eq!(t.status(), 200);
    let body = String::from_utf8_lossy(t.body()).into_owned();
    let token = body
        .split(r#""token":""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("{body}"))
        .to_string();
    assert!(
        body.contains(&format!(r#""access_token":"{token}""#)),
        "{body}"
    );
    assert!(body.contains(r#""expires_in":300"#), "{body}");

    let bearer = format!("Bearer {token}");
    let m = request(
        &h,
        "GET",
        "/v2/harness/img/manifests/v1",
        &[("Authorization", &bearer), ("Accept", OCI_MANIFEST)],
    );
    assert_eq!(m.status(), 200);
    assert_eq!(m.body(), &l.manifest[..]);
    let bogus = request(
        &h,
        "GET",
        "/v2/",
        &[("Authorization", "Bearer e2e-token-999")],
    );
    assert_eq!(bogus.status(), 401);

    // skopeo does the token flow itself, for pulls and pushes
    let via = format!("docker://{h}/harness/img:v1");
    assert_eq!(
        skopeo_inspect_raw_with(&via, &["--tls-verify=false", "--creds", "bob:hunter2"]),
        l.manifest
    );
    proxy.clear_log();
    skopeo_copy(
        &l.oci_ref(),
        &format!("docker://{h}/harness/pushed:v1"),
        &[
            PRESERVE,
            "--dest-tls-verify=false",
            "--dest-creds",
            "bob:hunter2",
        ],
    );
    assert!(
        proxy.requests().iter().any(|r| r == "GET /token"),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        skopeo_digest(&format!("docker://{}/harness/pushed:v1", reg.host()), false),
        l.manifest_digest
    );
}

#[test]
fn tls_registry_with_test_ca() {
    let ca = timed("test_ca", test_ca);
    let reg = timed("start_tls", || {
        Registry::start_tls(&ca.cert_pem, &ca.key_pem)
    });
    assert!(reg.is_tls());
    let l = layout();
    let cert_dir = ca.cert_dir.to_str().unwrap();
    let dst = format!("docker://{}/harness/img:v1", reg.host());
    skopeo_copy(
        &l.oci_ref(),
        &dst,
        &[
            PRESERVE,
            "--dest-tls-verify=true",
            "--dest-cert-dir",
            cert_dir,
        ],
    );
    assert_eq!(
        skopeo_inspect_raw_with(&dst, &["--tls-verify=true", "--cert-dir", cert_dir]),
        l.manifest
    );
    // the same through DNS:localhost
    let localhost = format!("docker://localhost:{}/harness/img:v1", reg.addr().port());
    assert_eq!(
        skopeo_inspect_raw_with(&localhost, &["--cert-dir", cert_dir]),
        l.manifest
    );
    // without the CA the certificate is refused
    let out = run(
        skopeo().args(["inspect", "--raw", "--tls-verify=true", &dst]),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
