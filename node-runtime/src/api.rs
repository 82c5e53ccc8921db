//! The maintenance API (docs/formats/api.md): HTTPS with JSON on port 50000, served only
//! while the node waits for its configuration.
//!
//! **Insecure by design, as Talos's maintenance mode is**: the certificate is generated on
//! the node at boot (ECDSA P-256, self-signed; its SHA-256 fingerprint is printed on the
//! console for those who check it), and no client certificate is asked for. Anyone who
//! reaches the port can send a configuration; the node accepts one and installs it. After
//! the install, the API is gone (the mutual-TLS API of an installed node is issue 19).
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
/// ecdsa-with-SHA256.
const ECDSA_SHA256: spki::ObjectIdentifier =
    spki::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

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
    /// Where accepted configurations go.
    pub tx: mpsc::Sender<Incoming>,
}

/// A self-signed P-256 certificate and its PKCS#8 key (DER), and the certificate's SHA-256.
fn self_signed() -> Result<(Vec<u8>, Vec<u8>, String)> {
    use der::asn1::{BitString, GeneralizedTime, UtcTime};
    use der::{Decode as _, Encode as _};
    use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    use sha2::Digest as _;
    use signature::Signer as _;
    use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use std::str::FromStr as _;
    use x509_cert::certificate::{Certificate, TbsCertificate, Version};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::time::{Time, Validity};
    let mut seed = [0u8; 48];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom")?;
    let key = p256::ecdsa::SigningKey::from_slice(&seed[..32]).context("the API key")?;
    let pkcs8 = key.to_pkcs8_der().context("encoding the API key")?;
    let spki_der = key
        .verifying_key()
        .to_public_key_der()
        .context("encoding the API public key")?;
    let alg = AlgorithmIdentifierOwned {
        oid: ECDSA_SHA256,
        parameters: None,
    };
    let mut serial = seed[32..48].to_vec();
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let name = Name::from_str("CN=talos-maintenance").context("the API certificate name")?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).context("serial")?,
        signature: alg.clone(),
        issuer: name.clone(),
        // no expiry (RFC 5280's 99991231235959Z): the node's clock may be anything in
        // maintenance mode, and clients do not verify this certificate
        validity: Validity {
            not_before: Time::UtcTime(
                UtcTime::from_unix_duration(Duration::ZERO).context("notBefore")?,
            ),
            not_after: Time::GeneralTime(
                GeneralizedTime::from_unix_duration(Duration::from_secs(253_402_300_799))
                    .context("notAfter")?,
            ),
        },
        subject: name,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
            .context("the API public key")?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: None,
    };
    let tbs_der = tbs.to_der().context("encoding the certificate")?;
    let sig: p256::ecdsa::DerSignature = key.sign(&tbs_der);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.as_bytes()).context("signature")?,
    };
    let der = cert.to_der().context("encoding the certificate")?;
    let fp = hex::encode(sha2::Sha256::digest(&der));
    Ok((der, pkcs8.as_bytes().to_vec(), fp))
}

/// Starts the API in the background; returns once it listens.
pub fn serve(state: Arc<State>) -> Result<()> {
    let (cert, key, fp) = self_signed()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .context("the API certificate")?;
    let tls = Arc::new(tls);
    let l = TcpListener::bind(("0.0.0.0", PORT)).with_context(|| format!("binding port {PORT}"))?;
    say(&format!(
        "maintenance api listening=0.0.0.0:{PORT} tls=self-signed sha256={fp} client-auth=none"
    ));
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
                if let Err(e) = handle(s, tls, &state, &peer) {
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
        route(&method, &path, &body, state)
    };
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
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
    match (method, path) {
        ("GET", "/v1/version") => (
            200,
            json!({
                "version": state.version,
                "arch": if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" },
                "kernel": crate::modules::kernel_release().unwrap_or_default(),
                "maintenance": true,
            }),
        ),
        ("GET", "/v1/meta") => {
            let values: serde_json::Map<String, serde_json::Value> = state
                .meta
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
                    });
                    if state
                        .tx
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
        ("POST", "/v1/reboot") => {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(500));
                say("reboot requested=api");
                crate::volumes::unmount();
                let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            });
            (200, json!({"rebooting": true}))
        }
        _ => (404, json!({"error": format!("no {method} {path}")})),
    }
}
