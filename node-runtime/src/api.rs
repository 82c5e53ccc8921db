//! The maintenance API (docs/formats/api.md): HTTPS with JSON on port 50000, served only
//! while the node waits for its configuration.
//!
//! **In maintenance, insecure by design, as Talos's maintenance mode is**: the certificate is
//! generated on the node at boot (ECDSA P-256, self-signed; its SHA-256 fingerprint is
//! printed on the console for those who check it), and no client certificate is asked for.
//! Anyone who reaches the port can send a configuration; the node accepts one and installs
//! it. **On an installed node whose configuration has `machine.ca`**, the API requires mutual
//! TLS: the node's certificate is issued by that CA at boot (names: its addresses,
//! `localhost`, its host name), and a client must present a certificate the CA issued.
//!
//! In: requests (`GET /v1/version`, `GET /v1/meta`, `POST /v1/apply-config` with the YAML as
//! body, `POST /v1/reboot`), bounded: 16 connections at once, a 16 KiB request head, a 1 MiB
//! body, 10 s per read. Out: JSON responses, one `api …` console line per request, and valid
//! configurations handed to the provisioning loop ([`crate::provision`]). A configuration that
//! does not parse goes back to the sender as a 400 with the error; the node stays in
//! maintenance.

use crate::config;
use crate::console::say;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// The port (Talos's apid).
pub const PORT: u16 = 50000;
const MAX_CONNECTIONS: usize = 16;
const MAX_HEAD: usize = 16 << 10;
/// Bound on one connection, from accept to the answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// A configuration that arrived, with its source (`api`, `url`, `embedded`).
#[derive(Debug)]
pub struct Incoming {
    /// Where it came from.
    pub source: String,
    /// The parsed configuration.
    pub config: config::MachineConfig,
}

/// What the handlers read.
#[derive(Debug)]
pub struct State {
    /// The booted version (`unknown` off an ISO or PXE).
    pub version: String,
    /// META values as read at boot.
    pub meta: crate::meta::Values,
    /// Where accepted configurations go (maintenance only).
    pub tx: Option<mpsc::Sender<Incoming>>,
    /// The configuration's CA: the authenticated API of an installed node.
    pub ca: Option<config::Ca>,
    /// The installed disk (the authenticated API's META and reset calls).
    pub disk: Option<String>,
    /// The installed node's stored configuration (mirrors and policy for upgrades).
    pub config: Option<config::MachineConfig>,
}

/// Bound on what `logs` returns: the end of the log.
const LOG_TAIL: u64 = 256 << 10;
/// Bound on what `dmesg` returns.
const DMESG_MAX: usize = 4 << 20;

/// The end of a service's log file.
fn log_tail(id: &str) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let path = std::path::Path::new(crate::services::LOG_DIR).join(format!("{id}.log"));
    let mut f = std::fs::File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
    let mut b = Vec::new();
    f.take(LOG_TAIL).read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// The kernel's log buffer as `[seconds.micros] message` lines, from `/dev/kmsg` (records
/// `prio,seq,usec,flags;message`).
fn dmesg() -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    while out.len() < DMESG_MAX {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // a record overwritten while reading: go on with the next one
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        };
        let rec = String::from_utf8_lossy(&buf[..n]);
        let Some((head, msg)) = rec.split_once(';') else {
            continue;
        };
        let usec: u64 = head
            .split(',')
            .nth(2)
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        // continuation lines (` KEY=value`) are metadata
        let msg = msg.lines().next().unwrap_or("");
        out.push_str(&format!(
            "[{:5}.{:06}] {msg}\n",
            usec / 1_000_000,
            usec % 1_000_000
        ));
    }
    Ok(out)
}

/// `0x0a`, `10` → 10.
fn meta_key(s: &str) -> Option<u8> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
    // 0 ends META's list of values: never a key
    .filter(|k| *k != 0)
}

/// Talos's roles (the `O` of the client certificate) and what they may do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (`os:admin`, and anyone in maintenance mode).
    Admin,
    /// Reads and reboots (`os:operator`).
    Operator,
    /// Reads (`os:reader`).
    Reader,
    /// A certificate of the CA with none of the roles: nothing.
    None,
}

impl Role {
    /// The strongest role among the certificate's organizations.
    fn of(cert_der: &[u8]) -> Role {
        let orgs = pki::organizations(cert_der).unwrap_or_default();
        if orgs.iter().any(|o| o == "os:admin") {
            Role::Admin
        } else if orgs.iter().any(|o| o == "os:operator") {
            Role::Operator
        } else if orgs.iter().any(|o| o == "os:reader") {
            Role::Reader
        } else {
            Role::None
        }
    }

    /// Whether this role may make the call.
    fn allows(self, method: &str, path: &str) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => method == "GET" || path == "/v1/reboot",
            Role::Reader => method == "GET",
            Role::None => false,
        }
    }
}

/// The validity of a certificate issued now, by the node's clock (certificates are runtime
/// secrets, not build outputs): from an hour ago (slack for clocks that disagree a little)
/// for ten years.
fn validity() -> (u64, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now.saturating_sub(3600), now + 10 * 365 * 86400)
}

/// The node's addresses and names for its server certificate: every address of its links
/// (127.0.0.1 and ::1 included), `localhost` and the host name.
fn node_names() -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut ips: Vec<std::net::IpAddr> = vec![
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip = a.address.as_ref().and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v| std::net::IpAddr::V4(v.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v| std::net::IpAddr::V6(v.ip())))
            });
            if let Some(ip) = ip
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    let mut dns = vec!["localhost".to_string()];
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
        && !h.is_empty()
        && h != "localhost"
        && h.is_ascii()
    {
        dns.push(h.to_string());
    }
    (dns, ips)
}

/// The API's TLS: in maintenance a self-signed certificate and no client authentication;
/// with the configuration's CA a certificate it issues and client certificates it must have
/// issued. Returns the config and the console's description.
fn tls(ca: Option<&config::Ca>) -> Result<(rustls::ServerConfig, String)> {
    use sha2::Digest as _;
    let key = pki::new_key().context("the API key")?;
    let (dns, ips) = node_names();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(pki::key_pkcs8(&key)?.into());
    match ca {
        None => {
            let (from, to) = validity();
            let kind = pki::Kind::Server { dns, ips };
            let cert = pki::issue("CN=talos-maintenance", &key, &kind, None, from, to)
                .context("the API certificate")?;
            let fp = hex::encode(sha2::Sha256::digest(&cert));
            let tls = builder
                .with_no_client_auth()
                .with_single_cert(vec![cert.into()], key_der)
                .context("the API certificate")?;
            Ok((tls, format!("tls=self-signed sha256={fp} client-auth=none")))
        }
        Some(ca) => {
            let signer = provider
                .key_provider
                .load_private_key(key_der)
                .context("the API key")?;
            let resolver = Resolver {
                ca: ca.clone(),
                key,
                signer,
                current: std::sync::Mutex::new(None),
            };
            // issued now, so that a CA that cannot issue fails here, not in a handshake
            resolver
                .certified((dns, ips))
                .context("the API certificate")?;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(ca.cert_der.clone().into())
                .context("machine.ca as a trust root")?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("the client verifier")?;
            let fp = hex::encode(sha2::Sha256::digest(&ca.cert_der));
            let tls = builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(Arc::new(resolver));
            Ok((
                tls,
                format!("tls=machine-ca ca-sha256={fp} client-auth=required"),
            ))
        }
    }
}

/// The installed node's server certificate, issued again by the CA whenever the node's
/// addresses change (a DHCP lease that arrives after the API started, a renewal with
/// another address), so that clients can verify it for any address of the node.
struct Resolver {
    ca: config::Ca,
    key: pki::SigningKey,
    signer: Arc<dyn rustls::sign::SigningKey>,
    current: std::sync::Mutex<Option<(Vec<std::net::IpAddr>, Arc<rustls::sign::CertifiedKey>)>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// The certificate for the node's names and addresses (`node_names`), issued when the
    /// addresses changed.
    fn certified(
        &self,
        (dns, ips): (Vec<String>, Vec<std::net::IpAddr>),
    ) -> Result<Arc<rustls::sign::CertifiedKey>> {
        let mut cur = self
            .current
            .lock()
            .map_err(|_| anyhow::anyhow!("the certificate lock is poisoned"))?;
        if let Some((have, ck)) = cur.as_ref()
            && *have == ips
        {
            return Ok(ck.clone());
        }
        let issuer = pki::Issuer {
            cert_der: &self.ca.cert_der,
            key: &self.ca.key,
        };
        let (from, to) = validity();
        let kind = pki::Kind::Server {
            dns,
            ips: ips.clone(),
        };
        let cert = pki::issue(
            "O=talos,CN=node-api",
            &self.key,
            &kind,
            Some(&issuer),
            from,
            to,
        )?;
        let ck = Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.into(), self.ca.cert_der.clone().into()],
            self.signer.clone(),
        ));
        if cur.is_some() {
            say(&format!(
                "api certificate reissued addresses={}",
                ips.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        *cur = Some((ips, ck.clone()));
        Ok(ck)
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self.certified(node_names()) {
            Ok(ck) => Some(ck),
            Err(e) => {
                say(&format!("api certificate error={:?}", format!("{e:#}")));
                None
            }
        }
    }
}

/// Starts the API in the background; returns once it listens.
pub fn serve(state: Arc<State>) -> Result<()> {
    let (tls, described) = tls(state.ca.as_ref())?;
    let tls = Arc::new(tls);
    let l = TcpListener::bind(("0.0.0.0", PORT)).with_context(|| format!("binding port {PORT}"))?;
    let who = if state.ca.is_some() {
        "api"
    } else {
        "maintenance api"
    };
    say(&format!("{who} listening=0.0.0.0:{PORT} {described}"));
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                drop(s);
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (tls, state, active) = (tls.clone(), state.clone(), active.clone());
            std::thread::spawn(move || {
                let peer = s
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                // one deadline for the whole connection, handshake included: a client that
                // trickles bytes cannot keep a slot
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                if let Ok(c) = s.try_clone() {
                    let done = done.clone();
                    std::thread::spawn(move || {
                        let t0 = std::time::Instant::now();
                        while t0.elapsed() < CONNECTION_DEADLINE {
                            if done.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    });
                }
                let r = handle(s, tls, &state, &peer);
                done.store(true, Ordering::SeqCst);
                if let Err(e) = r {
                    say(&format!(
                        "api peer={peer} error={:?}",
                        crate::console::printable(&format!("{e:#}"))
                    ));
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(())
}

fn handle(s: TcpStream, tls: Arc<rustls::ServerConfig>, state: &State, peer: &str) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(tls)?;
    let mut io = rustls::StreamOwned::new(conn, s);
    // the request head, up to the blank line
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD {
            anyhow::bail!("request head longer than {MAX_HEAD} bytes");
        }
        if io.read(&mut byte)? == 0 {
            anyhow::bail!("connection closed in the request head");
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).context("request head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut length = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().context("content-length")?;
        }
    }
    let (status, body) = if length > config::MAX_CONFIG {
        (
            413,
            serde_json::json!({"error": format!("body larger than {} bytes", config::MAX_CONFIG)}),
        )
    } else {
        let mut body = vec![0u8; length];
        io.read_exact(&mut body).context("reading the body")?;
        // maintenance mode is open by design; the mutual-TLS API checks the client's role
        let role = match (&state.ca, io.conn.peer_certificates()) {
            (None, _) => Role::Admin,
            (Some(_), Some([leaf, ..])) => Role::of(leaf),
            (Some(_), _) => Role::None,
        };
        if role.allows(&method, &path) {
            route(&method, &path, &body, state)
        } else {
            (
                403,
                serde_json::json!({"error": format!("the client certificate's role ({role:?}) may not {method} {path}")}),
            )
        }
    };
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        413 => "Payload Too Large",
        _ => "Error",
    };
    write!(
        io,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    io.flush()?;
    io.conn.send_close_notify();
    let _ = io.flush();
    say(&format!(
        "api peer={peer} request={:?} status={status}",
        crate::console::printable(&format!("{method} {path}"))
    ));
    Ok(())
}

fn route(method: &str, path: &str, body: &[u8], state: &State) -> (u16, serde_json::Value) {
    use serde_json::json;
    let installed_only = path == "/v1/upgrade"
        || path == "/v1/services"
        || path == "/v1/dmesg"
        || path.starts_with("/v1/logs/");
    if installed_only && state.ca.is_none() {
        return (
            403,
            json!({"error": format!("{path} is not served in maintenance mode")}),
        );
    }
    match (method, path) {
        ("GET", "/v1/version") => (
            200,
            json!({
                "version": state.version,
                "arch": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
                "kernel": crate::modules::kernel_release().unwrap_or_default(),
                "maintenance": state.ca.is_none(),
            }),
        ),
        ("GET", "/v1/meta") => {
            // an installed node answers from its disk (META may have changed since boot)
            let live = match &state.disk {
                Some(d) => match crate::lifecycle::meta_values(d) {
                    Ok(v) => Some(v),
                    Err(e) => return (500, json!({"error": format!("{e:#}")})),
                },
                None => None,
            };
            let values: serde_json::Map<String, serde_json::Value> = live
                .as_ref()
                .unwrap_or(&state.meta)
                .iter()
                .map(|(k, v)| {
                    (
                        format!("0x{k:02x}"),
                        json!(String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect();
            (200, json!({ "values": values }))
        }
        ("POST", "/v1/apply-config") => {
            let text = match std::str::from_utf8(body) {
                Ok(t) => t,
                Err(_) => return (400, json!({"error": "the configuration is not UTF-8"})),
            };
            match config::parse(text) {
                Ok(c) => {
                    let reply = json!({
                        "applied": true,
                        "installDisk": c.install.disk,
                        "notApplied": c.not_applied,
                        "complete": c.complete,
                    });
                    let Some(tx) = &state.tx else {
                        return (
                            400,
                            json!({"error": "an installed node does not take a new configuration yet"}),
                        );
                    };
                    if tx
                        .send(Incoming {
                            source: "api".into(),
                            config: c,
                        })
                        .is_err()
                    {
                        return (
                            500,
                            json!({"error": "the node no longer takes configurations"}),
                        );
                    }
                    (200, reply)
                }
                Err(e) => (400, json!({ "error": e })),
            }
        }
        ("PUT" | "DELETE", p) if p.starts_with("/v1/meta/") => {
            let Some(disk) = state.disk.as_deref().filter(|_| state.ca.is_some()) else {
                return (
                    400,
                    json!({"error": "META is written on an installed node only"}),
                );
            };
            let Some(key) = meta_key(&p["/v1/meta/".len()..]) else {
                return (
                    400,
                    json!({"error": "the key is not 0xNN or a number 0-255"}),
                );
            };
            let r = if method == "PUT" {
                crate::lifecycle::meta_write(disk, key, body).map(|()| true)
            } else {
                crate::lifecycle::meta_delete(disk, key)
            };
            match r {
                Ok(true) => (200, json!({"key": format!("0x{key:02x}")})),
                Ok(false) => (404, json!({"error": format!("no META key 0x{key:02x}")})),
                Err(e) => (400, json!({"error": format!("{e:#}")})),
            }
        }
        ("POST", "/v1/reset") => {
            let Some(disk) = state.disk.clone().filter(|_| state.ca.is_some()) else {
                return (400, json!({"error": "only an installed node is reset"}));
            };
            if crate::upgrade::running() {
                return (400, json!({"error": "an upgrade is running"}));
            }
            let req: serde_json::Value = if body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return (400, json!({"error": format!("not JSON: {e}")})),
                }
            };
            let graceful = req["graceful"].as_bool().unwrap_or(true);
            let mode = req["wipeMode"].as_str().unwrap_or("all").to_string();
            if !matches!(mode.as_str(), "all" | "system-disk") {
                return (
                    400,
                    json!({"error": format!("wipeMode {mode:?}: all or system-disk")}),
                );
            }
            say(&format!(
                "reset requested=api graceful={graceful} wipe-mode={mode}"
            ));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                if let Err(e) = crate::lifecycle::reset(&disk, graceful) {
                    say(&format!("reset error={:?}", format!("{e:#}")));
                }
            });
            (200, json!({"resetting": true, "wipeMode": mode}))
        }
        ("POST", "/v1/upgrade") => {
            let (Some(disk), Some(cfg)) = (
                state.disk.as_deref().filter(|_| state.ca.is_some()),
                state.config.as_ref(),
            ) else {
                return (400, json!({"error": "only an installed node is upgraded"}));
            };
            let req: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return (400, json!({"error": format!("not JSON: {e}")})),
            };
            let Some(image) = req["image"].as_str() else {
                return (400, json!({"error": "no image"}));
            };
            let r = crate::upgrade::request(
                disk,
                &crate::cmdline::Cmdline::read(),
                cfg,
                crate::upgrade::Request {
                    image: image.to_string(),
                    preserve: req["preserve"].as_bool().unwrap_or(false),
                    stage: req["stage"].as_bool().unwrap_or(false),
                    test_pause: req["testPause"].as_bool().unwrap_or(false),
                },
            );
            match r {
                Ok(what) => (200, json!({"upgrade": what, "image": image})),
                Err(e) => (400, json!({"error": format!("{e:#}")})),
            }
        }
        ("GET", "/v1/services") => {
            let list: Vec<serde_json::Value> = crate::services::STATUS
                .lock()
                .map(|m| {
                    m.iter()
                        .map(|(id, s)| {
                            json!({
                                "id": id, "state": s.state, "reason": s.reason,
                                "exit": s.exit, "pid": s.pid, "restarts": s.restarts,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            (200, json!({ "services": list }))
        }
        ("GET", p) if p.starts_with("/v1/logs/") => {
            let id = &p["/v1/logs/".len()..];
            if id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return (400, json!({"error": "not a service id"}));
            }
            let known = crate::services::STATUS
                .lock()
                .map(|m| m.contains_key(id))
                .unwrap_or(false);
            if !known {
                return (404, json!({"error": format!("no service {id}")}));
            }
            match log_tail(id) {
                Ok(t) => (200, json!({"id": id, "log": t})),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (200, json!({"id": id, "log": ""}))
                }
                Err(e) => (500, json!({"error": format!("reading the log: {e}")})),
            }
        }
        ("GET", "/v1/dmesg") => match dmesg() {
            Ok(t) => (200, json!({ "dmesg": t })),
            Err(e) => (500, json!({"error": format!("reading /dev/kmsg: {e}")})),
        },
        ("POST", "/v1/reboot") => {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(500));
                say("reboot requested=api");
                crate::console::reboot();
            });
            (200, json!({"rebooting": true}))
        }
        _ => (404, json!({"error": format!("no {method} {path}")})),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_are_talos_roles() {
        let ca_key = pki::new_key().unwrap();
        let ca = pki::issue("O=talos", &ca_key, &pki::Kind::Ca, None, 0, 4_000_000_000).unwrap();
        let issuer = pki::Issuer {
            cert_der: &ca,
            key: &ca_key,
        };
        let role = |subject: &str| {
            let k = pki::new_key().unwrap();
            let c = pki::issue(subject, &k, &pki::Kind::Client, Some(&issuer), 0, 1).unwrap();
            Role::of(&c)
        };
        assert_eq!(role("O=os:admin"), Role::Admin);
        assert_eq!(role("O=os:reader,O=os:operator"), Role::Operator);
        assert_eq!(role("O=os:reader"), Role::Reader);
        assert_eq!(role("CN=nobody"), Role::None);
        assert!(Role::Admin.allows("POST", "/v1/reset"));
        assert!(Role::Operator.allows("POST", "/v1/reboot"));
        assert!(!Role::Operator.allows("POST", "/v1/reset"));
        assert!(!Role::Operator.allows("PUT", "/v1/meta/0x0d"));
        assert!(Role::Reader.allows("GET", "/v1/meta"));
        assert!(!Role::Reader.allows("POST", "/v1/reboot"));
        assert!(!Role::None.allows("GET", "/v1/version"));
        assert_eq!(meta_key("0x0d"), Some(13));
        assert_eq!(meta_key("13"), Some(13));
        assert_eq!(meta_key("0"), None);
        assert_eq!(meta_key("0x00"), None);
        assert_eq!(meta_key("0x100"), None);
    }
}
