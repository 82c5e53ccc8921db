//! Registry configuration in the shape of Talos's `machine.registries` (seed "Air-gapped
//! Environments"): `mirrors` (host → ordered endpoints, with fallback to the host itself unless
//! `skipFallback`) and `config` (host → `tls` and `auth`).
//!
//! In: YAML/JSON text — either the `registries` map itself, `{registries: …}`, or a whole Talos
//! machine config with `machine.registries` — or the profile's `input.registries`.
//! Out: [`RegistriesConfig`] and, for a reference, the ordered [`Endpoint`]s to try.

use crate::Error;
use crate::reference::{DOCKER_HUB, Reference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `machine.registries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Host (or `*`) → mirror.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Host → TLS and auth settings (a mirror endpoint's host is looked up here too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, HostConfig>,
}

/// One mirror entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs, tried in order (`http://10.5.0.1:6000/`, `https://harbor/v2/proxy`).
    pub endpoints: Vec<String>,
    /// Use the endpoint path as is, without `/v2` (Harbor-style proxies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_path: bool,
    /// Never fall back to the original host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_fallback: bool,
}

/// Per-host settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostConfig {
    /// TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// TLS settings of a host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra CA certificates: PEM text, or base64 of PEM (Talos's `Base64Bytes`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// Skip certificate verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// Credentials of a host (Talos `RegistryAuthConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// base64(`user:password`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    /// An OAuth2 refresh token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
}

/// Where to send requests for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://authority[/path]`, no trailing slash.
    pub base: String,
    /// The authority (`host:port`), the key for TLS and auth settings.
    pub host: String,
    /// Whether the URL path is used as is (no `/v2/<repository>`).
    pub override_path: bool,
    /// Whether this is a mirror (not the reference's own registry).
    pub mirror: bool,
}

impl Endpoint {
    /// Parses an endpoint URL (`http://host:port/`, `https://host/v2/prefix`).
    pub fn parse(url: &str, override_path: bool) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("mirror endpoint {url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("expected http:// or https://"));
        }
        let rest = rest.trim_end_matches('/');
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (rest, String::new()),
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad("no host (credentials belong in config.<host>.auth)"));
        }
        // containerd appends /v2 itself; an endpoint written with it means the same thing
        let path = if override_path {
            path
        } else {
            path.strip_suffix("/v2").unwrap_or(&path).to_string()
        };
        Ok(Self {
            base: format!("{scheme}://{host}{path}"),
            host: host.to_string(),
            override_path,
            mirror: true,
        })
    }

    /// The registry's own endpoint (`https`, or `http` when `insecure`; Docker Hub is served by
    /// `registry-1.docker.io`).
    pub fn origin(registry: &str, insecure: bool) -> Self {
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if insecure { "http" } else { "https" };
        Self {
            base: format!("{scheme}://{host}"),
            host: registry.to_string(),
            override_path: false,
            mirror: false,
        }
    }

    /// URL of `/v2/<repository>/<kind>/<selector>` on this endpoint.
    pub fn url(&self, repository: &str, kind: &str, selector: &str) -> String {
        if self.override_path {
            format!("{}/{repository}/{kind}/{selector}", self.base)
        } else {
            format!("{}/v2/{repository}/{kind}/{selector}", self.base)
        }
    }

    /// URL of the upload-start route.
    pub fn upload_url(&self, repository: &str) -> String {
        self.url(repository, "blobs", "uploads/")
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

impl RegistriesConfig {
    /// Parses a registries file (see the module docs for the accepted shapes).
    pub fn parse(text: &str, what: &str) -> Result<Self, Error> {
        let v: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| Error::Config(format!("{what}: {e}")))?;
        let inner = if let Some(r) = v.get("machine").and_then(|m| m.get("registries")) {
            r.clone()
        } else if let Some(r) = v.get("registries") {
            r.clone()
        } else {
            v
        };
        if inner.is_null() {
            return Ok(Self::default());
        }
        let c: Self =
            serde_json::from_value(inner).map_err(|e| Error::Config(format!("{what}: {e}")))?;
        c.validate(what)?;
        Ok(c)
    }

    /// Checks endpoint URLs and CA texts.
    pub fn validate(&self, what: &str) -> Result<(), Error> {
        for (host, m) in &self.mirrors {
            if m.endpoints.is_empty() {
                return Err(Error::Config(format!(
                    "{what}: mirrors.{host}.endpoints: at least one endpoint is required"
                )));
            }
            for e in &m.endpoints {
                Endpoint::parse(e, m.override_path)
                    .map_err(|err| Error::Config(format!("{what}: mirrors.{host}: {err}")))?;
            }
        }
        for (host, c) in &self.config {
            if let Some(t) = &c.tls
                && !t.ca.is_empty()
            {
                ca_pem(&t.ca)
                    .map_err(|e| Error::Config(format!("{what}: config.{host}.tls.ca: {e}")))?;
            }
        }
        Ok(())
    }

    /// Merges `other` over `self` (later settings win per host).
    pub fn merge(&mut self, other: &RegistriesConfig) {
        for (k, v) in &other.mirrors {
            self.mirrors.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.config {
            self.config.insert(k.clone(), v.clone());
        }
    }

    /// Endpoints to try for `r`, in order: the mirrors of its registry (or of `*`), then the
    /// registry itself unless the mirror says `skipFallback`.
    pub fn endpoints(&self, r: &Reference, insecure: bool) -> Result<Vec<Endpoint>, Error> {
        let mut out = Vec::new();
        let mirror = self
            .mirrors
            .get(&r.registry)
            .or_else(|| self.mirrors.get("*"));
        let mut fallback = true;
        if let Some(m) = mirror {
            for e in &m.endpoints {
                out.push(Endpoint::parse(e, m.override_path)?);
            }
            fallback = !m.skip_fallback;
        }
        if fallback {
            out.push(Endpoint::origin(&r.registry, insecure));
        }
        Ok(out)
    }

    /// The host settings for `host`.
    pub fn host(&self, host: &str) -> Option<&HostConfig> {
        self.config.get(host)
    }
}

/// The PEM text of a `tls.ca` value (PEM, or base64 of PEM).
pub fn ca_pem(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let t = s.trim();
    if t.starts_with("-----BEGIN") {
        return Ok(t.as_bytes().to_vec());
    }
    let compact: String = t.split_whitespace().collect();
    let b = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| "neither PEM nor base64 of PEM".to_string())?;
    if b.starts_with(b"-----BEGIN") {
        Ok(b)
    } else {
        Err("the base64 value does not decode to PEM".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talos_machine_config_shape() {
        let text = "machine:\n  registries:\n    mirrors:\n      ghcr.io:\n        endpoints:\n        - http://10.5.0.1:6000/\n        - https://m2.example/v2\n      '*':\n        endpoints: [http://any:1]\n        skipFallback: true\n";
        let c = RegistriesConfig::parse(text, "f.yaml").unwrap();
        let r = Reference::parse("ghcr.io/siderolabs/installer-base:v1.15.0").unwrap();
        let e = c.endpoints(&r, false).unwrap();
        let bases: Vec<&str> = e.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://10.5.0.1:6000",
                "https://m2.example",
                "https://ghcr.io"
            ]
        );
        assert_eq!(
            e[0].url("siderolabs/x", "manifests", "v1"),
            "http://10.5.0.1:6000/v2/siderolabs/x/manifests/v1"
        );
        let r = Reference::parse("quay.io/a/b").unwrap();
        let e = c.endpoints(&r, false).unwrap();
        assert_eq!(e.len(), 1, "skipFallback");
        let r = Reference::parse("alpine").unwrap();
        let e = RegistriesConfig::default().endpoints(&r, false).unwrap();
        assert_eq!(e[0].base, "https://registry-1.docker.io");
    }

    #[test]
    fn strict() {
        let err = RegistriesConfig::parse("mirrors:\n  a:\n    endpoint: [x]\n", "f").unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let err =
            RegistriesConfig::parse("mirrors:\n  a:\n    endpoints: [ftp://x]\n", "f").unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        let err =
            RegistriesConfig::parse("config:\n  a:\n    tls:\n      ca: nope\n", "f").unwrap_err();
        assert!(err.to_string().contains("tls.ca"), "{err}");
        let o = Endpoint::parse("https://harbor/v2/proxy", true).unwrap();
        assert_eq!(
            o.url("lib/x", "blobs", "d"),
            "https://harbor/v2/proxy/lib/x/blobs/d"
        );
    }
}
