//! A fault-injecting HTTP/1.1 reverse proxy for hostile-registry tests (std only: a thread per
//! connection, one request per connection).
//!
//! Each request is read whole (Content-Length or chunked body), forwarded to the plain-HTTP
//! upstream with `Host: <upstream>` and `Connection: close` (hop-by-hop headers dropped,
//! `Authorization` dropped when an [`Auth`] layer is on), the upstream response is read whole
//! (Content-Length, chunked or until close) and relayed with a `Content-Length` and
//! `Connection: close`, then the connection is closed (clients that asked for keep-alive
//! reconnect). Absolute `Location` headers pointing at the upstream (the registry's upload
//! URLs) are rewritten to the proxy.
//!
//! Anything that does not start like an HTTP request (e.g. the TLS ClientHello that skopeo
//! sends first with `--tls-verify=false`) gets a `400` and a close, so such clients fall back
//! to plain HTTP at once.

use base64::Engine;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fault to inject, set with [`FaultProxy::set_fault`]. Each applies to the next `times`
/// `GET` requests whose path contains `path_contains` (after auth, so a `401` does not consume
/// one); then the proxy forwards normally again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Flip one byte in the middle of the body (same length, same headers).
    CorruptBody {
        /// Substring of the request path.
        path_contains: String,
        /// How many matching requests get the fault.
        times: u32,
    },
    /// Send the headers with the original Content-Length, then half the body, then close.
    Truncate {
        /// Substring of the request path.
        path_contains: String,
        /// How many matching requests get the fault.
        times: u32,
    },
    /// Answer this status with a small JSON body, without contacting the upstream.
    Status {
        /// Substring of the request path.
        path_contains: String,
        /// The status code (e.g. 500, 503, 429).
        status: u16,
        /// How many matching requests get the fault.
        times: u32,
    },
    /// Send the headers and half the body, then keep the socket open and silent until the
    /// proxy is dropped.
    Stall {
        /// Substring of the request path.
        path_contains: String,
        /// How many matching requests get the fault.
        times: u32,
    },
    /// Close the connection right after reading the request, without a response.
    Reset {
        /// Substring of the request path.
        path_contains: String,
        /// How many matching requests get the fault.
        times: u32,
    },
}

/// Authentication the proxy enforces on `/v2/` requests, set with [`FaultProxy::set_auth`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No authentication.
    None,
    /// `Authorization: Basic base64(user:pass)` required; else `401` with
    /// `WWW-Authenticate: Basic realm="test"`.
    Basic {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
    /// Docker token auth: `Authorization: Bearer <token>` required; else `401` with
    /// `WWW-Authenticate: Bearer realm="http://<proxy>/token",service="test-registry"` plus
    /// `scope="repository:<name>:pull"` (`pull,push` for POST/PUT/PATCH/DELETE) when the path
    /// names a repository. `GET /token` takes these Basic credentials and returns a token
    /// valid for any scope.
    Bearer {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
}

/// The `service` of the Bearer challenge.
pub const SERVICE: &str = "test-registry";

struct State {
    upstream: String,
    host: String,
    stop: AtomicBool,
    fault: Mutex<Fault>,
    auth: Mutex<Auth>,
    log: Mutex<Vec<String>>,
    hits: AtomicU32,
    tokens: Mutex<HashSet<String>>,
    token_counter: AtomicU64,
    stalled: Mutex<Vec<TcpStream>>,
    /// Request target (path and query) → (status, headers, body), answered without the
    /// upstream.
    canned: Mutex<Vec<Canned>>,
}

/// A canned response (see [`FaultProxy::set_canned`]).
type Canned = (String, u16, Vec<(String, String)>, Vec<u8>);

/// The proxy; dropping it stops the accept loop and closes stalled connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 with a free port, in front of the plain-HTTP `upstream`
    /// ("host:port").
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            host: addr.to_string(),
            stop: AtomicBool::new(false),
            fault: Mutex::new(Fault::None),
            auth: Mutex::new(Auth::None),
            log: Mutex::new(Vec::new()),
            hits: AtomicU32::new(0),
            tokens: Mutex::new(HashSet::new()),
            token_counter: AtomicU64::new(0),
            stalled: Mutex::new(Vec::new()),
            canned: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    if let Err(e) = handle(&st, conn)
                        && !st.stop.load(Ordering::SeqCst)
                    {
                        eprintln!("faultproxy: {e}");
                    }
                });
            }
        });
        FaultProxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        self.state.host.clone()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `GET target` (path and query, exactly) with `status`, `headers` and `body`
    /// from now on, without asking the upstream (e.g. a referrers API the upstream lacks).
    pub fn set_canned(&self, target: &str, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.state.canned.lock().unwrap().push((
            target.to_string(),
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.to_vec(),
        ));
    }

    /// Replaces the current fault (and its remaining count).
    pub fn set_fault(&self, f: Fault) {
        *self.state.fault.lock().unwrap() = f;
    }

    /// How many faults were applied since the start.
    pub fn fault_hits(&self) -> u32 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Replaces the authentication layer (issued tokens stay valid).
    pub fn set_auth(&self, a: Auth) {
        *self.state.auth.lock().unwrap() = a;
    }

    /// The requests received so far, as "METHOD /path" (query string left out), in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self.state.stalled.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A parsed request or response head.
struct Head {
    /// The start line without CRLF.
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Reads a start line and headers; `Ok(None)` on EOF before any byte.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let start = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(bad("EOF in headers"));
        }
        total += n;
        if total > 256 * 1024 {
            return Err(bad("headers too long"));
        }
        let l = String::from_utf8_lossy(&line);
        let l = l.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some(Head {
        line: start,
        headers,
    }))
}

/// Reads a chunked body (trailers dropped).
fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in chunked body"));
        }
        let size = line.trim().split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // trailers up to the empty line
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

fn content_length(h: &Head) -> std::io::Result<Option<usize>> {
    h.get("content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| bad(format!("bad Content-Length {v:?}")))
        })
        .transpose()
}

fn is_chunked(h: &Head) -> bool {
    h.get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a complete small response and closes.
fn respond(
    w: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()?;
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

/// The repository named by a `/v2/<name>/(manifests|blobs|tags)/…` path.
fn repo_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let i = segs
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, s)| matches!(**s, "manifests" | "blobs" | "tags"))?
        .0;
    Some(segs[..i].join("/"))
}

fn basic_ok(req: &Head, user: &str, pass: &str) -> bool {
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    req.get("authorization").is_some_and(|v| {
        v.split_once(' ')
            .is_some_and(|(s, c)| s.eq_ignore_ascii_case("basic") && c.trim() == want)
    })
}

const UNAUTHORIZED: &[u8] =
    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;

/// Applies the auth layer. `Ok(true)`: answered here (401 or a token), nothing to forward.
fn check_auth(
    st: &State,
    w: &mut TcpStream,
    req: &Head,
    method: &str,
    path: &str,
) -> std::io::Result<bool> {
    let auth = st.auth.lock().unwrap().clone();
    let json = ("Content-Type", "application/json".to_string());
    match auth {
        Auth::None => Ok(false),
        Auth::Basic { user, pass } => {
            if !path.starts_with("/v2") || basic_ok(req, &user, &pass) {
                return Ok(false);
            }
            respond(
                w,
                401,
                &[
                    json,
                    ("WWW-Authenticate", r#"Basic realm="test""#.to_string()),
                ],
                UNAUTHORIZED,
            )?;
            Ok(true)
        }
        Auth::Bearer { user, pass } => {
            if path == "/token" {
                if !basic_ok(req, &user, &pass) {
                    respond(
                        w,
                        401,
                        &[
                            json,
                            ("WWW-Authenticate", r#"Basic realm="test""#.to_string()),
                        ],
                        UNAUTHORIZED,
                    )?;
                    return Ok(true);
                }
                let n = st.token_counter.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("e2e-token-{n}");
                st.tokens.lock().unwrap().insert(token.clone());
                let body =
                    format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
                respond(w, 200, &[json], body.as_bytes())?;
                return Ok(true);
            }
            if !path.starts_with("/v2") {
                return Ok(false);
            }
            let valid = req.get("authorization").is_some_and(|v| {
                v.split_once(' ').is_some_and(|(s, t)| {
                    s.eq_ignore_ascii_case("bearer") && st.tokens.lock().unwrap().contains(t.trim())
                })
            });
            if valid {
                return Ok(false);
            }
            let mut challenge = format!(
                r#"Bearer realm="http://{}/token",service="{SERVICE}""#,
                st.host
            );
            if let Some(name) = repo_name(path) {
                let actions = if matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") {
                    "pull,push"
                } else {
                    "pull"
                };
                challenge.push_str(&format!(r#",scope="repository:{name}:{actions}""#));
            }
            respond(
                w,
                401,
                &[json, ("WWW-Authenticate", challenge)],
                UNAUTHORIZED,
            )?;
            Ok(true)
        }
    }
}

/// Takes one count of the current fault if it matches this request.
fn take_fault(st: &State, method: &str, path: &str) -> Fault {
    if method != "GET" {
        return Fault::None;
    }
    let mut f = st.fault.lock().unwrap();
    let (pc, times) = match &mut *f {
        Fault::None => return Fault::None,
        Fault::CorruptBody {
            path_contains,
            times,
        }
        | Fault::Truncate {
            path_contains,
            times,
        }
        | Fault::Status {
            path_contains,
            times,
            ..
        }
        | Fault::Stall {
            path_contains,
            times,
        }
        | Fault::Reset {
            path_contains,
            times,
        } => (path_contains, times),
    };
    if *times == 0 || !path.contains(pc.as_str()) {
        return Fault::None;
    }
    *times -= 1;
    st.hits.fetch_add(1, Ordering::SeqCst);
    f.clone()
}

fn handle(st: &State, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    // not HTTP (a TLS ClientHello, or the wake-up connect of Drop): 400 and close
    let first = r.fill_buf()?.first().copied();
    match first {
        None => return Ok(()),
        Some(b) if b.is_ascii_uppercase() => {}
        Some(_) => return respond(&mut w, 400, &[], b"not HTTP\n"),
    }
    let Some(req) = read_head(&mut r)? else {
        return Ok(());
    };
    let mut parts = req.line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return respond(&mut w, 400, &[], b"bad request line\n");
    };
    let method = method.to_string();
    let target = target.to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    if req
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if is_chunked(&req) {
        read_chunked(&mut r)?
    } else if let Some(n) = content_length(&req)? {
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        b
    } else {
        Vec::new()
    };
    st.log.lock().unwrap().push(format!("{method} {path}"));

    let auth_on = *st.auth.lock().unwrap() != Auth::None;
    if check_auth(st, &mut w, &req, &method, &path)? {
        return Ok(());
    }
    let canned = st
        .canned
        .lock()
        .unwrap()
        .iter()
        .find(|c| method == "GET" && c.0 == target)
        .cloned();
    if let Some((_, status, headers, body)) = canned {
        let headers: Vec<(&str, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        return respond(&mut w, status, &headers, &body);
    }
    let fault = take_fault(st, &method, &path);
    match &fault {
        Fault::Reset { .. } => {
            drop(r);
            drop(w);
            return Ok(());
        }
        Fault::Status { status, .. } => {
            let body = format!(
                r#"{{"errors":[{{"code":"INJECTED","message":"fault proxy: status {status}"}}]}}"#
            );
            return respond(
                &mut w,
                *status,
                &[("Content-Type", "application/json".to_string())],
                body.as_bytes(),
            );
        }
        _ => {}
    }

    // forward
    let up = TcpStream::connect(&st.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut upw = up.try_clone()?;
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", st.upstream);
    for (k, v) in &req.headers {
        let lk = k.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lk.as_str())
            || matches!(lk.as_str(), "host" | "content-length" | "expect")
            || (auth_on && lk == "authorization")
        {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    upw.write_all(out.as_bytes())?;
    upw.write_all(&body)?;
    upw.flush()?;

    let mut ur = BufReader::new(up);
    let resp = loop {
        let h = read_head(&mut ur)?.ok_or_else(|| bad("upstream closed without a response"))?;
        // skip interim 1xx responses
        if h.line
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('1'))
        {
            continue;
        }
        break h;
    };
    let status: u16 = resp
        .line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {:?}", resp.line)))?;
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let mut rbody = if no_body {
        Vec::new()
    } else if is_chunked(&resp) {
        read_chunked(&mut ur)?
    } else if let Some(n) = content_length(&resp)? {
        let mut b = vec![0; n];
        ur.read_exact(&mut b)?;
        b
    } else {
        let mut b = Vec::new();
        ur.read_to_end(&mut b)?;
        b
    };
    drop(ur);

    let upstream_url = format!("http://{}", st.upstream);
    let mut head = format!("{}\r\n", resp.line);
    for (k, v) in &resp.headers {
        let lk = k.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lk.as_str()) || (lk == "content-length" && !no_body) {
            continue;
        }
        if lk == "location"
            && let Some(rest) = v.strip_prefix(&upstream_url)
        {
            head.push_str(&format!("{k}: http://{}{rest}\r\n", st.host));
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !no_body {
        head.push_str(&format!("Content-Length: {}\r\n", rbody.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    w.write_all(head.as_bytes())?;
    match fault {
        Fault::CorruptBody { .. } => {
            if !rbody.is_empty() {
                let mid = rbody.len() / 2;
                rbody[mid] ^= 0xff;
            }
            w.write_all(&rbody)?;
        }
        Fault::Truncate { .. } => {
            w.write_all(&rbody[..rbody.len() / 2])?;
            w.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Stall { .. } => {
            w.write_all(&rbody[..rbody.len() / 2])?;
            w.flush()?;
            let mut stalled = st.stalled.lock().unwrap();
            if !st.stop.load(Ordering::SeqCst) {
                stalled.push(w);
            }
            return Ok(());
        }
        _ => w.write_all(&rbody)?,
    }
    w.flush()?;
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}
