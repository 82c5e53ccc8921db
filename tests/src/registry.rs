//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with
//! a free port and its storage in a tempdir, a throwaway CA made with the `openssl` CLI for the
//! TLS variant, and `skopeo` helpers.
//!
//! Facts about distribution 2.8 worth knowing when writing tests against it:
//!
//! - it stores and serves OCI image manifests and indexes byte for byte, but a manifest `GET`
//!   must send an `Accept` header naming the OCI media type: without it the answer is
//!   `404 MANIFEST_UNKNOWN` ("OCI manifest found, but accept header does not support OCI
//!   manifests"), not a converted manifest;
//! - upload `Location` headers are absolute URLs built from the request's `Host` header
//!   (`http://127.0.0.1:PORT/v2/<name>/blobs/uploads/<uuid>?_state=…`);
//! - it writes an access log line per request to its log even at log level `warn`.
//!
//! Pushing an OCI layout with skopeo 1.9 without changing any digest needs
//! `--preserve-digests` (see [`PRESERVE`]): without it skopeo's `docker://` destination
//! recompresses uncompressed (`…layer.v1.tar`) layers with gzip, which rewrites the manifest
//! and drops the layers' `annotations`. With it, the registry holds the layout's manifest
//! bytes unchanged (layer annotations included) under the layout's manifest digest; no
//! `--format` is needed (the manifest type of an OCI source is kept).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `skopeo copy` flag that keeps every digest of the source (no recompression, no manifest
/// conversion).
pub const PRESERVE: &str = "--preserve-digests";

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    tls: bool,
}

impl Registry {
    /// A plain-HTTP registry (no auth, deletes enabled).
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// A registry serving HTTPS with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Registry {
        Self::launch(Some((cert, key)))
    }

    fn launch(tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("e2e-registry-")
            .tempdir()
            .unwrap();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut config = format!(
                "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: e2e-test-secret
",
                dir.path().join("data").display()
            );
            if let Some((cert, key)) = tls {
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting docker-registry: {e}"));
            match wait_ready(&mut child, port, tls.is_some(), &log_path) {
                Ok(()) => {
                    return Registry {
                        child,
                        port,
                        dir,
                        tls: tls.is_some(),
                    };
                }
                Err(retry) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = tail(&log_path);
                    assert!(
                        retry,
                        "docker-registry did not answer GET /v2/ within 20 s (or exited):\n{last_log}"
                    );
                    // the port was taken between our probe and the registry's bind: retry
                }
            }
        }
        panic!("docker-registry could not bind a port after 5 attempts:\n{last_log}");
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The registry's tempdir (`config.yml`, `registry.log`, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 60 lines of the registry's log (for failure messages).
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("registry.log"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits for the registry to answer `GET /v2/`. `Err(true)`: it exited because the port was
/// taken (retry on another); `Err(false)`: it exited otherwise or timed out (20 s).
fn wait_ready(child: &mut Child, port: u16, tls: bool, log: &Path) -> Result<(), bool> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Err(tail(log).contains("address already in use"));
        }
        if probe(port, tls) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(false)
}

/// One `GET /v2/` in plain HTTP. A TLS listener (Go's) answers plain HTTP with
/// `400 … Client sent an HTTP request to an HTTPS server`, which proves it is serving (a bad
/// certificate or key makes it exit at start instead).
fn probe(port: u16, tls: bool) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    if tls {
        text.contains("HTTPS server")
    } else {
        text.starts_with("HTTP/1.1 200")
    }
}

/// A throwaway CA and a server certificate signed by it (EC P-256, valid 1 day).
pub struct TestCa {
    /// Holds everything below.
    pub dir: TempDir,
    /// The CA certificate (PEM).
    pub ca_pem: PathBuf,
    /// The server certificate (PEM) for `IP:127.0.0.1`, `IP:10.0.2.2` (the host as QEMU's
    /// user network shows it to guests) and `DNS:localhost`.
    pub cert_pem: PathBuf,
    /// The server certificate's key (PEM, PKCS#8).
    pub key_pem: PathBuf,
    /// A directory holding only the CA as `ca.crt`, for skopeo's `--cert-dir`,
    /// `--src-cert-dir` and `--dest-cert-dir` (which read CAs from `*.crt` and client
    /// certificate pairs from `*.cert`/`*.key`).
    pub cert_dir: PathBuf,
}

/// Makes a [`TestCa`] with the `openssl` CLI: a CA (`CA:TRUE`, keyCertSign) and a server
/// certificate with subjectAltName `IP:127.0.0.1, IP:10.0.2.2, DNS:localhost`, serverAuth EKU and
/// `CA:FALSE`.
pub fn test_ca() -> TestCa {
    let dir = tempfile::Builder::new()
        .prefix("e2e-ca-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        crate::ok(Command::new("openssl").current_dir(d).args(args));
    };
    let genkey = |out: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ])
    };
    genkey("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "1",
        "-subj",
        "/CN=e2e test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "ca.pem",
    ]);
    genkey("key.pem");
    openssl(&[
        "req",
        "-new",
        "-key",
        "key.pem",
        "-subj",
        "/CN=localhost",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,IP:10.0.2.2,DNS:localhost\n\
         extendedKeyUsage=serverAuth\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "1",
        "-sha256",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    let cert_dir = d.join("certs.d");
    std::fs::create_dir(&cert_dir).unwrap();
    std::fs::copy(d.join("ca.pem"), cert_dir.join("ca.crt")).unwrap();
    TestCa {
        ca_pem: d.join("ca.pem"),
        cert_pem: d.join("cert.pem"),
        key_pem: d.join("key.pem"),
        cert_dir,
        dir,
    }
}

/// A `skopeo` command with `--insecure-policy` (no signature policy file needed).
pub fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// `docker://` prepended to a bare `host[:port]/repo:tag`; references with a transport
/// (`docker://`, `oci:`, `dir:`, `oci-archive:`, `docker-archive:`) are kept.
fn with_transport(reference: &str) -> String {
    const TRANSPORTS: [&str; 5] = [
        "docker://",
        "oci:",
        "dir:",
        "oci-archive:",
        "docker-archive:",
    ];
    if TRANSPORTS.iter().any(|t| reference.starts_with(t)) {
        reference.to_string()
    } else {
        format!("docker://{reference}")
    }
}

/// `skopeo copy <extra…> src dst`, panicking with skopeo's stderr on failure. `extra` is where
/// `--dest-tls-verify=false` (plain-HTTP destination), `--src-tls-verify=false` (plain-HTTP
/// source), [`PRESERVE`], `--dest-creds user:pass`, `--dest-cert-dir DIR` go. References
/// without a transport get `docker://`.
pub fn skopeo_copy(src: &str, dst: &str, extra: &[&str]) {
    crate::ok(
        skopeo()
            .arg("copy")
            .args(extra)
            .arg(with_transport(src))
            .arg(with_transport(dst)),
    );
}

/// `skopeo inspect --raw --tls-verify=<tls_verify> <reference>`: the manifest bytes as stored.
pub fn skopeo_inspect_raw(reference: &str, tls_verify: bool) -> Vec<u8> {
    skopeo_inspect_raw_with(reference, &[&format!("--tls-verify={tls_verify}")])
}

/// `skopeo inspect --raw <extra…> <reference>` (e.g. `--creds`, `--cert-dir`), panicking with
/// skopeo's stderr on failure.
pub fn skopeo_inspect_raw_with(reference: &str, extra: &[&str]) -> Vec<u8> {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"])
        .args(extra)
        .arg(with_transport(reference));
    let desc = format!("{cmd:?}");
    let out = crate::run(&mut cmd, None);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// "sha256:<hex>" of the raw manifest at `reference` (see [`skopeo_inspect_raw`]).
pub fn skopeo_digest(reference: &str, tls_verify: bool) -> String {
    format!(
        "sha256:{}",
        crate::sha256(&skopeo_inspect_raw(reference, tls_verify))
    )
}

/// Pushes the OCI layout at `layout` to `dst` (plain HTTP, digests preserved); the
/// manifest digest in the registry.
pub fn push_layout(layout: &Path, dst: &str) -> String {
    skopeo_copy(
        &format!("oci:{}", layout.display()),
        &format!("docker://{dst}"),
        &[PRESERVE, "--dest-tls-verify=false"],
    );
    skopeo_digest(&format!("docker://{dst}"), false)
}

/// Pushes a cosign signature image for `digest` of `repo` (tag `sha256-<hex>.sig`) holding
/// one layer per `(payload, annotations)`.
pub fn push_signature(
    host: &str,
    repo: &str,
    digest: &str,
    sigs: &[(Vec<u8>, BTreeMap<String, String>)],
) {
    let d = tempfile::tempdir().unwrap();
    let blobs = d.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let h = crate::sha256(data);
        std::fs::write(blobs.join(&h), data).unwrap();
        (format!("sha256:{h}"), data.len())
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (payload, ann) in sigs {
        let (pd, ps) = put(payload);
        diff_ids.push(pd.clone());
        layers.push(serde_json::json!({
            "mediaType": cosign::SIMPLESIGNING_MEDIA_TYPE,
            "digest": pd, "size": ps, "annotations": ann,
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let (cd, cs) = put(&config);
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))
    .unwrap();
    let (md, ms) = put(&m);
    std::fs::write(
        d.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        d.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}],
        }))
        .unwrap(),
    )
    .unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    push_layout(d.path(), &format!("{host}/{repo}:sha256-{hex}.sig"));
}

/// A cosign signature of `digest` in repository `name` by `key`: payload and annotations.
pub fn key_sig(
    key: &cosign::SigningKey,
    name: &str,
    digest: &str,
) -> (Vec<u8>, BTreeMap<String, String>) {
    let payload = cosign::simple_signing_payload(name, digest);
    let ann = cosign::sign_payload(key, &payload);
    (payload, ann)
}
