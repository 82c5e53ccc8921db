//! The HTTP routes (docs/formats/factory.md, "HTTP"), on tiny_http: one thread per request up to
//! `http.maxConnections` (then 503), a log line per request, graceful shutdown.

use crate::service::{Factory, FactoryError, clip};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// Bound on a request body (a schematic).
const MAX_BODY: u64 = schematic::MAX_SCHEMATIC as u64;
/// Bound on a kernel command line read back from the cache.
const MAX_CMDLINE: u64 = 64 << 10;

/// What a route answers.
enum Reply {
    /// A small body.
    Bytes {
        status: u16,
        content_type: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// An asset, streamed.
    Stream {
        len: u64,
        reader: Option<Box<dyn Read + Send>>,
        headers: Vec<(String, String)>,
    },
}

fn bytes(status: u16, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Reply {
    Reply::Bytes {
        status,
        content_type: content_type.into(),
        body: body.into(),
        headers: Vec::new(),
    }
}

fn json(status: u16, v: &impl serde::Serialize) -> Result<Reply, FactoryError> {
    let mut b = serde_json::to_vec(v).map_err(|e| FactoryError::Internal(e.to_string()))?;
    b.push(b'\n');
    Ok(bytes(status, "application/json", b))
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn query<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("" | "1" | "true" | "yes"))
}

/// The base URL links point at: the configured one, else `http://<Host>` (a Host header
/// with anything but a host name, address and port is refused).
fn base_url(f: &Factory, req: &Request, pxe: bool) -> Result<String, FactoryError> {
    let cfg = &f.cfg.http;
    let configured = if pxe && !cfg.external_pxe_url.is_empty() {
        &cfg.external_pxe_url
    } else {
        &cfg.external_url
    };
    if !configured.is_empty() {
        return Ok(configured.trim_end_matches('/').to_string());
    }
    let host = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_string())
        .ok_or_else(|| FactoryError::BadRequest("no Host header".into()))?;
    if host.is_empty()
        || host.len() > 255
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err(FactoryError::BadRequest(format!(
            "invalid Host header {:?}",
            clip(&host)
        )));
    }
    Ok(format!("http://{host}"))
}

/// A download's file name: the path's, or `?filename=` (letters, digits, `._-`; anything
/// else is a 400).
fn filename<'a>(q: &'a str, name: &'a str) -> Result<&'a str, FactoryError> {
    match query(q, "filename") {
        None => Ok(name),
        Some(n)
            if !n.is_empty()
                && n.len() <= 128
                && !n.starts_with('.')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(n)
        }
        Some(n) => Err(FactoryError::BadRequest(format!(
            "invalid filename {:?}: letters, digits, '.', '_' and '-' only",
            clip(n)
        ))),
    }
}

fn image(
    f: &Arc<Factory>,
    head: bool,
    id: &str,
    version: &str,
    name: &str,
    q: &str,
) -> Result<Reply, FactoryError> {
    // `<asset>.sha256` and `<asset>.sigstore.json` are about the asset's bytes, which the
    // cache entry's layer digest is
    if let Some(asset) = name.strip_suffix(".sha256") {
        let e = f.asset(id, version, asset)?;
        return Ok(bytes(
            200,
            "text/plain; charset=utf-8",
            format!("{}  {asset}\n", e.layer.digest.hex()),
        ));
    }
    if let Some(asset) = name.strip_suffix(".sigstore.json") {
        let e = f.asset(id, version, asset)?;
        let mut sha = [0u8; 32];
        hex::decode_to_slice(e.layer.digest.hex(), &mut sha)
            .map_err(|x| FactoryError::Internal(x.to_string()))?;
        let bundle = cosign::sign_blob_bundle(f.store().key(), &sha);
        return Ok(bytes(200, "application/json", bundle));
    }
    let fname = filename(q, name)?;
    let e = f.asset(id, version, name)?;
    let reader: Option<Box<dyn Read + Send>> = if head {
        None
    } else {
        let r = f
            .store()
            .open(&e)
            .map_err(|x| FactoryError::Unavailable(x.to_string()))?;
        Some(Box::new(Counting::new(r, f)))
    };
    Ok(Reply::Stream {
        len: e.layer.size,
        reader,
        headers: vec![
            ("Content-Type".into(), "application/octet-stream".into()),
            (
                "Content-Disposition".into(),
                format!("attachment; filename=\"{fname}\""),
            ),
            ("ETag".into(), format!("\"{}\"", e.layer.digest)),
            ("Accept-Ranges".into(), "none".into()),
        ],
    })
}

/// Reads an asset from the registry in large chunks (the HTTP writer asks for 8 KiB at a
/// time) and counts the bytes sent.
struct Counting {
    inner: std::io::BufReader<oci::client::BlobReader>,
    f: Arc<Factory>,
}

/// The read-ahead of one download.
const STREAM_BUF: usize = 128 << 10;

impl Counting {
    fn new(r: oci::client::BlobReader, f: &Arc<Factory>) -> Self {
        Self {
            inner: std::io::BufReader::with_capacity(STREAM_BUF, r),
            f: f.clone(),
        }
    }
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.f.metrics.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn pxe(
    f: &Arc<Factory>,
    req: &Request,
    id: &str,
    version: &str,
    name: &str,
) -> Result<Reply, FactoryError> {
    let cmdline_asset = format!("cmdline-{name}");
    let a =
        crate::path::parse(&cmdline_asset).map_err(|e| FactoryError::BadRequest(e.to_string()))?;
    let e = f.asset(id, version, &cmdline_asset)?;
    if e.layer.size > MAX_CMDLINE {
        return Err(FactoryError::Internal(
            "the cached command line is too long".into(),
        ));
    }
    let mut cmdline = String::new();
    f.store()
        .open(&e)
        .map_err(|x| FactoryError::Unavailable(x.to_string()))?
        .take(MAX_CMDLINE)
        .read_to_string(&mut cmdline)
        .map_err(|x| FactoryError::Unavailable(x.to_string()))?;
    let base = format!("{}/image/{id}/{version}", base_url(f, req, true)?);
    let script = if a.secureboot {
        // iPXE starts the UKI as a plain PE image, so sd-stub's embedded command line is not
        // used: it is given on the kernel line (upstream's secureboot.ipxe)
        imager::output::pxe::ipxe_uki_script(&format!("{base}/{name}-uki.efi"), cmdline.trim())
    } else {
        imager::output::pxe::ipxe_script(
            &format!("{base}/kernel-{}", a.arch),
            &format!("{base}/initramfs-{}.xz", a.arch),
            cmdline.trim(),
        )
    }
    .map_err(|e| FactoryError::BadRequest(format!("{e:#}")))?;
    Ok(bytes(200, "text/plain; charset=utf-8", script))
}

/// The request body, at most 1 MiB.
fn read_body(req: &mut Request) -> Result<Vec<u8>, FactoryError> {
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| FactoryError::BadRequest(format!("reading the body: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err(FactoryError::BadRequest(
            "the request body is larger than 1 MiB".into(),
        ));
    }
    Ok(body)
}

fn route(f: &Arc<Factory>, req: &mut Request, metrics_here: bool) -> Result<Reply, FactoryError> {
    let url = req.url().to_string();
    let (path, q) = url.split_once('?').unwrap_or((&url, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let head = method == Method::Head;
    // every read-only route answers HEAD too (the body is left out)
    let get = method == Method::Get || head;
    if path == "/v2" || path.starts_with("/v2/") {
        return registry(f, &method, &path[3..]);
    }
    match segs.as_slice() {
        [""] if get => Ok(bytes(
            200,
            "text/html; charset=utf-8",
            crate::wizard::index(f, &crate::wizard::form(q))?,
        )),
        ["wizard"] if method == Method::Post => {
            let body = read_body(req)?;
            let base = base_url(f, req, false)?;
            let host = base
                .split_once("://")
                .map_or(base.as_str(), |x| x.1)
                .trim_end_matches('/')
                .to_string();
            Ok(bytes(
                200,
                "text/html; charset=utf-8",
                crate::wizard::create(f, &body, &base, &host)?,
            ))
        }
        ["healthz"] if get => Ok(bytes(200, "text/plain", "ok\n")),
        ["metrics"] if metrics_here && get => {
            Ok(bytes(200, "text/plain; version=0.0.4", f.metrics.render()))
        }
        ["schematics"] if method == Method::Post => {
            let body = read_body(req)?;
            let (id, text) = f.create_schematic(&body, truthy(query(q, "normalize")))?;
            json(201, &serde_json::json!({"id": id, "schematic": text}))
        }
        ["schematics", id] if get => Ok(bytes(200, "application/yaml", f.schematic_text(id)?)),
        ["image", id, version, name] if get => image(f, head, id, version, name, q),
        ["pxe", id, version, name] if get => pxe(f, req, id, version, name),
        ["versions"] if get => json(200, &*f.versions()?),
        ["version", v, "extensions", "official"] if get => json(200, &*f.extensions(v)?),
        ["version", v, "overlays", "official"] if get => json(200, &f.overlays(v)?),
        ["secureboot", "signing-cert.pem"] if get => match &f.secureboot_cert {
            Some(pem) => Ok(bytes(200, "application/x-pem-file", pem.clone())),
            None => Err(FactoryError::NotFound(
                "this factory has no SecureBoot signing certificate (secureBoot.enabled)".into(),
            )),
        },
        ["oci", "cosign", "signing-key.pub"] if get => Ok(bytes(
            200,
            "application/x-pem-file",
            f.store().key().public_key().to_pem(),
        )),
        [""]
        | ["wizard"]
        | ["healthz"]
        | ["metrics"]
        | ["schematics"]
        | ["schematics", _]
        | ["image", _, _, _]
        | ["pxe", _, _, _]
        | ["versions"]
        | ["version", _, _, _]
        | ["secureboot", "signing-cert.pem"]
        | ["oci", "cosign", "signing-key.pub"] => Err(FactoryError::MethodNotAllowed(format!(
            "{method} is not allowed on {}",
            clip(path)
        ))),
        _ => Err(FactoryError::NotFound(format!("no route {}", clip(path)))),
    }
}

/// The installer registry (`/v2/…`, [`crate::frontend`]); errors in the distribution
/// API's JSON.
fn registry(f: &Arc<Factory>, method: &Method, rest: &str) -> Result<Reply, FactoryError> {
    let api = (
        "Docker-Distribution-API-Version".to_string(),
        "registry/2.0".to_string(),
    );
    let reply = (|| {
        if !(*method == Method::Get || *method == Method::Head) {
            return Err(FactoryError::MethodNotAllowed(
                "this registry is read-only".into(),
            ));
        }
        if rest.is_empty() || rest == "/" {
            return Ok(bytes(200, "application/json", "{}\n"));
        }
        let rest = rest.trim_start_matches('/');
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            let m = crate::frontend::manifest(f, name, reference)?;
            return Ok(Reply::Bytes {
                status: 200,
                content_type: m.media_type,
                body: m.bytes,
                headers: vec![("Docker-Content-Digest".into(), m.digest.to_string())],
            });
        }
        if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            let (len, r) = crate::frontend::blob(f, name, digest)?;
            let reader: Option<Box<dyn Read + Send>> = if *method == Method::Head {
                None
            } else {
                Some(Box::new(Counting::new(r, f)))
            };
            return Ok(Reply::Stream {
                len,
                reader,
                headers: vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("Docker-Content-Digest".into(), digest.to_string()),
                ],
            });
        }
        Err(FactoryError::NotFound(format!(
            "no route /v2/{}",
            clip(rest)
        )))
    })();
    if let Err(e) = &reply
        && e.status() >= 500
    {
        crate::log::error("registry request failed", &[("error", &e.to_string())]);
    }
    let mut r = reply.unwrap_or_else(|e| {
        let code = match (&e, rest.contains("/blobs/")) {
            (FactoryError::NotFound(_), true) => "BLOB_UNKNOWN",
            (FactoryError::NotFound(_), false) => "MANIFEST_UNKNOWN",
            (FactoryError::BadRequest(_), true) => "DIGEST_INVALID",
            (FactoryError::BadRequest(_), _) => "NAME_INVALID",
            (FactoryError::MethodNotAllowed(_), _) => "UNSUPPORTED",
            _ => "UNAVAILABLE",
        };
        let body =
            serde_json::json!({"errors": [{"code": code, "message": clean(&e.to_string())}]});
        bytes(e.status(), "application/json", format!("{body}\n"))
    });
    match &mut r {
        Reply::Bytes { headers, .. } | Reply::Stream { headers, .. } => headers.push(api),
    }
    Ok(r)
}

fn respond(req: Request, reply: Reply) -> (u16, u64, std::io::Result<()>) {
    match reply {
        Reply::Bytes {
            status,
            content_type,
            body,
            headers,
        } => {
            let n = body.len() as u64;
            let mut r = Response::from_data(body).with_status_code(StatusCode(status));
            for h in std::iter::once(("Content-Type".to_string(), content_type))
                .chain(headers)
                .filter_map(|(k, v)| header(&k, &v))
            {
                r = r.with_header(h);
            }
            (status, n, req.respond(r))
        }
        Reply::Stream {
            len,
            reader,
            headers,
        } => {
            // written by hand, always with Content-Length: tiny_http would switch to chunked
            // encoding for a client that asks (TE), and its chunked writer ends a broken
            // stream with the closing chunk, so a failed download would look complete
            let mut w = req.into_writer();
            let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n");
            for (k, v) in &headers {
                if header(k, v).is_some() {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            head.push_str("\r\n");
            let res = (|| {
                w.write_all(head.as_bytes())?;
                let sent = match reader {
                    Some(mut r) => std::io::copy(&mut r, &mut w)?,
                    None => 0,
                };
                w.flush()?;
                Ok(sent)
            })();
            match res {
                Ok(sent) => (200, sent, Ok(())),
                Err(e) => (200, 0, Err(e)),
            }
        }
    }
}

/// `s` with control characters escaped (`\u{1b}`), for response bodies and logs: request
/// text quoted in an error never reaches a terminal raw.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .flat_map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn handle(f: Arc<Factory>, mut req: Request, metrics_here: bool) {
    let start = Instant::now();
    let method = req.method().to_string();
    let url = req.url().to_string();
    let mut failure = None;
    let reply = route(&f, &mut req, metrics_here).unwrap_or_else(|e| {
        if e.status() >= 500 {
            failure = Some(e.to_string());
        }
        bytes(
            e.status(),
            "text/plain; charset=utf-8",
            format!("{}\n", clean(&e.to_string())),
        )
    });
    let (status, n, res) = respond(req, reply);
    let class = usize::from(status / 100).min(5);
    f.metrics.requests[class].fetch_add(1, Ordering::Relaxed);
    let ms = start.elapsed().as_millis().to_string();
    let status_s = status.to_string();
    let n_s = n.to_string();
    let mut fields = vec![
        ("method", method.as_str()),
        ("path", url.as_str()),
        ("status", status_s.as_str()),
        ("bytes", n_s.as_str()),
        ("ms", ms.as_str()),
    ];
    let err = res.err().map(|e| e.to_string()).or(failure);
    if let Some(e) = &err {
        fields.push(("error", e.as_str()));
    }
    crate::log::info("request", &fields);
}

/// Serves `server` until `stop` is set, then waits up to `grace` for requests in flight.
pub fn serve(
    f: Arc<Factory>,
    server: tiny_http::Server,
    metrics_here: bool,
    stop: Arc<AtomicBool>,
    grace: Duration,
) {
    while !stop.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(250)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                crate::log::error("accepting", &[("error", &e.to_string())]);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let busy = f.metrics.in_flight.load(Ordering::SeqCst);
        if busy >= f.cfg.http.max_connections as u64 {
            let r = Response::from_string("too many requests in flight\n")
                .with_status_code(StatusCode(503));
            let _ = req.respond(r);
            continue;
        }
        f.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        let f2 = f.clone();
        let spawned = std::thread::Builder::new()
            .name("request".into())
            .spawn(move || {
                let g = InFlight(f2.clone());
                handle(f2, req, metrics_here);
                drop(g);
            });
        if let Err(e) = spawned {
            f.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
            crate::log::error("spawning a request thread", &[("error", &e.to_string())]);
        }
    }
    let start = Instant::now();
    while f.metrics.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct InFlight(Arc<Factory>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves only `/metrics` (the `metrics.addr` listener).
pub fn serve_metrics(f: Arc<Factory>, server: tiny_http::Server, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(250)) {
            let r = if req.url() == "/metrics" {
                Response::from_string(f.metrics.render())
            } else {
                Response::from_string("not found\n").with_status_code(StatusCode(404))
            };
            let _ = req.respond(r);
        }
    }
}
