//! The factory's configuration (docs/formats/factory.md, "Configuration"): upstream's keys where they
//! exist (`http.httpListenAddr`, `cache.oci.registry`, `artifacts.core.registry`, …), read
//! from the built-in defaults, then the environment (`IF_` + the key path in upper case with
//! `_` between levels: `IF_CACHE_OCI_REGISTRY`), then each `--config` file (YAML or JSON) in
//! order, later sources overriding earlier ones. Unknown keys are errors.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Bound on a configuration file.
const MAX_FILE: u64 = 1 << 20;

/// A registry repository (`registry/namespace/repository`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Repo {
    /// Registry host (`host[:port]`).
    pub registry: String,
    /// Path inside the registry.
    pub namespace: String,
    /// Repository name.
    pub repository: String,
    /// Plain HTTP.
    pub insecure: bool,
}

impl Repo {
    /// The repository as an image name without tag.
    pub fn name(&self) -> String {
        let mut s = self.registry.clone();
        for part in [&self.namespace, &self.repository] {
            if !part.is_empty() {
                s.push('/');
                s.push_str(part.trim_matches('/'));
            }
        }
        s
    }
}

/// `http`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    /// Listen address (`:8080`, `127.0.0.1:8080`).
    #[serde(rename = "httpListenAddr")]
    pub listen_addr: String,
    /// The public URL of the service (links, PXE scripts); else `http://<Host header>`.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The public URL PXE scripts point at; else `externalURL`.
    #[serde(rename = "externalPXEURL")]
    pub external_pxe_url: String,
    /// Requests served at once; more are answered 503 (this project's key).
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish on SIGTERM (this project's key).
    pub shutdown_grace_seconds: u64,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen_addr: ":8080".into(),
            external_url: String::new(),
            external_pxe_url: String::new(),
            max_connections: 512,
            shutdown_grace_seconds: 30,
        }
    }
}

/// `build`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Build {
    /// Versions below this one are not offered.
    pub min_talos_version: String,
    /// Versions not offered.
    pub broken_talos_versions: Vec<String>,
    /// Builds running at once; more wait.
    pub max_concurrency: usize,
    /// Where builds and the input blob cache live (this project's key; default
    /// `$TMPDIR/talos-rs-factory`).
    pub work_dir: String,
    /// SOURCE_DATE_EPOCH of every build (this project's key); when unset, the `created` time
    /// of the version's installer-base image, so equal inputs give equal bytes.
    pub source_date_epoch: Option<i64>,
    /// Seconds a request waits for a build (queueing included) before it is answered 503;
    /// the build itself goes on and fills the cache (this project's key).
    pub timeout_seconds: u64,
    /// Builds waiting for a slot beyond `maxConcurrency`; more distinct builds are answered
    /// 503 at once (this project's key).
    pub max_queued: usize,
}

impl Default for Build {
    fn default() -> Self {
        Self {
            min_talos_version: "1.2.0".into(),
            broken_talos_versions: Vec::new(),
            max_concurrency: 6,
            work_dir: String::new(),
            source_date_epoch: None,
            timeout_seconds: 1800,
            max_queued: 64,
        }
    }
}

/// `containerSignature`: how input images are verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerSignature {
    /// Keyless: the certificate identity must match.
    #[serde(rename = "subjectRegExp")]
    pub subject_regexp: String,
    /// Keyless: the exact OIDC issuer.
    pub issuer: String,
    /// Keyless: the OIDC issuer pattern.
    #[serde(rename = "issuerRegExp")]
    pub issuer_regexp: String,
    /// Key mode: a cosign public key (PEM).
    pub public_key_file: String,
    /// Only `sha256` is accepted (upstream's key; its other values are refused).
    pub public_key_hash_algo: String,
    /// Keyless: the Sigstore trusted root (`trusted_root.json`), pinned as a file; this
    /// project never fetches Sigstore's TUF repository (this project's key).
    pub trusted_root_file: String,
    /// No verification (a warning at start).
    pub disabled: bool,
}

impl Default for ContainerSignature {
    fn default() -> Self {
        Self {
            subject_regexp:
                r"(@siderolabs\.com$|^releasemgr-svc@talos-production\.iam\.gserviceaccount\.com$)"
                    .into(),
            issuer: "https://accounts.google.com".into(),
            issuer_regexp: String::new(),
            public_key_file: String::new(),
            public_key_hash_algo: "sha256".into(),
            trusted_root_file: String::new(),
            disabled: false,
        }
    }
}

/// `cache`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Cache {
    /// Where built assets are stored.
    pub oci: Repo,
    /// The ECDSA P-256 key (PEM, PKCS#8 or SEC1; cosign's encrypted format with
    /// `COSIGN_PASSWORD`) that signs cache entries and assets.
    pub signing_key_path: String,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            oci: Repo {
                registry: "ghcr.io".into(),
                namespace: "siderolabs/image-factory".into(),
                repository: "cache".into(),
                insecure: false,
            },
            signing_key_path: String::new(),
        }
    }
}

/// `artifacts.core.components`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Components {
    /// The base installer images; their tags are the versions offered.
    pub installer_base: String,
    /// The extensions catalog image (`image-digests`, `descriptions.yaml`).
    pub extension_manifest: String,
    /// The overlays catalog image.
    pub overlay_manifest: String,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            installer_base: "installer-base".into(),
            extension_manifest: "extensions".into(),
            overlay_manifest: "overlays".into(),
        }
    }
}

/// `artifacts.core`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Core {
    /// Registry of the inputs (a mirror for air-gapped sites).
    pub registry: String,
    /// Namespace of the inputs.
    pub namespace: String,
    /// Plain HTTP.
    pub insecure: bool,
    /// Image names.
    pub components: Components,
}

impl Default for Core {
    fn default() -> Self {
        Self {
            registry: "ghcr.io".into(),
            namespace: "siderolabs".into(),
            insecure: false,
            components: Components::default(),
        }
    }
}

/// `artifacts.installer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Installer {
    /// Where installer images are pushed.
    pub internal: Repo,
    /// How clients reach them (redirects).
    pub external: Repo,
}

/// `artifacts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifacts {
    /// The inputs.
    pub core: Core,
    /// Where schematics are stored.
    pub schematic: Repo,
    /// Installer images.
    pub installer: Installer,
    /// How often the version list is read again (`15m`, `30s`, `1h`).
    pub talos_version_recheck_interval: String,
    /// A registries configuration file (mirrors, per-host TLS and credentials; the imager's
    /// `--registries-config` format) for every registry the factory talks to (this
    /// project's key).
    pub registries_config: String,
}

impl Default for Artifacts {
    fn default() -> Self {
        Self {
            core: Core::default(),
            schematic: Repo {
                registry: "ghcr.io".into(),
                namespace: "siderolabs/image-factory".into(),
                repository: "schematics".into(),
                insecure: false,
            },
            installer: Installer::default(),
            talos_version_recheck_interval: "15m".into(),
            registries_config: String::new(),
        }
    }
}

/// `metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    /// A separate listener for `/metrics` (upstream's `:2122`); empty: `/metrics` on the
    /// main listener.
    pub addr: String,
}

/// `secureBoot.file`: the signing keys as files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBootFile {
    /// The UKI and boot loader signing key (PEM).
    pub signing_key_path: String,
    /// Its certificate (PEM), enrolled by the assets and served at
    /// `/secureboot/signing-cert.pem`.
    pub signing_cert_path: String,
    /// The key that signs the PCR 11 policy (PEM).
    pub pcr_key_path: String,
}

/// `secureBoot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBoot {
    /// Whether `-secureboot` assets are built.
    pub enabled: bool,
    /// The keys.
    pub file: SecureBootFile,
}

/// Bound on a PEM file.
pub const MAX_PEM: u64 = 1 << 20;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// `http`.
    pub http: Http,
    /// `build`.
    pub build: Build,
    /// `containerSignature`.
    pub container_signature: ContainerSignature,
    /// `cache`.
    pub cache: Cache,
    /// `artifacts`.
    pub artifacts: Artifacts,
    /// `metrics`.
    pub metrics: Metrics,
    /// `secureBoot`.
    pub secure_boot: SecureBoot,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn err(s: impl Into<String>) -> ConfigError {
    ConfigError(s.into())
}

/// Sets `path` (case-insensitive key names) in `v` to the text `raw`, typed like the value
/// already there (booleans, numbers, lists as comma-separated text).
fn set_path(v: &mut Value, path: &[String], raw: &str, var: &str) -> Result<bool, ConfigError> {
    if path.is_empty() {
        return Ok(false);
    }
    let Value::Object(m) = v else {
        return Ok(false);
    };
    // a key may itself hold no `_`; the env path is split at every `_`, so join greedily
    for take in (1..=path.len()).rev() {
        let joined: String = path[..take].concat();
        let Some(key) = m.keys().find(|k| k.eq_ignore_ascii_case(&joined)).cloned() else {
            continue;
        };
        let rest = &path[take..];
        let Some(slot) = m.get_mut(&key) else {
            continue;
        };
        if rest.is_empty() {
            *slot = match slot {
                Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Value::Bool(true),
                    "0" | "false" | "no" | "off" | "" => Value::Bool(false),
                    _ => return Err(err(format!("{var}: {raw:?} is not a boolean"))),
                },
                Value::Number(_) | Value::Null if raw.parse::<i64>().is_ok() => {
                    Value::from(raw.parse::<i64>().unwrap_or_default())
                }
                Value::Number(_) => return Err(err(format!("{var}: {raw:?} is not a number"))),
                Value::Array(_) => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.into()))
                        .collect(),
                ),
                Value::Object(_) => {
                    return Err(err(format!("{var}: names a section, not a key")));
                }
                _ => Value::String(raw.into()),
            };
            return Ok(true);
        }
        if set_path(slot, rest, raw, var)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Merges `right` into `left` (objects key by key, anything else replaced).
fn merge(left: &mut Value, right: Value) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, v) in r {
                match l.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        l.insert(k, v);
                    }
                }
            }
        }
        (l, r) => *l = r,
    }
}

impl Config {
    /// Defaults, then `env` (pairs of name and value; those starting with `prefix` count),
    /// then each file in order.
    pub fn load(
        files: &[PathBuf],
        env: impl IntoIterator<Item = (String, String)>,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        let mut v = serde_json::to_value(Config::default()).map_err(|e| err(e.to_string()))?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.len() > prefix.len())
            .collect();
        vars.sort();
        for (k, raw) in vars {
            let path: Vec<String> = k[prefix.len()..]
                .split('_')
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if raw.chars().any(char::is_control) {
                return Err(err(format!("{k}: control characters")));
            }
            if !set_path(&mut v, &path, &raw, &k)? {
                return Err(err(format!("{k}: no such key")));
            }
        }
        for f in files {
            merge(&mut v, read_file(f)?);
        }
        let cfg: Config = serde_path_to_error::deserialize(v)
            .map_err(|e| err(format!("{}: {}", e.path(), e.inner())))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.build.max_concurrency == 0 {
            return Err(err("build.maxConcurrency must be at least 1"));
        }
        if self.http.max_connections == 0 {
            return Err(err("http.maxConnections must be at least 1"));
        }
        if !matches!(
            self.container_signature.public_key_hash_algo.as_str(),
            "" | "sha256"
        ) {
            return Err(err(format!(
                "containerSignature.publicKeyHashAlgo {:?}: only sha256 is supported",
                self.container_signature.public_key_hash_algo
            )));
        }
        if self.cache.signing_key_path.is_empty() {
            return Err(err(
                "cache.signingKeyPath is required: cache entries are signed and verified on read",
            ));
        }
        for (what, r) in [
            ("cache.oci", &self.cache.oci),
            ("artifacts.schematic", &self.artifacts.schematic),
        ] {
            if r.registry.is_empty() || r.repository.is_empty() {
                return Err(err(format!("{what}: registry and repository are required")));
            }
        }
        if self.artifacts.core.registry.is_empty() {
            return Err(err("artifacts.core.registry is required"));
        }
        let sb = &self.secure_boot;
        if sb.enabled
            && [
                &sb.file.signing_key_path,
                &sb.file.signing_cert_path,
                &sb.file.pcr_key_path,
            ]
            .iter()
            .any(|p| p.is_empty())
        {
            return Err(err(
                "secureBoot.enabled needs secureBoot.file.signingKeyPath, signingCertPath and pcrKeyPath",
            ));
        }
        duration(&self.artifacts.talos_version_recheck_interval)
            .map_err(|e| err(format!("artifacts.talosVersionRecheckInterval: {e}")))?;
        Ok(())
    }

    /// The version recheck interval.
    pub fn recheck(&self) -> std::time::Duration {
        duration(&self.artifacts.talos_version_recheck_interval)
            .unwrap_or(std::time::Duration::from_secs(900))
    }

    /// The build work directory.
    pub fn work_dir(&self) -> PathBuf {
        if self.build.work_dir.is_empty() {
            std::env::temp_dir().join("talos-rs-factory")
        } else {
            PathBuf::from(&self.build.work_dir)
        }
    }

    /// A core component's repository (`registry/namespace/name`).
    pub fn core_repo(&self, component: &str) -> String {
        Repo {
            registry: self.artifacts.core.registry.clone(),
            namespace: self.artifacts.core.namespace.clone(),
            repository: component.into(),
            insecure: self.artifacts.core.insecure,
        }
        .name()
    }
}

fn read_file(f: &Path) -> Result<Value, ConfigError> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(f)
        .and_then(|h| h.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| err(format!("{}: {e}", f.display())))?;
    if text.len() as u64 > MAX_FILE {
        return Err(err(format!("{}: larger than 1 MiB", f.display())));
    }
    let v: Value = if f.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", f.display())))?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| err(format!("{}: {e}", f.display())))?
    };
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Default::default())),
        _ => Err(err(format!("{}: not a mapping", f.display()))),
    }
}

/// Go's duration text, the forms configurations use: `90s`, `15m`, `1h`, `1h30m`, `500ms`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: a unit is missing"))?;
        let n: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("{s:?}: bad number"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("{s:?}: unknown unit {u:?}")),
        };
        total += n * mult;
        rest = &rest[u_end..];
    }
    if !(total.is_finite() && total <= 365.0 * 86400.0) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_then_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "cache:\n  oci:\n    registry: 127.0.0.1:5000\n    insecure: true\nbuild:\n  maxConcurrency: 2\n",
        )
        .unwrap();
        let c = Config::load(
            std::slice::from_ref(&f),
            env(&[
                ("IF_CACHE_SIGNINGKEYPATH", "/k.pem"),
                ("IF_HTTP_HTTPLISTENADDR", "127.0.0.1:9"),
                ("IF_BUILD_MAXCONCURRENCY", "9"),
                ("IF_BUILD_BROKENTALOSVERSIONS", "v1.0.0, v1.1.0"),
                ("IF_ARTIFACTS_CORE_COMPONENTS_INSTALLERBASE", "ib"),
                ("OTHER_X", "1"),
            ]),
            "IF_",
        )
        .unwrap();
        assert_eq!(c.http.listen_addr, "127.0.0.1:9");
        assert_eq!(c.cache.signing_key_path, "/k.pem");
        assert_eq!(c.cache.oci.registry, "127.0.0.1:5000");
        assert!(c.cache.oci.insecure);
        assert_eq!(
            c.build.max_concurrency, 2,
            "the file wins over the environment"
        );
        assert_eq!(c.build.broken_talos_versions, ["v1.0.0", "v1.1.0"]);
        assert_eq!(c.artifacts.core.components.installer_base, "ib");
        assert_eq!(
            c.cache.oci.name(),
            "127.0.0.1:5000/siderolabs/image-factory/cache"
        );
    }

    #[test]
    fn refusals() {
        let key = ("IF_CACHE_SIGNINGKEYPATH", "/k");
        let e = |pairs: &[(&str, &str)]| {
            Config::load(&[], env(pairs), "IF_")
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[key, ("IF_CACHE_NOPE", "1")]).contains("IF_CACHE_NOPE: no such key"));
        assert!(e(&[key, ("IF_CACHE_OCI_INSECURE", "maybe")]).contains("not a boolean"));
        assert!(e(&[key, ("IF_BUILD_MAXCONCURRENCY", "0")]).contains("at least 1"));
        assert!(e(&[]).contains("cache.signingKeyPath is required"));
        assert!(
            e(&[
                key,
                ("IF_ARTIFACTS_TALOSVERSIONRECHECKINTERVAL", "5 parsecs")
            ])
            .contains("talosVersionRecheckInterval")
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "cache:\n  bogus: 1\n").unwrap();
        let e = Config::load(std::slice::from_ref(&f), env(&[key]), "IF_").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("15m").unwrap().as_secs(), 900);
        assert_eq!(duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(duration("500ms").unwrap().as_millis(), 500);
        assert!(duration("10").is_err());
        assert!(duration("1d").is_err());
    }
}
