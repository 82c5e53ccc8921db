//! The registry client (OCI distribution spec v1.1): manifests and blobs by tag or digest,
//! through mirrors with fallback, with auth (Basic and the Docker token protocol), TLS with
//! extra CAs, retries with exponential backoff, and every blob's size and sha256 checked while
//! it streams into the [`Cache`]; pushing blobs and manifests.
//!
//! Memory stays flat: blobs are streamed through a 64 KiB buffer into the cache; only
//! manifests (≤ 4 MiB), configs (≤ 8 MiB) and signature payloads are held in memory.

use crate::Error;
use crate::auth::{Credentials, Keychain, parse_challenge};
use crate::cache::Cache;
use crate::config::{Endpoint, RegistriesConfig, ca_pem};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::types::{
    Descriptor, Document, MANIFEST_ACCEPT, MAX_CONFIG, MAX_MANIFEST, Manifest, parse_document,
    select_platform,
};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Mirrors and per-host TLS/auth.
    pub registries: RegistriesConfig,
    /// Credentials.
    pub keychain: Keychain,
    /// Extra CA certificates (PEM) trusted for every host.
    pub extra_ca: Vec<Vec<u8>>,
    /// Forward proxies (none by default: the environment is not read).
    pub proxy: crate::proxy::Proxies,
    /// Connect and per-read timeout (a stalled transfer fails after this long).
    pub timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubled per retry.
    pub backoff: Duration,
    /// User agent.
    pub user_agent: String,
    /// Log each retry and fallback on stderr.
    pub verbose: bool,
    /// Told about every blob download (the imager draws progress from it).
    pub progress: Option<std::sync::Arc<dyn Progress>>,
}

/// Progress reports for blob downloads.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A download of `total` bytes of `what` starts; the meter is told every chunk.
    fn download(&self, what: &str, total: u64) -> Box<dyn Meter>;
}

/// One download's progress.
pub trait Meter: Send {
    /// `n` more bytes arrived.
    fn add(&mut self, n: u64);
    /// The download completed (a meter dropped without this call failed or was retried).
    fn finish(self: Box<Self>);
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            registries: RegistriesConfig::default(),
            keychain: Keychain::default(),
            extra_ca: Vec::new(),
            proxy: crate::proxy::Proxies::default(),
            timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(250),
            user_agent: "talos-rs-imager".into(),
            verbose: true,
            progress: None,
        }
    }
}

/// A resolved manifest or index.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its digest (what the reference's tag pointed at, or the pinned digest).
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// The endpoint that served it.
    pub endpoint: Endpoint,
}

/// A pulled single-platform image: every blob is in the cache.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as given.
    pub reference: Reference,
    /// What the reference resolved to (index or manifest): signatures are checked on this.
    pub top: Resolved,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The platform manifest's media type.
    pub manifest_media_type: String,
    /// Its raw bytes.
    pub manifest_bytes: Vec<u8>,
    /// Parsed.
    pub manifest: Manifest,
    /// The config blob.
    pub config: Vec<u8>,
    /// Blob paths in the cache (config and layers).
    pub blobs: BTreeMap<Digest, PathBuf>,
}

/// A cosign signature layer as fetched: payload and annotations.
#[derive(Debug, Clone)]
pub struct SignatureBlob {
    /// The layer blob (the signed payload).
    pub payload: Vec<u8>,
    /// The layer descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cache", &self.cache.root())
            .finish_non_exhaustive()
    }
}

/// The client.
pub struct Client {
    opts: ClientOptions,
    cache: Cache,
    agents: Mutex<BTreeMap<String, ureq::Agent>>,
    /// (host, repository, push) → Authorization header value.
    tokens: Mutex<BTreeMap<(String, String, bool), String>>,
    stats: Mutex<Stats>,
}

/// At most this many referrers are looked at.
const MAX_REFERRERS: usize = 64;
/// At most this many pages of the referrers API are read.
const MAX_REFERRER_PAGES: usize = 16;

/// The target of the `rel="next"` link of a `Link` header (RFC 8288), if any.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

/// `link` resolved against the endpoint `base` (`scheme://host[:port]/…`): a path, or an
/// absolute URL on the same scheme and authority; anything else is `None`.
fn same_origin(base: &str, link: &str) -> Option<String> {
    let origin = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    if link.starts_with('/') && !link.starts_with("//") {
        return Some(format!("{origin}{link}"));
    }
    let rest = link.strip_prefix(&origin)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| link.to_string())
}

/// A response from the registry.
type Response = ureq::http::Response<ureq::Body>;

/// A request body, made afresh for each attempt.
type MakeBody<'a> = &'a dyn Fn() -> Result<Box<dyn Read + Send>, Error>;

/// The value of response header `name`, if it is text.
fn header<'r>(resp: &'r Response, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads a manifest, index or referrers response, at most [`MAX_MANIFEST`] bytes.
fn read_document(resp: Response, url: &str, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Transient(format!("{url}: reading: {e}")))?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(Failure::Fatal(Error::TooLarge {
            what: what.to_string(),
            max: MAX_MANIFEST,
        }));
    }
    Ok(bytes)
}

/// What the client did (for reports and tests).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Blob downloads (cache misses).
    pub downloads: u64,
    /// Bytes downloaded into the cache.
    pub bytes: u64,
    /// Cache hits.
    pub hits: u64,
    /// Retries.
    pub retries: u64,
}

enum Failure {
    /// Worth retrying (5xx, 429, transport, body errors).
    Transient(String),
    /// Not worth retrying on this endpoint.
    Fatal(Error),
}

const BUF: usize = 1 << 16;

impl Client {
    /// A client using `cache`.
    pub fn new(opts: ClientOptions, cache: Cache) -> Result<Self, Error> {
        for ca in &opts.extra_ca {
            parse_certs(ca).map_err(|e| Error::Config(format!("extra CA: {e}")))?;
        }
        Ok(Self {
            opts,
            cache,
            agents: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(Stats::default()),
        })
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn log(&self, msg: &str) {
        if self.opts.verbose {
            eprintln!("imager: registry: {msg}");
        }
    }

    /// The agent for an endpoint: its host's TLS settings, and the proxy for its scheme and
    /// host.
    fn agent(&self, ep: &Endpoint) -> Result<ureq::Agent, Error> {
        let host = ep.host.as_str();
        let https = ep.base.starts_with("https://");
        let key = format!("{}://{host}", if https { "https" } else { "http" });
        let mut agents = self
            .agents
            .lock()
            .map_err(|_| Error::Config("agent cache poisoned".into()))?;
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let proxy = match self.opts.proxy.for_endpoint(https, host) {
            Some(url) => Some(ureq::Proxy::new(&url).map_err(|e| {
                // never the proxy's credentials
                Error::Config(format!(
                    "proxy {:?}: {e}",
                    crate::proxy::without_credentials(&url)
                ))
            })?),
            None => None,
        };
        let hc = self.opts.registries.host(host);
        let tls = hc.and_then(|c| c.tls.as_ref());
        let skip_verify = tls.is_some_and(|t| t.insecure_skip_verify);
        let mut cas = self.opts.extra_ca.clone();
        if let Some(t) = tls
            && !t.ca.is_empty()
        {
            cas.push(
                ca_pem(&t.ca).map_err(|e| Error::Config(format!("config.{host}.tls.ca: {e}")))?,
            );
        }
        let tls = tls_config(&cas, skip_verify)?;
        let t = Some(self.opts.timeout);
        // Every socket read and write has the timeout: a registry that stalls mid-body fails
        // the attempt (and is retried) instead of hanging. Statuses are handled here, the
        // token is kept on same-host redirects only, and the proxy is the options' (none is
        // taken from the environment).
        let config = ureq::Agent::config_builder()
            .timeout_connect(t)
            .timeout_per_read(t)
            .timeout_per_write(t)
            .user_agent(self.opts.user_agent.as_str())
            .max_redirects(5)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .http_status_as_error(false)
            .proxy(proxy)
            .tls_config(tls)
            .build();
        let a = ureq::Agent::new_with_config(config);
        agents.insert(key, a.clone());
        Ok(a)
    }

    fn credentials(&self, host: &str) -> Result<Credentials, Error> {
        if let Some(a) = self
            .opts
            .registries
            .host(host)
            .and_then(|c| c.auth.as_ref())
        {
            let c = Credentials::from_config(a, host)?;
            if c != Credentials::Anonymous {
                return Ok(c);
            }
        }
        self.opts.keychain.lookup(host)
    }

    /// Sends one `method` request to `url` with `headers` and auth (answering one 401
    /// challenge), without retries. Statuses of 400 and above are failures.
    #[allow(clippy::too_many_arguments)]
    fn send_once(
        &self,
        ep: &Endpoint,
        repository: &str,
        push: bool,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<MakeBody<'_>>,
    ) -> Result<Response, Failure> {
        let agent = self.agent(ep).map_err(Failure::Fatal)?;
        let key = (ep.host.clone(), repository.to_string(), push);
        let mut authz = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        for round in 0..2 {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = &authz {
                req = req.header("Authorization", a.as_str());
            }
            let bad = |e: ureq::http::Error| {
                Failure::Fatal(Error::Registry(format!("{method} {url}: {e}")))
            };
            let res = match body {
                Some(b) => {
                    let r = b().map_err(Failure::Fatal)?;
                    agent.run(
                        req.body(ureq::SendBody::from_owned_reader(r))
                            .map_err(bad)?,
                    )
                }
                None => agent.run(req.body(()).map_err(bad)?),
            };
            let r = res.map_err(transport_failure)?;
            let code = r.status().as_u16();
            if code < 400 {
                return Ok(r);
            }
            if code == 401 && round == 0 {
                let h = header(&r, "www-authenticate").unwrap_or("").to_string();
                let _ = read_capped(r, 4096);
                let a = self
                    .authorize(ep, repository, push, &h)
                    .map_err(Failure::Fatal)?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(key.clone(), a.clone());
                }
                authz = Some(a);
                continue;
            }
            let at = {
                use ureq::ResponseExt as _;
                r.get_uri().to_string()
            };
            let text = read_capped(r, 4096);
            let msg = format!("{at}: HTTP {code}: {}", text.trim());
            return Err(if code >= 500 || code == 429 || code == 408 {
                Failure::Transient(msg)
            } else if code == 401 || code == 403 {
                Failure::Fatal(Error::Auth(msg))
            } else if code == 404 {
                Failure::Fatal(Error::NotFound(msg))
            } else {
                Failure::Fatal(Error::Registry(msg))
            });
        }
        Err(Failure::Fatal(Error::Auth(format!(
            "{}: still unauthorized after authenticating",
            ep.base
        ))))
    }

    /// Answers a `WWW-Authenticate` challenge: the `Authorization` value to use.
    fn authorize(
        &self,
        ep: &Endpoint,
        repository: &str,
        push: bool,
        header: &str,
    ) -> Result<String, Error> {
        let creds = self.credentials(&ep.host)?;
        let ch = parse_challenge(header).ok_or_else(|| {
            Error::Auth(format!(
                "{}: 401 without a WWW-Authenticate challenge",
                ep.base
            ))
        })?;
        match ch.scheme.as_str() {
            "basic" => creds.basic_header().ok_or_else(|| {
                Error::Auth(format!(
                    "{} requires credentials (none found for {}: use --registry-auth, the registries config or ~/.docker/config.json)",
                    ep.base, ep.host
                ))
            }),
            "bearer" => {
                let realm = ch.params.get("realm").cloned().unwrap_or_default();
                if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                    return Err(Error::Auth(format!("{}: token realm {realm:?} is not a URL", ep.base)));
                }
                let scope = format!(
                    "repository:{repository}:{}",
                    if push { "pull,push" } else { "pull" }
                );
                // the realm's own host decides its proxy and TLS settings
                let agent = match Endpoint::parse(&realm, true) {
                    Ok(r) => self.agent(&r)?,
                    Err(_) => self.agent(ep)?,
                };
                let service = ch.params.get("service").cloned().unwrap_or_default();
                let res = match &creds {
                    Credentials::IdentityToken(t) => agent.post(&realm).send_form([
                        ("grant_type", "refresh_token"),
                        ("refresh_token", t.as_str()),
                        ("service", service.as_str()),
                        ("scope", scope.as_str()),
                        ("client_id", "talos-rs-imager"),
                    ]),
                    _ => {
                        let mut r = agent
                            .get(&realm)
                            .query("service", &service)
                            .query("scope", &scope);
                        if let Some(b) = creds.basic_header() {
                            r = r.header("Authorization", &b);
                        }
                        r.call()
                    }
                };
                let r = match res {
                    Ok(r) if r.status().as_u16() < 400 => r,
                    Ok(r) => {
                        let code = r.status().as_u16();
                        let t = read_capped(r, 2048);
                        return Err(Error::Auth(format!(
                            "token request to {realm} for {scope}: HTTP {code}: {}{}",
                            t.trim(),
                            if creds == Credentials::Anonymous {
                                " (no credentials found for this registry)"
                            } else {
                                ""
                            }
                        )));
                    }
                    Err(e) => return Err(Error::Auth(format!("token request to {realm}: {e}"))),
                };
                let text = read_capped(r, 1 << 20);
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::Auth(format!("token response from {realm}: {e}")))?;
                let tok = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::Auth(format!("token response from {realm} has no token")))?;
                Ok(format!("Bearer {tok}"))
            }
            other => Err(Error::Auth(format!(
                "{}: unsupported auth scheme {other:?}",
                ep.base
            ))),
        }
    }

    /// Runs `op` with retries on transient failures.
    fn retry<T>(&self, what: &str, mut op: impl FnMut() -> Result<T, Failure>) -> Result<T, Error> {
        let mut delay = self.opts.backoff;
        let attempts = self.opts.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match op() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(m)) => {
                    last = m;
                    if attempt < attempts {
                        self.log(&format!(
                            "{what}: {last}; retrying in {} ms (attempt {}/{attempts})",
                            delay.as_millis(),
                            attempt + 1
                        ));
                        self.bump(|s| s.retries += 1);
                        std::thread::sleep(delay);
                        delay = delay.saturating_mul(2);
                    }
                }
            }
        }
        Err(Error::Transfer(format!(
            "{what}: giving up after {attempts} attempt(s): {last}"
        )))
    }

    /// Tries `op` on each endpoint in turn; the error lists every endpoint's failure.
    fn on_endpoints<T>(
        &self,
        r: &Reference,
        eps: &[Endpoint],
        mut op: impl FnMut(&Endpoint) -> Result<T, Error>,
    ) -> Result<(T, Endpoint), Error> {
        let mut errors = Vec::new();
        for ep in eps {
            match op(ep) {
                Ok(v) => return Ok((v, ep.clone())),
                Err(e) => {
                    if eps.len() > 1 {
                        self.log(&format!("{r}: endpoint {ep} failed: {e}"));
                    }
                    errors.push((ep.clone(), e));
                }
            }
        }
        if errors.len() == 1 {
            let (_, e) = errors.remove(0);
            return Err(e);
        }
        Err(Error::Endpoints {
            reference: r.to_string(),
            errors: errors
                .into_iter()
                .map(|(ep, e)| format!("{ep}: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    fn endpoints(&self, r: &Reference, insecure: bool) -> Result<Vec<Endpoint>, Error> {
        self.opts.registries.endpoints(r, insecure)
    }

    /// The endpoints of `r`, starting with `first` (the one that served its manifest).
    fn endpoints_from(
        &self,
        r: &Reference,
        first: &Endpoint,
        insecure: bool,
    ) -> Result<Vec<Endpoint>, Error> {
        let mut eps = vec![first.clone()];
        eps.extend(
            self.endpoints(r, insecure)?
                .into_iter()
                .filter(|e| e != first),
        );
        Ok(eps)
    }

    fn get_manifest_at(
        &self,
        ep: &Endpoint,
        r: &Reference,
        selector: &str,
    ) -> Result<Resolved, Error> {
        let url = ep.url(&r.repository, "manifests", selector);
        let what = format!("manifest {}@{selector} from {ep}", r.name());
        self.retry(&what, || {
            let resp = self.send_once(
                ep,
                &r.repository,
                false,
                "GET",
                &url,
                &[("Accept", MANIFEST_ACCEPT)],
                None,
            )?;
            let mt = header(&resp, "content-type")
                .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
                .unwrap_or_default();
            let header_digest = header(&resp, "docker-content-digest").map(str::to_string);
            let bytes = read_document(resp, &url, &what)?;
            let digest = Digest::of(&bytes);
            if let Ok(pinned) = Digest::parse(selector)
                && pinned != digest
            {
                return Err(Failure::Transient(format!(
                    "{what}: content digest {digest} does not match the requested {pinned}"
                )));
            }
            if let Some(h) = header_digest
                && h != digest.as_str()
                && h.starts_with("sha256:")
            {
                return Err(Failure::Transient(format!(
                    "{what}: content digest {digest} does not match Docker-Content-Digest {h}"
                )));
            }
            let doc = parse_document(&bytes, &mt, &what).map_err(Failure::Fatal)?;
            let media_type = crate::types::document_media_type(&doc);
            Ok(Resolved {
                digest,
                media_type,
                bytes,
                endpoint: ep.clone(),
            })
        })
    }

    /// Resolves `r` (tag or digest) to its top-level manifest or index, trying the mirrors.
    pub fn resolve(&self, r: &Reference, insecure: bool) -> Result<Resolved, Error> {
        let eps = self.endpoints(r, insecure)?;
        let sel = r.selector();
        let (res, _) = self.on_endpoints(r, &eps, |ep| self.get_manifest_at(ep, r, &sel))?;
        self.cache
            .insert_bytes(&res.bytes, &format!("manifest {r}"))?;
        Ok(res)
    }

    /// Streams a blob into the cache (a hit costs nothing), checking size and digest.
    pub fn fetch_blob(
        &self,
        r: &Reference,
        eps: &[Endpoint],
        d: &Descriptor,
        note: &str,
    ) -> Result<PathBuf, Error> {
        if self.cache.has_verified(&d.digest, Some(d.size)) {
            self.bump(|s| s.hits += 1);
            return Ok(self.cache.blob_path(&d.digest));
        }
        let (path, _) = self.on_endpoints(r, eps, |ep| {
            let url = ep.url(&r.repository, "blobs", d.digest.as_str());
            let what = format!("blob {} of {}", d.digest, r.name());
            self.retry(&what, || {
                let mut transient = None;
                let res = self
                    .cache
                    .get_or_insert(&d.digest, Some(d.size), note, |w| {
                        match self.download(ep, r, &url, d, w) {
                            Ok(()) => Ok(()),
                            Err(Failure::Fatal(e)) => Err(e),
                            Err(Failure::Transient(m)) => {
                                transient = Some(m.clone());
                                Err(Error::Transfer(m))
                            }
                        }
                    });
                match res {
                    Ok((p, hit)) => {
                        if hit {
                            self.bump(|s| s.hits += 1);
                        } else {
                            self.bump(|s| {
                                s.downloads += 1;
                                s.bytes += d.size;
                            });
                        }
                        Ok(p)
                    }
                    Err(_) if transient.is_some() => {
                        Err(Failure::Transient(transient.unwrap_or_default()))
                    }
                    // a corrupt transfer (wrong digest or size) may be a flaky hop: retry
                    Err(e @ (Error::Mismatch { .. } | Error::Size { .. })) => {
                        Err(Failure::Transient(format!("{url}: {e}")))
                    }
                    Err(e) => Err(Failure::Fatal(e)),
                }
            })
        })?;
        Ok(path)
    }

    fn download(
        &self,
        ep: &Endpoint,
        r: &Reference,
        url: &str,
        d: &Descriptor,
        w: &mut dyn Write,
    ) -> Result<(), Failure> {
        let resp = self.send_once(ep, &r.repository, false, "GET", url, &[], None)?;
        if let Some(len) = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok())
            && len != d.size
        {
            return Err(Failure::Transient(format!(
                "{url}: Content-Length {len} but the descriptor says {} bytes",
                d.size
            )));
        }
        // never read more than the descriptor's size (+1 to notice an overlong body)
        let mut rd = resp.into_body().into_reader().take(d.size + 1);
        let mut meter = self.opts.progress.as_ref().map(|p| {
            let hex = d.digest.hex();
            p.download(
                &format!("pull {}@sha256:{}", r.name(), &hex[..hex.len().min(12)]),
                d.size,
            )
        });
        let mut buf = vec![0u8; BUF];
        let mut n_total = 0u64;
        loop {
            let n = match rd.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Transient(format!(
                        "{url}: reading after {n_total} of {} bytes: {e}",
                        d.size
                    )));
                }
            };
            n_total += n as u64;
            if let Some(m) = meter.as_mut() {
                m.add(n as u64);
            }
            w.write_all(&buf[..n]).map_err(|e| {
                Failure::Fatal(Error::Io {
                    what: "writing into the cache".into(),
                    source: e,
                })
            })?;
        }
        if n_total < d.size {
            return Err(Failure::Transient(format!(
                "{url}: truncated: {n_total} of {} bytes",
                d.size
            )));
        }
        if let Some(m) = meter {
            m.finish();
        }
        Ok(())
    }

    /// Pulls the `linux/<arch>` image of `r` (from an index, or a single manifest whose config
    /// says `linux/<arch>`) with every blob into the cache.
    pub fn pull(&self, r: &Reference, arch: &str, insecure: bool) -> Result<Image, Error> {
        let top = self.resolve(r, insecure)?;
        self.pull_resolved(r, top, arch, insecure)
    }

    /// Like [`Client::pull`], from an already resolved (and perhaps signature-checked) top
    /// manifest: nothing is re-resolved, so the image is exactly what `top` names.
    pub fn pull_resolved(
        &self,
        r: &Reference,
        top: Resolved,
        arch: &str,
        insecure: bool,
    ) -> Result<Image, Error> {
        let what = r.to_string();
        // the endpoint that answered first, then the others
        let eps = self.endpoints_from(r, &top.endpoint, insecure)?;
        let doc = parse_document(&top.bytes, &top.media_type, &what)?;
        let (mdigest, mtype, mbytes, manifest) = match doc {
            Document::Manifest(m) => (
                top.digest.clone(),
                top.media_type.clone(),
                top.bytes.clone(),
                m,
            ),
            Document::Index(ix) => {
                let d = select_platform(&ix, arch, &what)?.clone();
                let pinned = r.with_digest(d.digest.clone());
                let (res, _) = self.on_endpoints(r, &eps, |ep| {
                    self.get_manifest_at(ep, &pinned, d.digest.as_str())
                })?;
                if res.bytes.len() as u64 != d.size {
                    return Err(Error::Size {
                        digest: d.digest.clone(),
                        expected: d.size,
                        got: res.bytes.len() as u64,
                    });
                }
                self.cache
                    .insert_bytes(&res.bytes, &format!("manifest {r} linux/{arch}"))?;
                match parse_document(&res.bytes, &res.media_type, &what)? {
                    Document::Manifest(m) => (res.digest, res.media_type, res.bytes, m),
                    Document::Index(_) => {
                        return Err(Error::Manifest {
                            what,
                            why: "nested indexes are not supported for registry pulls".into(),
                        });
                    }
                }
            }
        };
        if manifest.config.size > MAX_CONFIG {
            return Err(Error::TooLarge {
                what: format!("config of {what}"),
                max: MAX_CONFIG,
            });
        }
        let mut blobs = BTreeMap::new();
        let cp = self.fetch_blob(r, &eps, &manifest.config, &format!("config {r}"))?;
        blobs.insert(manifest.config.digest.clone(), cp);
        let config = self.cache.read(&manifest.config.digest, MAX_CONFIG)?;
        // a single manifest must be for the requested platform
        crate::types::check_config_platform(&config, arch, &what)?;
        for l in &manifest.layers {
            let p = self.fetch_blob(r, &eps, l, &format!("layer of {r}"))?;
            blobs.insert(l.digest.clone(), p);
        }
        Ok(Image {
            reference: r.clone(),
            top,
            manifest_digest: mdigest,
            manifest_media_type: mtype,
            manifest_bytes: mbytes,
            manifest,
            config,
            blobs,
        })
    }

    /// The cosign signatures of `digest` in `r`'s repository (tag `sha256-<hex>.sig`, fetched
    /// through the same mirrors). None found is an empty list, not an error.
    pub fn signatures(
        &self,
        r: &Reference,
        digest: &Digest,
        insecure: bool,
    ) -> Result<Vec<SignatureBlob>, Error> {
        let sig_ref = r.with_tag(&format!("sha256-{}.sig", digest.hex()));
        let res = match self.resolve(&sig_ref, insecure) {
            Ok(r) => r,
            Err(e) if e.is_absent() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let m = match parse_document(&res.bytes, &res.media_type, &sig_ref.to_string())? {
            Document::Manifest(m) => m,
            Document::Index(_) => {
                return Err(Error::Manifest {
                    what: sig_ref.to_string(),
                    why: "a signature image must be a manifest, not an index".into(),
                });
            }
        };
        let eps = self.endpoints_from(r, &res.endpoint, insecure)?;
        let mut out = Vec::new();
        for l in m.layers.iter().take(64) {
            if l.size > 1 << 20 {
                return Err(Error::TooLarge {
                    what: format!("signature payload {} in {sig_ref}", l.digest),
                    max: 1 << 20,
                });
            }
            self.fetch_blob(&sig_ref, &eps, l, &format!("signature {sig_ref}"))?;
            out.push(SignatureBlob {
                payload: self.cache.read(&l.digest, 1 << 20)?,
                annotations: l.annotations.clone(),
            });
        }
        Ok(out)
    }

    /// The Sigstore bundles attached to `digest` as OCI 1.1 referrers (cosign v3's format):
    /// the referrers API (`/v2/<name>/referrers/<digest>`), else the `sha256-<hex>` tag that
    /// registries without the API hold instead. Only manifests whose `subject` is `digest` and
    /// whose single layer is a Sigstore bundle count; at most 64 referrers, 1 MiB per bundle.
    /// Returns the bundles and, for each referrer or route that could not be read, why (a
    /// stale or oversized referrer never hides the others). None found is an empty list.
    pub fn referrer_bundles(
        &self,
        r: &Reference,
        digest: &Digest,
        insecure: bool,
    ) -> Result<(Vec<Vec<u8>>, Vec<String>), Error> {
        let mut skipped = Vec::new();
        let eps = self.endpoints(r, insecure)?;
        let what = format!("referrers of {}@{digest}", r.name());
        let parse = |index: &[u8]| -> Result<Vec<serde_json::Value>, Error> {
            let v: serde_json::Value =
                serde_json::from_slice(index).map_err(|e| Error::Manifest {
                    what: what.clone(),
                    why: format!("not JSON: {e}"),
                })?;
            Ok(v["manifests"].as_array().cloned().unwrap_or_default())
        };
        // the referrers API, following `Link: <…>; rel="next"` pages on the same registry
        let api = self.on_endpoints(r, &eps, |ep| {
            let mut url = ep.url(&r.repository, "referrers", digest.as_str());
            let mut entries = Vec::new();
            for page in 0.. {
                let what = format!("referrers of {}@{digest} from {ep}", r.name());
                let (bytes, next) = self.retry(&what, || {
                    let resp = self.send_once(
                        ep,
                        &r.repository,
                        false,
                        "GET",
                        &url,
                        &[("Accept", crate::types::OCI_INDEX)],
                        None,
                    )?;
                    let next = header(&resp, "link").and_then(next_link);
                    Ok((read_document(resp, &url, &what)?, next))
                })?;
                entries.extend(parse(&bytes)?);
                let Some(next) = next else { break };
                if entries.len() >= MAX_REFERRERS || page + 1 >= MAX_REFERRER_PAGES {
                    self.log(&format!(
                        "{what}: stopping after {} page(s), {} referrers",
                        page + 1,
                        entries.len()
                    ));
                    break;
                }
                url = same_origin(&ep.base, &next).ok_or_else(|| {
                    Error::Registry(format!(
                        "{what}: the next page {next:?} is not on {}",
                        ep.host
                    ))
                })?;
            }
            Ok(entries)
        });
        let entries = match api {
            Ok((entries, _)) => entries,
            // no referrers API (404, or a registry that answers the route otherwise): the
            // tag schema
            Err(e) => {
                if !e.is_absent() {
                    skipped.push(format!("referrers API: {e}"));
                }
                let tag = r.with_tag(&format!("sha256-{}", digest.hex()));
                match self.resolve(&tag, insecure) {
                    Ok(res) => parse(&res.bytes)?,
                    Err(e) if e.is_absent() => return Ok((Vec::new(), skipped)),
                    Err(e) => return Err(e),
                }
            }
        };
        let mut out = Vec::new();
        for m in entries.iter().take(MAX_REFERRERS) {
            let artifact = m["artifactType"].as_str().unwrap_or_default();
            if !artifact.starts_with(crate::types::SIGSTORE_BUNDLE_PREFIX) {
                continue;
            }
            let Some(d) = m["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
                continue;
            };
            let res = match self.resolve(&r.with_digest(d.clone()), insecure) {
                Ok(res) => res,
                Err(e) => {
                    skipped.push(format!("referrer {d}: {e}"));
                    continue;
                }
            };
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&res.bytes) else {
                skipped.push(format!("referrer {d}: not JSON"));
                continue;
            };
            if doc["subject"]["digest"].as_str() != Some(digest.as_str()) {
                continue;
            }
            let layers: Vec<Descriptor> =
                serde_json::from_value(doc["layers"].clone()).unwrap_or_default();
            let [layer] = layers.as_slice() else {
                continue;
            };
            if !layer
                .media_type
                .starts_with(crate::types::SIGSTORE_BUNDLE_PREFIX)
            {
                continue;
            }
            if layer.size > 1 << 20 {
                skipped.push(format!(
                    "referrer {d}: its bundle is {} bytes (at most 1 MiB)",
                    layer.size
                ));
                continue;
            }
            let eps = self.endpoints_from(r, &res.endpoint, insecure)?;
            let fetched = self
                .fetch_blob(r, &eps, layer, &format!("Sigstore bundle of {}", r.name()))
                .and_then(|_| self.cache.read(&layer.digest, 1 << 20));
            match fetched {
                Ok(b) => out.push(b),
                Err(e) => skipped.push(format!("referrer {d}: {e}")),
            }
        }
        Ok((out, skipped))
    }

    /// Pushes an image: every blob (skipped when the registry has it), then the manifest under
    /// `target`'s tag (or digest). Pushes go to the reference's own registry, never a mirror.
    /// Returns the manifest digest.
    pub fn push(
        &self,
        target: &Reference,
        insecure: bool,
        manifest: &[u8],
        media_type: &str,
        blobs: &[(Descriptor, PathBuf)],
    ) -> Result<Digest, Error> {
        let ep = Endpoint::origin(&target.registry, insecure);
        let repo = target.repository.clone();
        for (d, path) in blobs {
            self.push_blob(&ep, &repo, d, path)?;
        }
        let digest = Digest::of(manifest);
        let url = ep.url(&repo, "manifests", &target.selector());
        let what = format!("pushing manifest {target}");
        let body = manifest.to_vec();
        self.retry(&what, || {
            let b = body.clone();
            let mk_body = move || -> Result<Box<dyn Read + Send>, Error> {
                Ok(Box::new(io::Cursor::new(b.clone())))
            };
            let len = body.len().to_string();
            let resp = self.send_once(
                &ep,
                &repo,
                true,
                "PUT",
                &url,
                &[("Content-Type", media_type), ("Content-Length", &len)],
                Some(&mk_body),
            )?;
            if let Some(h) = header(&resp, "docker-content-digest")
                && h != digest.as_str()
            {
                return Err(Failure::Fatal(Error::Registry(format!(
                    "{what}: the registry stored digest {h}, expected {digest}"
                ))));
            }
            Ok(())
        })?;
        Ok(digest)
    }

    fn push_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        d: &Descriptor,
        path: &std::path::Path,
    ) -> Result<(), Error> {
        let head_url = ep.url(repo, "blobs", d.digest.as_str());
        let what = format!("pushing blob {} to {}/{repo}", d.digest, ep.host);
        self.retry(&what, || {
            match self.send_once(ep, repo, true, "HEAD", &head_url, &[], None) {
                Ok(r) if r.status().as_u16() == 200 => return Ok(()),
                Ok(_) | Err(Failure::Fatal(Error::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
            let start = self.send_once(
                ep,
                repo,
                true,
                "POST",
                &ep.upload_url(repo),
                &[("Content-Length", "0")],
                None,
            )?;
            let loc = header(&start, "location").unwrap_or("").to_string();
            if loc.is_empty() {
                return Err(Failure::Fatal(Error::Registry(format!(
                    "{what}: upload start without a Location"
                ))));
            }
            let base = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc
            } else {
                // relative to the endpoint's scheme://authority
                let origin = ep.base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                format!("{origin}{loc}")
            };
            let sep = if base.contains('?') { '&' } else { '?' };
            let put_url = format!("{base}{sep}digest={}", d.digest);
            let p = path.to_path_buf();
            let size = d.size;
            let body = move || -> Result<Box<dyn Read + Send>, Error> {
                let f = std::fs::File::open(&p).map_err(|e| Error::Io {
                    what: format!("opening {}", p.display()),
                    source: e,
                })?;
                Ok(Box::new(io::BufReader::with_capacity(BUF, f).take(size)))
            };
            let len = size.to_string();
            self.send_once(
                ep,
                repo,
                true,
                "PUT",
                &put_url,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", &len),
                ],
                Some(&body),
            )?;
            Ok(())
        })
    }
}

/// At most this many tags are listed.
const MAX_TAGS: usize = 10_000;
/// At most this many pages of the tag list are read.
const MAX_TAG_PAGES: usize = 64;

/// A blob streamed from the registry ([`Client::open_blob`]): at most the descriptor's size
/// is read, and the chunk that completes it is only handed out once the whole blob's digest
/// matched; a mismatch or a short body is an error instead, so a reader never sees all the
/// bytes of a wrong blob.
pub struct BlobReader {
    body: Box<dyn Read + Send>,
    hasher: sha2::Sha256,
    remaining: u64,
    digest: Digest,
    what: String,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.body.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: truncated, {} bytes missing", self.what, self.remaining),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            let got = Digest::from_sha256(&got);
            if got != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: content digest {got}, expected {}",
                        self.what, self.digest
                    ),
                ));
            }
        }
        Ok(n)
    }
}

impl Client {
    /// The tags of `r`'s repository (`/v2/<name>/tags/list`, following `Link` pages on the
    /// same registry), at most 10,000, in the registry's order. A repository that does not
    /// exist is [`Error::NotFound`].
    pub fn tags(&self, r: &Reference, insecure: bool) -> Result<Vec<String>, Error> {
        let eps = self.endpoints(r, insecure)?;
        let (tags, _) = self.on_endpoints(r, &eps, |ep| {
            let mut url = format!("{}?n=1000", ep.url(&r.repository, "tags", "list"));
            let mut tags = Vec::new();
            for _ in 0..MAX_TAG_PAGES {
                let what = format!("tags of {} from {ep}", r.name());
                let (bytes, next) = self.retry(&what, || {
                    let resp = self.send_once(ep, &r.repository, false, "GET", &url, &[], None)?;
                    let next = header(&resp, "link").and_then(next_link);
                    Ok((read_document(resp, &url, &what)?, next))
                })?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                        what: what.clone(),
                        why: format!("not JSON: {e}"),
                    })?;
                for t in v["tags"].as_array().into_iter().flatten() {
                    if let Some(t) = t.as_str() {
                        tags.push(t.to_string());
                    }
                }
                let Some(next) = next else { break };
                if tags.len() >= MAX_TAGS {
                    break;
                }
                url = same_origin(&ep.base, &next).ok_or_else(|| {
                    Error::Registry(format!(
                        "{what}: the next page {next:?} is not on {}",
                        ep.host
                    ))
                })?;
            }
            tags.truncate(MAX_TAGS);
            Ok(tags)
        })?;
        Ok(tags)
    }

    /// Opens the blob `d` of `r`'s repository for streaming, without the cache (the mirrors
    /// are tried for the start of the transfer; nothing is retried once bytes flow). The
    /// reader checks size and digest ([`BlobReader`]).
    pub fn open_blob(
        &self,
        r: &Reference,
        insecure: bool,
        d: &Descriptor,
    ) -> Result<BlobReader, Error> {
        Ok(self
            .open_blob_sized(r, insecure, &d.digest, Some(d.size))?
            .1)
    }

    /// Like [`Client::open_blob`] for a blob known by digest only: its size is the
    /// registry's `Content-Length` (required, at most `max`).
    pub fn open_blob_by_digest(
        &self,
        r: &Reference,
        insecure: bool,
        digest: &Digest,
        max: u64,
    ) -> Result<(u64, BlobReader), Error> {
        let (size, reader) = self.open_blob_sized(r, insecure, digest, None)?;
        if size > max {
            return Err(Error::TooLarge {
                what: format!("blob {digest} of {}", r.name()),
                max,
            });
        }
        Ok((size, reader))
    }

    fn open_blob_sized(
        &self,
        r: &Reference,
        insecure: bool,
        digest: &Digest,
        expected: Option<u64>,
    ) -> Result<(u64, BlobReader), Error> {
        let eps = self.endpoints(r, insecure)?;
        let ((size, body), _) = self.on_endpoints(r, &eps, |ep| {
            let url = ep.url(&r.repository, "blobs", digest.as_str());
            let what = format!("blob {digest} of {}", r.name());
            self.retry(&what, || {
                let resp = self.send_once(ep, &r.repository, false, "GET", &url, &[], None)?;
                let len = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok());
                let size = match (len, expected) {
                    (Some(l), Some(e)) if l != e => {
                        return Err(Failure::Fatal(Error::Size {
                            digest: digest.clone(),
                            expected: e,
                            got: l,
                        }));
                    }
                    (_, Some(e)) => e,
                    (Some(l), None) => l,
                    (None, None) => {
                        return Err(Failure::Fatal(Error::Registry(format!(
                            "{url}: no Content-Length"
                        ))));
                    }
                };
                Ok((
                    size,
                    Box::new(resp.into_body().into_reader()) as Box<dyn Read + Send>,
                ))
            })
        })?;
        // an empty blob has exactly one digest; nothing is read to check it later
        if size == 0 && *digest != Digest::of(b"") {
            return Err(Error::Mismatch {
                expected: digest.clone(),
                got: Digest::of(b""),
            });
        }
        Ok((
            size,
            BlobReader {
                body,
                hasher: sha2::Sha256::default(),
                remaining: size,
                digest: digest.clone(),
                what: format!("blob {digest} of {}", r.name()),
            },
        ))
    }
}

fn read_capped(r: Response, max: u64) -> String {
    let mut s = String::new();
    let _ = r.into_body().into_reader().take(max).read_to_string(&mut s);
    s
}

/// A request that got no HTTP response: a certificate problem fails the same way every time,
/// anything else (refused, reset, timed out) is worth another attempt.
fn transport_failure(e: ureq::Error) -> Failure {
    let msg = e.to_string();
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_)
            if msg.contains("certificate") || msg.contains("Certificate") =>
        {
            Failure::Fatal(Error::Registry(msg))
        }
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            Failure::Fatal(Error::Registry(msg))
        }
        _ => Failure::Transient(msg),
    }
}

fn parse_certs(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item.map_err(|e| format!("bad PEM: {e}"))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    Ok(certs)
}

/// TLS for one host: Mozilla's roots (webpki-roots 1.x through ureq), plus the extra CAs when
/// there are any (then the same roots from webpki-root-certs 1.x, in certificate form, so that
/// both can be given to rustls); or no verification at all (`insecureSkipVerify`).
pub fn tls_config(cas: &[Vec<u8>], skip_verify: bool) -> Result<ureq::tls::TlsConfig, Error> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let b = TlsConfig::builder().provider(TlsProvider::Rustls);
    if skip_verify {
        return Ok(b.disable_verification(true).build());
    }
    if cas.is_empty() {
        return Ok(b.root_certs(RootCerts::WebPki).build());
    }
    let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()))
        .collect();
    for ca in cas {
        roots.extend(parse_certs(ca).map_err(|e| Error::Config(format!("CA: {e}")))?);
    }
    Ok(b.root_certs(RootCerts::new_with_certs(&roots)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        let l = r#"</v2/a/referrers/sha256:00?n=2&last=x>; rel="next""#;
        assert_eq!(
            next_link(l).as_deref(),
            Some("/v2/a/referrers/sha256:00?n=2&last=x")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/next>;rel=next"#).as_deref(),
            Some("https://x/next")
        );
        assert_eq!(next_link(r#"<https://x/p>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn a_mirror_without_it_is_absence_for_optional_lookups() {
        let e = |errors: &str| Error::Endpoints {
            reference: "r".into(),
            errors: errors.into(),
        };
        let mirror = "http://m:5000: not found: http://m:5000/v2/x/manifests/t: HTTP 404";
        let down = "https://up: giving up after 4 attempt(s): io: Connection refused";
        assert!(!e(&format!("{mirror}; {down}")).is_not_found());
        assert!(e(&format!("{mirror}; {down}")).is_absent());
        assert!(e(&format!("{mirror}; {mirror}")).is_not_found());
        assert!(!e(&format!("{down}; {down}")).is_absent());
        assert!(Error::NotFound("x".into()).is_absent());
    }

    #[test]
    fn next_pages_stay_on_the_registry() {
        let base = "https://reg.example:5000/v2";
        assert_eq!(
            same_origin(base, "/v2/a/referrers/x?last=1").as_deref(),
            Some("https://reg.example:5000/v2/a/referrers/x?last=1")
        );
        assert_eq!(
            same_origin(base, "https://reg.example:5000/v2/a?l=1").as_deref(),
            Some("https://reg.example:5000/v2/a?l=1")
        );
        for other in [
            "https://evil.example/v2/a",
            "http://reg.example:5000/v2/a",
            "https://reg.example:50001/v2/a",
            "https://reg.example:5000.evil/v2",
            "//evil.example/v2/a",
            "v2/a",
        ] {
            assert_eq!(same_origin(base, other), None, "{other}");
        }
    }
}
