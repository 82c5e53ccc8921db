//! The factory's state and operations behind the HTTP routes (docs/formats/factory.md): versions and
//! catalogs read from the input registry, schematics, and assets built on demand with the
//! imager library, de-duplicated per profile hash, bounded by `build.maxConcurrency`, cached
//! in the registry ([`crate::store`]).

use crate::artifacts::{self, ExtensionRef, OverlayRef};
use crate::config::Config;
use crate::enhance::{self, Pinned};
use crate::log;
use crate::store::{Entry, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Schematics kept in memory (then the map starts again).
const SCHEMATIC_MEMORY: usize = 4096;
/// How long a version's pinned inputs are reused before being resolved again.
const PIN_TTL: Duration = Duration::from_secs(300);

/// A failed request: what the client is told, and with which status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FactoryError {
    /// 400: the request names something malformed or unsupported.
    #[error("{0}")]
    BadRequest(String),
    /// 404: a version, schematic or asset that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: a route that exists, with another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503: an input registry or the cache cannot be reached, or the service stops.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a build failed for a reason of the factory's own.
    #[error("{0}")]
    Internal(String),
}

impl FactoryError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }
}

type Result<T> = std::result::Result<T, FactoryError>;

fn unavailable(x: impl std::fmt::Display) -> FactoryError {
    FactoryError::Unavailable(x.to_string())
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests served, by status class (`2xx`… as index 2…5).
    pub requests: [AtomicU64; 6],
    /// Builds finished.
    pub builds: AtomicU64,
    /// Builds failed.
    pub build_failures: AtomicU64,
    /// Milliseconds spent building.
    pub build_ms: AtomicU64,
    /// Asset lookups answered by the cache.
    pub hits: AtomicU64,
    /// Asset lookups that needed a build.
    pub misses: AtomicU64,
    /// Cache entries refused (bad signature, wrong shape).
    pub rejected: AtomicU64,
    /// Asset bytes sent.
    pub bytes: AtomicU64,
    /// Builds running now.
    pub running: AtomicU64,
    /// Builds waiting for a slot now.
    pub queued: AtomicU64,
    /// Requests being served now.
    pub in_flight: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        one(
            "factory_builds_total",
            "counter",
            "Asset builds finished.",
            g(&self.builds),
        );
        one(
            "factory_build_failures_total",
            "counter",
            "Asset builds failed.",
            g(&self.build_failures),
        );
        one(
            "factory_build_seconds_total",
            "counter",
            "Seconds spent building (milliseconds precision).",
            g(&self.build_ms) / 1000,
        );
        one(
            "factory_cache_hits_total",
            "counter",
            "Asset requests answered from the registry cache.",
            g(&self.hits),
        );
        one(
            "factory_cache_misses_total",
            "counter",
            "Asset requests that needed a build.",
            g(&self.misses),
        );
        one(
            "factory_cache_rejected_total",
            "counter",
            "Cache entries refused (signature or shape).",
            g(&self.rejected),
        );
        one(
            "factory_bytes_served_total",
            "counter",
            "Asset bytes sent to clients.",
            g(&self.bytes),
        );
        one(
            "factory_builds_running",
            "gauge",
            "Builds running.",
            g(&self.running),
        );
        one(
            "factory_builds_queued",
            "gauge",
            "Builds waiting for a build slot.",
            g(&self.queued),
        );
        one(
            "factory_requests_in_flight",
            "gauge",
            "Requests being served.",
            g(&self.in_flight),
        );
        s.push_str("# HELP factory_http_requests_total HTTP requests by status class.\n# TYPE factory_http_requests_total counter\n");
        for (i, c) in self.requests.iter().enumerate().skip(2) {
            s.push_str(&format!(
                "factory_http_requests_total{{code=\"{i}xx\"}} {}\n",
                g(c)
            ));
        }
        s
    }
}

/// One piece of work that requests wait for.
#[derive(Debug)]
pub(crate) struct Flight<T> {
    done: Mutex<Option<Result<T>>>,
    cv: Condvar,
}

/// The pieces of work under way, by key.
pub(crate) type Flights<T> = Mutex<BTreeMap<String, Arc<Flight<T>>>>;

/// A version's extension catalog and when it was read.
type Catalog = (Instant, Arc<Vec<ExtensionRef>>);

/// A version's installer-base, pinned.
#[derive(Debug, Clone)]
struct Base {
    reference: String,
    epoch: i64,
    at: Instant,
}

/// The factory.
pub struct Factory {
    /// The configuration.
    pub cfg: Config,
    /// The SecureBoot keys (`secureBoot.enabled`).
    pub secureboot: Option<enhance::SecureBootKeys>,
    /// The SecureBoot signing certificate (PEM), served to users.
    pub secureboot_cert: Option<String>,
    store: Store,
    build_fetch: imager::inputs::registry::FetchOptions,
    work: PathBuf,
    versions: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
    catalogs: Mutex<BTreeMap<String, Catalog>>,
    bases: Mutex<BTreeMap<(String, String), Base>>,
    schematics: Mutex<BTreeMap<String, Arc<schematic::Schematic>>>,
    flights: Flights<Entry>,
    pub(crate) installer_flights: Flights<crate::frontend::Manifest>,
    slots: (Mutex<usize>, Condvar),
    seq: AtomicU64,
    /// Counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("store", &self.store)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)` → Unix seconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let mut rest = s.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    if !(rest == "Z" || rest == "+00:00") {
        return None;
    }
    let days = civil::days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    Some(days * 86400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?)
}

impl Factory {
    /// A factory over `store`, building in `work` with `build_fetch`.
    pub fn new(
        cfg: Config,
        store: Store,
        build_fetch: imager::inputs::registry::FetchOptions,
        work: PathBuf,
    ) -> std::result::Result<Self, String> {
        let (secureboot, secureboot_cert) = if cfg.secure_boot.enabled {
            let f = &cfg.secure_boot.file;
            let abs = |p: &str| {
                std::fs::canonicalize(p)
                    .map(|p| p.display().to_string())
                    .map_err(|e| format!("secureBoot.file {p}: {e}"))
            };
            let cert = std::fs::read(&f.signing_cert_path)
                .map_err(|e| format!("secureBoot.file.signingCertPath: {e}"))?;
            if cert.len() as u64 > crate::config::MAX_PEM {
                return Err("secureBoot.file.signingCertPath: larger than 1 MiB".into());
            }
            let pem = String::from_utf8(cert.clone())
                .map_err(|_| "secureBoot.file.signingCertPath: not PEM text".to_string())?;
            (
                Some(enhance::SecureBootKeys {
                    key: abs(&f.signing_key_path)?,
                    cert: abs(&f.signing_cert_path)?,
                    pcr_key: abs(&f.pcr_key_path)?,
                    cert_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&cert)),
                }),
                Some(pem),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            secureboot,
            secureboot_cert,
            cfg,
            store,
            build_fetch,
            work,
            versions: Mutex::new(None),
            catalogs: Mutex::new(BTreeMap::new()),
            bases: Mutex::new(BTreeMap::new()),
            schematics: Mutex::new(BTreeMap::new()),
            flights: Mutex::new(BTreeMap::new()),
            installer_flights: Mutex::new(BTreeMap::new()),
            slots: (Mutex::new(0), Condvar::new()),
            seq: AtomicU64::new(0),
            metrics: Metrics::default(),
        })
    }

    /// The build work directory.
    pub(crate) fn work(&self) -> &std::path::Path {
        &self.work
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn core_ref(&self, component: &str, tag: &str) -> Result<oci::Reference> {
        oci::Reference::parse(&format!("{}:{tag}", self.cfg.core_repo(component)))
            .map_err(|e| FactoryError::BadRequest(e.to_string()))
    }

    /// The versions offered (the installer-base tags, oldest first), read again after
    /// `artifacts.talosVersionRecheckInterval`.
    pub fn versions(&self) -> Result<Arc<Vec<String>>> {
        if let Ok(v) = self.versions.lock()
            && let Some((at, list)) = v.as_ref()
            && at.elapsed() < self.cfg.recheck()
        {
            return Ok(list.clone());
        }
        let r = self.core_ref(&self.cfg.artifacts.core.components.installer_base, "latest")?;
        let tags = self
            .store
            .fetcher()
            .client()
            .tags(&r, self.cfg.artifacts.core.insecure)
            .map_err(|e| unavailable(format!("listing {}: {e}", r.name())))?;
        let list = Arc::new(artifacts::offered(
            &tags,
            &self.cfg.build.min_talos_version,
            &self.cfg.build.broken_talos_versions,
        ));
        if let Ok(mut v) = self.versions.lock() {
            *v = Some((Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// `version` if it is offered, else 404.
    pub fn check_version(&self, version: &str) -> Result<()> {
        if self.versions()?.iter().any(|v| v == version) {
            Ok(())
        } else {
            Err(FactoryError::NotFound(format!(
                "version {:?} is not available",
                clip(version)
            )))
        }
    }

    /// The files of the catalog image `component:version`, pulled after verification.
    fn catalog_files(
        &self,
        component: &str,
        version: &str,
        names: &[&str],
    ) -> Result<BTreeMap<String, String>> {
        let r = self.core_ref(component, version)?;
        let img = self
            .store
            .fetcher()
            .pull(
                component,
                &r.to_string(),
                self.cfg.artifacts.core.insecure,
                "amd64",
            )
            .map_err(|e| unavailable(format!("catalog {r}: {e}")))?;
        let mut out = BTreeMap::new();
        for l in &img.manifest.layers {
            if let Some(p) = img.blobs.get(&l.digest) {
                out.extend(
                    artifacts::layer_files(p, names, &r.to_string())
                        .map_err(|e| FactoryError::Internal(e.to_string()))?,
                );
            }
        }
        Ok(out)
    }

    /// Whether the catalog image `component:version` exists (a version without one lists
    /// nothing).
    fn catalog_exists(&self, component: &str, version: &str) -> Result<bool> {
        let r = self.core_ref(component, version)?;
        match self
            .store
            .fetcher()
            .client()
            .resolve(&r, self.cfg.artifacts.core.insecure)
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_absent() => Ok(false),
            Err(e) => Err(unavailable(format!("{r}: {e}"))),
        }
    }

    /// The official extensions of `version`.
    pub fn extensions(&self, version: &str) -> Result<Arc<Vec<ExtensionRef>>> {
        self.check_version(version)?;
        if let Ok(c) = self.catalogs.lock()
            && let Some((at, list)) = c.get(version)
            && at.elapsed() < PIN_TTL
        {
            return Ok(list.clone());
        }
        let comp = self
            .cfg
            .artifacts
            .core
            .components
            .extension_manifest
            .clone();
        let list = if self.catalog_exists(&comp, version)? {
            let files =
                self.catalog_files(&comp, version, &["image-digests", "descriptions.yaml"])?;
            Arc::new(
                artifacts::extensions(&files, &format!("{comp}:{version}"))
                    .map_err(|e| FactoryError::Internal(e.to_string()))?,
            )
        } else {
            Arc::new(Vec::new())
        };
        if let Ok(mut c) = self.catalogs.lock() {
            c.insert(version.to_string(), (Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// The official overlays of `version` (an empty list when the registry has no overlay
    /// catalog for it).
    pub fn overlays(&self, version: &str) -> Result<Vec<OverlayRef>> {
        self.check_version(version)?;
        let comp = self.cfg.artifacts.core.components.overlay_manifest.clone();
        if !self.catalog_exists(&comp, version)? {
            return Ok(Vec::new());
        }
        let files = self.catalog_files(&comp, version, &["overlays.yaml"])?;
        artifacts::overlays(&files, &format!("{comp}:{version}"))
            .map_err(|e| FactoryError::Internal(e.to_string()))
    }

    /// The installer-base of `version` for `arch`, pinned to the digest its signature was
    /// verified on, and the SOURCE_DATE_EPOCH of its builds.
    fn base(&self, version: &str, arch: &str) -> Result<Base> {
        let key = (version.to_string(), arch.to_string());
        if let Ok(b) = self.bases.lock()
            && let Some(b) = b.get(&key)
            && b.at.elapsed() < PIN_TTL
        {
            return Ok(b.clone());
        }
        let r = self.core_ref(&self.cfg.artifacts.core.components.installer_base, version)?;
        let insecure = self.cfg.artifacts.core.insecure;
        let f = self.store.fetcher();
        let (top, _) = f
            .resolve_verified("installer-base", &r, insecure)
            .map_err(|e| unavailable(e.to_string()))?;
        let pinned = r.with_digest(top.digest.clone());
        let (archs, config) = crate::frontend::platforms(f.client(), &pinned, &top, insecure)?;
        if !archs.contains(&arch) {
            return Err(FactoryError::NotFound(format!(
                "version {version} has no {arch} installer-base"
            )));
        }
        let epoch = match self.cfg.build.source_date_epoch {
            Some(e) => e,
            None => {
                let config = match config {
                    Some(c) => c,
                    None => {
                        f.client()
                            .pull_resolved(&r, top.clone(), arch, insecure)
                            .map_err(|e| unavailable(format!("{r} linux/{arch}: {e}")))?
                            .config
                    }
                };
                serde_json::from_slice::<serde_json::Value>(&config)
                    .ok()
                    .and_then(|v| v["created"].as_str().and_then(parse_rfc3339))
                    .unwrap_or(0)
            }
        };
        let b = Base {
            reference: format!("{}@{}", pinned.name(), top.digest),
            epoch,
            at: Instant::now(),
        };
        if let Ok(mut m) = self.bases.lock() {
            m.insert(key, b.clone());
        }
        Ok(b)
    }

    /// Parses, checks and stores a schematic; returns its ID and canonical text. With
    /// `normalize`, the extensions are sorted and deduplicated first (the normalized ID).
    pub fn create_schematic(&self, body: &[u8], normalize: bool) -> Result<(String, String)> {
        let mut s = schematic::parse(body)
            .map_err(|e| FactoryError::BadRequest(format!("invalid schematic: {e}")))?;
        s.validate()
            .map_err(|e| FactoryError::BadRequest(format!("invalid schematic: {e}")))?;
        if normalize {
            s = s.normalized();
        }
        let text = s
            .canonical()
            .map_err(|e| FactoryError::BadRequest(format!("invalid schematic: {e}")))?;
        let id = s
            .id()
            .map_err(|e| FactoryError::BadRequest(format!("invalid schematic: {e}")))?;
        let known = self.schematics.lock().is_ok_and(|m| m.contains_key(&id));
        if !known {
            self.store
                .put_schematic(&id, &text)
                .map_err(|e| unavailable(format!("storing schematic {id}: {e}")))?;
            self.remember(&id, s);
        }
        Ok((id, text))
    }

    fn remember(&self, id: &str, s: schematic::Schematic) {
        if let Ok(mut m) = self.schematics.lock() {
            if m.len() >= SCHEMATIC_MEMORY {
                m.clear();
            }
            m.insert(id.to_string(), Arc::new(s));
        }
    }

    /// The schematic `id`, from memory or the registry.
    pub fn schematic(&self, id: &str) -> Result<Arc<schematic::Schematic>> {
        if id.len() != 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(FactoryError::BadRequest(format!(
                "invalid schematic ID {:?}: 64 lowercase hex digits",
                clip(id)
            )));
        }
        if let Ok(m) = self.schematics.lock()
            && let Some(s) = m.get(id)
        {
            return Ok(s.clone());
        }
        let text = self
            .store
            .get_schematic(id)
            .map_err(unavailable)?
            .ok_or_else(|| FactoryError::NotFound(format!("schematic {id} not found")))?;
        let s = schematic::parse(text.as_bytes())
            .map_err(|e| FactoryError::Internal(format!("stored schematic {id}: {e}")))?;
        self.remember(id, s.clone());
        Ok(Arc::new(s))
    }

    /// The canonical text of schematic `id`.
    pub fn schematic_text(&self, id: &str) -> Result<String> {
        self.schematic(id)?
            .canonical()
            .map_err(|e| FactoryError::Internal(e.to_string()))
    }

    /// The imager profile (resolved) and the SOURCE_DATE_EPOCH of an asset.
    pub fn plan(
        &self,
        id: &str,
        version: &str,
        path: &str,
    ) -> Result<(imager::profile::Resolved, i64, String)> {
        let asset =
            crate::path::parse(path).map_err(|e| FactoryError::BadRequest(e.to_string()))?;
        let s = self.schematic(id)?;
        self.check_version(version)?;
        let base = self.base(version, asset.arch)?;
        let mut extensions = Vec::new();
        let wanted = &s.customization.system_extensions.official_extensions;
        if !wanted.is_empty() {
            let catalog = self.extensions(version)?;
            for name in wanted {
                let e = catalog.iter().find(|e| &e.name == name).ok_or_else(|| {
                    FactoryError::BadRequest(format!(
                        "extension {:?} is not in the official extensions of {version}",
                        clip(name)
                    ))
                })?;
                extensions.push(format!(
                    "{}/{}@{}",
                    self.cfg.artifacts.core.registry, e.name, e.digest
                ));
            }
        }
        let pins = Pinned {
            base: base.reference,
            extensions,
            insecure: self.cfg.artifacts.core.insecure,
            secureboot: self.secureboot.clone(),
            overlay: self.overlay_ref(version, &s)?,
            schematic_extension: Some(self.schematic_extension(id, &s, version)?),
        };
        let value = enhance::profile(&asset, version, &s, &pins)
            .map_err(|e| FactoryError::BadRequest(e.to_string()))?;
        let r = imager::profile::resolve(
            value,
            "the factory's profile",
            std::path::Path::new(imager::profile::BASE_INSTALL_DIR),
            &Default::default(),
        )
        .map_err(|e| FactoryError::BadRequest(format!("{e:#}")))?;
        let hash = enhance::hash(&r.profile, base.epoch, self.secureboot.as_ref())
            .map_err(|e| FactoryError::Internal(format!("{e:#}")))?;
        Ok((r, base.epoch, hash))
    }

    /// The path of schematic `id`'s virtual extension tarball in the work directory, written
    /// once (to a temporary name, then renamed).
    fn schematic_extension(
        &self,
        id: &str,
        s: &schematic::Schematic,
        version: &str,
    ) -> Result<String> {
        use imager::profile::quirks::{Quirk, Quirks};
        let extra = Quirks::new(version).has(Quirk::Overlays);
        let dir = self.work.join("schematics");
        let path = dir.join(format!("{id}-{extra}.tar"));
        if !path.is_file() {
            let canonical = s
                .canonical()
                .map_err(|e| FactoryError::Internal(e.to_string()))?;
            let bytes = enhance::schematic_extension(id, &canonical, extra)
                .map_err(|e| FactoryError::Internal(e.to_string()))?;
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{id}-{}-{n}.tmp", std::process::id()));
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&tmp, &bytes))
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| FactoryError::Internal(format!("{}: {e}", path.display())))?;
        }
        Ok(path.display().to_string())
    }

    /// The schematic's overlay in `version`'s overlay catalog (matched by image path, without
    /// a registry host, and name), pinned by digest on `artifacts.core.registry`.
    fn overlay_ref(&self, version: &str, s: &schematic::Schematic) -> Result<Option<String>> {
        let o = &s.overlay;
        if o.image.is_empty() && o.name.is_empty() {
            return Ok(None);
        }
        let wanted = oci::Reference::parse(&o.image)
            .map(|r| r.repository)
            .unwrap_or_else(|_| o.image.clone());
        let found = self
            .overlays(version)?
            .into_iter()
            .find(|e| e.image == wanted && e.name == o.name);
        match found {
            Some(e) => Ok(Some(format!(
                "{}/{}@{}",
                self.cfg.artifacts.core.registry, e.image, e.digest
            ))),
            None => Err(FactoryError::BadRequest(format!(
                "overlay {:?} ({:?}) is not an official overlay of {version}",
                clip(&o.image),
                clip(&o.name)
            ))),
        }
    }

    /// The cache entry of an asset: looked up, or built once however many ask.
    pub fn asset(self: &Arc<Self>, id: &str, version: &str, path: &str) -> Result<Entry> {
        let (r, epoch, hash) = self.plan(id, version, path)?;
        self.get_or_build(&hash, r, epoch, path)
    }

    fn lookup(&self, hash: &str) -> Result<Option<Entry>> {
        let (entry, why) = self.store.lookup(hash).map_err(unavailable)?;
        if let Some(why) = why {
            self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            log::warn("cache entry refused", &[("hash", hash), ("why", &why)]);
        }
        Ok(entry)
    }

    fn get_or_build(
        self: &Arc<Self>,
        hash: &str,
        r: imager::profile::Resolved,
        epoch: i64,
        name: &str,
    ) -> Result<Entry> {
        if let Some(e) = self.lookup(hash)? {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e);
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let hash_s = hash.to_string();
        let name_s = name.to_string();
        self.single_flight(
            |f| &f.flights,
            hash,
            name,
            move |me| me.build_once(&hash_s, &r, epoch, &name_s),
        )
    }

    /// Runs `work` once per `key` however many callers ask at the same time: the first caller
    /// starts it on a thread of its own (a caller that goes away does not cancel it), the
    /// others wait for its result, each at most `build.timeoutSeconds`.
    pub(crate) fn single_flight<T: Clone + Send + 'static>(
        self: &Arc<Self>,
        map: fn(&Factory) -> &Flights<T>,
        key: &str,
        what: &str,
        work: impl FnOnce(&Arc<Factory>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let poisoned = || FactoryError::Internal("flights poisoned".into());
        let (flight, leader) = {
            let mut m = map(self).lock().map_err(|_| poisoned())?;
            match m.get(key) {
                Some(f) => (f.clone(), false),
                None if m.len() >= self.cfg.build.max_concurrency + self.cfg.build.max_queued => {
                    return Err(FactoryError::Unavailable(format!(
                        "{} builds are running or queued; try again later",
                        m.len()
                    )));
                }
                None => {
                    let f = Arc::new(Flight {
                        done: Mutex::new(None),
                        cv: Condvar::new(),
                    });
                    m.insert(key.to_string(), f.clone());
                    (f, true)
                }
            }
        };
        if leader {
            let me = Arc::clone(self);
            let key_s = key.to_string();
            let f = flight.clone();
            let spawned = std::thread::Builder::new()
                .name("build".into())
                .spawn(move || {
                    // whatever happens to the work (a panic included), the waiters get an
                    // answer and the key is free again
                    let guard = Landing {
                        f: f.clone(),
                        me: me.clone(),
                        map,
                        key: key_s,
                    };
                    let res = work(&me);
                    guard.land(res);
                });
            if let Err(e) = spawned {
                if let Ok(mut m) = map(self).lock() {
                    m.remove(key);
                }
                return Err(FactoryError::Unavailable(format!(
                    "cannot start the build of {what}: {e}"
                )));
            }
        }
        let limit = Duration::from_secs(self.cfg.build.timeout_seconds.max(1));
        let start = Instant::now();
        let mut d = flight.done.lock().map_err(|_| poisoned())?;
        while d.is_none() {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(FactoryError::Unavailable(format!(
                    "the build of {what} did not finish in {} s",
                    limit.as_secs()
                )));
            }
            d = flight.cv.wait_timeout(d, left).map_err(|_| poisoned())?.0;
        }
        d.clone()
            .unwrap_or_else(|| Err(FactoryError::Internal("no build result".into())))
    }

    fn acquire(&self) -> Result<SlotGuard<'_>> {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let (m, cv) = &self.slots;
        let mut n = m
            .lock()
            .map_err(|_| FactoryError::Internal("slots poisoned".into()))?;
        while *n >= self.cfg.build.max_concurrency {
            n = cv
                .wait(n)
                .map_err(|_| FactoryError::Internal("slots poisoned".into()))?;
        }
        *n += 1;
        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        self.metrics.running.fetch_add(1, Ordering::Relaxed);
        Ok(SlotGuard { f: self })
    }

    /// One build: a slot, a last look in the cache (another instance may have built it
    /// meanwhile), the imager, the push and the signature.
    fn build_once(
        &self,
        hash: &str,
        r: &imager::profile::Resolved,
        epoch: i64,
        name: &str,
    ) -> Result<Entry> {
        // another instance may have built it meanwhile: looked up before waiting for a
        // slot and again once one is free
        if let Some(e) = self.lookup(hash)? {
            return Ok(e);
        }
        let _slot = self.acquire()?;
        if let Some(e) = self.lookup(hash)? {
            return Ok(e);
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let out = self
            .work
            .join("builds")
            .join(format!("{hash}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)
            .map_err(|e| FactoryError::Internal(format!("{}: {e}", out.display())))?;
        let start = Instant::now();
        log::info("build started", &[("hash", hash), ("asset", name)]);
        let res = self.build_in(hash, r, epoch, &out);
        let _ = std::fs::remove_dir_all(&out);
        let ms = start.elapsed().as_millis() as u64;
        self.metrics.build_ms.fetch_add(ms, Ordering::Relaxed);
        match &res {
            Ok(_) => {
                self.metrics.builds.fetch_add(1, Ordering::Relaxed);
                log::info(
                    "build finished",
                    &[("hash", hash), ("asset", name), ("ms", &ms.to_string())],
                );
            }
            Err(e) => {
                self.metrics.build_failures.fetch_add(1, Ordering::Relaxed);
                log::error(
                    "build failed",
                    &[("hash", hash), ("asset", name), ("error", &e.to_string())],
                );
            }
        }
        res
    }

    fn build_in(
        &self,
        hash: &str,
        r: &imager::profile::Resolved,
        epoch: i64,
        out: &std::path::Path,
    ) -> Result<Entry> {
        let o = imager::build::BuildOptions {
            output_dir: out.to_path_buf(),
            epoch,
            digests: true,
            inputs: imager::inputs::Options {
                fetch: self.build_fetch.clone(),
                extensions: Default::default(),
                push: false,
                overlay_timeout: Duration::from_secs(300),
            },
            push: None,
            sign: None,
        };
        let artifacts = imager::build::build(r, &o).map_err(|e| {
            use imager::error::ExitCode;
            match e.code {
                ExitCode::InvalidInput | ExitCode::Unsupported => {
                    FactoryError::BadRequest(format!("{e:#}"))
                }
                ExitCode::Dependency => FactoryError::Unavailable(format!("{e:#}")),
                _ => FactoryError::Internal(format!("{e:#}")),
            }
        })?;
        // an installer build also leaves its image as a layout directory, which is not served
        let files: Vec<_> = artifacts
            .iter()
            .filter(|a| a.kind != "oci-layout")
            .collect();
        let [a] = files.as_slice() else {
            return Err(FactoryError::Internal(format!(
                "the build wrote {} files, not one",
                files.len()
            )));
        };
        let sha = a
            .sha256
            .clone()
            .ok_or_else(|| FactoryError::Internal("no digest of the artifact".into()))?;
        self.store
            .put(hash, &a.path, &sha)
            .map_err(|e| unavailable(format!("caching {}: {e}", a.path.display())))
    }
}

/// Ends a flight: stores its result (an error if the work never returned one), wakes the
/// waiters and frees the key.
struct Landing<T: Clone + Send + 'static> {
    f: Arc<Flight<T>>,
    me: Arc<Factory>,
    map: fn(&Factory) -> &Flights<T>,
    key: String,
}

impl<T: Clone + Send + 'static> Landing<T> {
    fn land(self, res: Result<T>) {
        if let Ok(mut d) = self.f.done.lock() {
            *d = Some(res);
        }
    }
}

impl<T: Clone + Send + 'static> Drop for Landing<T> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.f.done.lock()
            && d.is_none()
        {
            *d = Some(Err(FactoryError::Internal(
                "the build stopped unexpectedly".into(),
            )));
        }
        self.f.cv.notify_all();
        if let Ok(mut m) = (self.map)(&self.me).lock() {
            m.remove(&self.key);
        }
    }
}

struct SlotGuard<'a> {
    f: &'a Factory,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let (m, cv) = &self.f.slots;
        if let Ok(mut n) = m.lock() {
            *n = n.saturating_sub(1);
        }
        self.f.metrics.running.fetch_sub(1, Ordering::Relaxed);
        cv.notify_one();
    }
}

/// `s` shortened and with control characters escaped, for messages.
pub fn clip(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_times() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20+00:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20+02:00"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
