//! Registry credentials and the Docker token protocol.
//!
//! In: a registry host. Out: [`Credentials`], looked up in this order: explicit ones (flags,
//! `config.<host>.auth` of the registries config), `GITHUB_TOKEN` for `ghcr.io` (Talos's GitHub
//! keychain), then the Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): `credHelpers.<host>`, `credsStore`, `auths.<host>`. A credential
//! helper is the user's own program `docker-credential-<name> get` (host on stdin, JSON out).
//! Also parses `WWW-Authenticate` challenges.

use crate::Error;
use crate::config::AuthConfig;
use base64::Engine;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// None.
    #[default]
    Anonymous,
    /// User name and password (or token).
    Basic {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// From a Talos-style auth block.
    pub fn from_config(a: &AuthConfig, host: &str) -> Result<Self, Error> {
        if !a.identity_token.is_empty() {
            return Ok(Self::IdentityToken(a.identity_token.clone()));
        }
        if !a.auth.is_empty() {
            return decode_auth(&a.auth)
                .map_err(|e| Error::Config(format!("config.{host}.auth.auth: {e}")));
        }
        if !a.username.is_empty() {
            return Ok(Self::Basic {
                user: a.username.clone(),
                password: a.password.clone(),
            });
        }
        Ok(Self::Anonymous)
    }

    /// `Authorization: Basic …` value, if these are basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        }
    }
}

fn decode_auth(s: &str) -> Result<Credentials, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| "not base64".to_string())?;
    let text = String::from_utf8(raw).map_err(|_| "not UTF-8".to_string())?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| "expected base64(user:password)".to_string())?;
    Ok(Credentials::Basic {
        user: u.to_string(),
        password: p.to_string(),
    })
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub struct Keychain {
    /// Explicit credentials per host (flags, registries config); they win.
    pub explicit: BTreeMap<String, Credentials>,
    /// Docker config file (`None`: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Whether to read the environment (`GITHUB_TOKEN`, `DOCKER_CONFIG`, `HOME`).
    pub use_env: bool,
}

/// Parses `HOST=USER:PASSWORD` (the `--registry-auth` flag syntax).
pub fn parse_host_credentials(s: &str) -> Result<(String, Credentials), Error> {
    let (host, up) = s
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("{:?}: expected HOST=USER:PASSWORD", redact(s))))?;
    let (user, password) = up
        .split_once(':')
        .ok_or_else(|| Error::Config(format!("{:?}: expected HOST=USER:PASSWORD", redact(s))))?;
    if host.is_empty() || user.is_empty() {
        return Err(Error::Config(format!(
            "{:?}: expected HOST=USER:PASSWORD",
            redact(s)
        )));
    }
    Ok((
        host.to_string(),
        Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        },
    ))
}

fn redact(s: &str) -> String {
    match s.split_once(':') {
        Some((a, _)) => format!("{a}:***"),
        None => s.to_string(),
    }
}

/// Docker config keys for `host` (Docker Hub uses its legacy index URL).
fn config_keys(host: &str) -> Vec<String> {
    if host == crate::reference::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![host.to_string()]
    }
}

fn normalize_key(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

impl Keychain {
    fn docker_config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.docker_config {
            return Some(p.clone());
        }
        if !self.use_env {
            return None;
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Credentials for `host`.
    pub fn lookup(&self, host: &str) -> Result<Credentials, Error> {
        if let Some(c) = self.explicit.get(host) {
            return Ok(c.clone());
        }
        if self.use_env
            && host == "ghcr.io"
            && let Ok(t) = std::env::var("GITHUB_TOKEN")
            && !t.is_empty()
        {
            return Ok(Credentials::Basic {
                user: "github".into(),
                password: t,
            });
        }
        let Some(path) = self.docker_config_path() else {
            return Ok(Credentials::Anonymous);
        };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials::Anonymous);
            }
            Err(e) => {
                return Err(Error::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        let cfg: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let keys = config_keys(host);
        // credential helpers first, as Docker does
        let helper = cfg
            .get("credHelpers")
            .and_then(|h| h.as_object())
            .and_then(|h| keys.iter().find_map(|k| h.get(k)))
            .or_else(|| cfg.get("credsStore"))
            .and_then(|v| v.as_str());
        if let Some(name) = helper {
            // a helper with nothing for this host falls through to auths
            if let Some(c) = run_helper(name, &keys[0])? {
                return Ok(c);
            }
        }
        if let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) {
            for (k, v) in auths {
                if !keys
                    .iter()
                    .any(|want| normalize_key(k) == normalize_key(want))
                {
                    continue;
                }
                if let Some(t) = v.get("identitytoken").and_then(|t| t.as_str())
                    && !t.is_empty()
                {
                    return Ok(Credentials::IdentityToken(t.to_string()));
                }
                if let Some(a) = v.get("auth").and_then(|a| a.as_str())
                    && !a.is_empty()
                {
                    return decode_auth(a).map_err(|e| {
                        Error::Config(format!("{}: auths.{k}.auth: {e}", path.display()))
                    });
                }
                if let (Some(u), Some(p)) = (
                    v.get("username").and_then(|x| x.as_str()),
                    v.get("password").and_then(|x| x.as_str()),
                ) {
                    return Ok(Credentials::Basic {
                        user: u.into(),
                        password: p.into(),
                    });
                }
            }
        }
        Ok(Credentials::Anonymous)
    }
}

/// Runs `docker-credential-<name> get`; `None` when it knows no credentials for `server`.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, Error> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Error::Config(format!(
            "credential helper name {name:?} is not valid"
        )));
    }
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            what: format!("running credential helper {prog}"),
            source: e,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::Io {
        what: format!("running credential helper {prog}"),
        source: e,
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Auth(format!(
            "credential helper {prog} failed for {server}: {}",
            msg.trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Auth(format!("credential helper {prog}: bad JSON: {e}")))?;
    let user = v.get("Username").and_then(|x| x.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|x| x.as_str()).unwrap_or("");
    if user == "<token>" {
        return Ok(Some(Credentials::IdentityToken(secret.to_string())));
    }
    Ok(Some(Credentials::Basic {
        user: user.to_string(),
        password: secret.to_string(),
    }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`, …), keys lowercase.
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        params.insert(key, val);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="x""#).unwrap();
        assert_eq!(c.scheme, "basic");
    }

    #[test]
    fn docker_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"auth":"YTpi"},"http://reg.x:1/v2/":{"username":"c","password":"d"}}}"#,
        )
        .unwrap();
        let k = Keychain {
            docker_config: Some(p),
            ..Default::default()
        };
        let basic = |u: &str, p: &str| Credentials::Basic {
            user: u.into(),
            password: p.into(),
        };
        assert_eq!(k.lookup("docker.io").unwrap(), basic("u", "p"));
        assert_eq!(k.lookup("127.0.0.1:5000").unwrap(), basic("a", "b"));
        assert_eq!(k.lookup("reg.x:1").unwrap(), basic("c", "d"));
        assert_eq!(k.lookup("other").unwrap(), Credentials::Anonymous);
        let (h, c) = parse_host_credentials("r:1=u:p:w").unwrap();
        assert_eq!((h.as_str(), c), ("r:1", basic("u", "p:w")));
        assert!(parse_host_credentials("nope").is_err());
    }
}
