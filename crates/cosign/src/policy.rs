//! The image signature policy.
//!
//! In: policy YAML text and the directory that relative paths in it are resolved against.
//! Out: a [`Policy`], an ordered list of [`Rule`]s mapping a repository glob to a [`Verifier`]
//! (a public key, or keyless identity + issuer + Sigstore trust root); [`Policy::find`] picks
//! the first rule whose glob matches a repository.
//!
//! ```yaml
//! images:
//!   - glob: "127.0.0.1:*/signed/**"
//!     key: cosign.pub                    # file relative to the policy, or inline PEM
//!   - glob: "ghcr.io/siderolabs/*"
//!     keyless:
//!       identityRegexp: '@siderolabs\.com$'   # or identity: exact
//!       issuer: https://accounts.google.com   # or issuerRegexp: ...
//!       trustedRoot: trusted_root.json        # file relative to the policy
//! ```

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, PublicKey, TrustRoot};

/// How the certificate identity (SAN email or URI) must look.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Equal to this string.
    Exact(String),
    /// Matched by this regular expression (unanchored, like Go's `MatchString`).
    Regexp(regex::Regex),
}

/// How the certificate's OIDC issuer must look.
#[derive(Debug, Clone)]
pub enum Issuer {
    /// Equal to this string.
    Exact(String),
    /// Matched by this regular expression (unanchored).
    Regexp(regex::Regex),
}

impl Identity {
    /// An identity matched by the regular expression `pattern`.
    pub fn regexp(pattern: &str) -> Result<Self, Error> {
        regex::Regex::new(pattern)
            .map(Identity::Regexp)
            .map_err(|e| Error::Policy(format!("identity regexp: {e}")))
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Identity::Exact(e) => e == s,
            Identity::Regexp(r) => r.is_match(s),
        }
    }
}

impl Issuer {
    /// An issuer matched by the regular expression `pattern`.
    pub fn regexp(pattern: &str) -> Result<Self, Error> {
        regex::Regex::new(pattern)
            .map(Issuer::Regexp)
            .map_err(|e| Error::Policy(format!("issuer regexp: {e}")))
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Issuer::Exact(e) => e == s,
            Issuer::Regexp(r) => r.is_match(s),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Exact(e) => f.write_str(e),
            Identity::Regexp(r) => write!(f, "regexp '{}'", r.as_str()),
        }
    }
}

impl std::fmt::Display for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Issuer::Exact(e) => f.write_str(e),
            Issuer::Regexp(r) => write!(f, "regexp '{}'", r.as_str()),
        }
    }
}

/// What a signature must be verified with.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// A cosign public key; `path` is how the policy named it (`<inline>` for inline PEM).
    Key {
        /// The key's name for messages.
        path: String,
        /// The key.
        key: PublicKey,
    },
    /// A Fulcio certificate for `identity` from `issuer`, logged in Rekor, per `trust_root`.
    Keyless {
        /// Required certificate identity.
        identity: Identity,
        /// Required OIDC issuer.
        issuer: Issuer,
        /// Fulcio CAs and Rekor keys.
        trust_root: TrustRoot,
    },
}

/// One policy entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Repository glob (`*`, `**`, `?`).
    pub glob: String,
    /// How matching images are verified.
    pub verifier: Verifier,
}

/// An ordered list of rules; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

fn perr(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::Policy(format!("{path}: {msg}"))
}

/// Checks that `m` only has `allowed` keys; the error names the offending path.
fn check_keys(m: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), Error> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            return Err(perr(
                &at,
                format!("unknown key (allowed: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn get_str<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(perr(&format!("{path}.{key}"), "must be a string")),
    }
}

fn read_file(base_dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    let p = base_dir.join(name);
    std::fs::read(&p).map_err(|source| Error::Io {
        path: p.display().to_string(),
        source,
    })
}

impl Policy {
    /// Parses the policy YAML strictly (unknown keys are errors naming their path; exactly one
    /// of `key`/`keyless`, `identity`/`identityRegexp`, `issuer`/`issuerRegexp`), loading key
    /// and trust-root files relative to `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, Error> {
        let v: Value = serde_saphyr::from_str(text)
            .map_err(|e| Error::Policy(format!("invalid YAML: {e}")))?;
        let root = match v {
            Value::Null => return Ok(Self::default()),
            Value::Object(m) => m,
            _ => return Err(Error::Policy("the policy must be a YAML mapping".into())),
        };
        check_keys(&root, &["images"], "")?;
        let images = match root.get("images") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(perr("images", "must be a list")),
        };
        let mut rules = Vec::new();
        for (i, item) in images.iter().enumerate() {
            let path = format!("images[{i}]");
            let m = item
                .as_object()
                .ok_or_else(|| perr(&path, "must be a mapping"))?;
            check_keys(m, &["glob", "key", "keyless"], &path)?;
            let glob = get_str(m, "glob", &path)?
                .filter(|g| !g.is_empty())
                .ok_or_else(|| perr(&format!("{path}.glob"), "required"))?
                .to_string();
            let verifier = match (m.get("key"), m.get("keyless")) {
                (Some(_), None) => {
                    let key = get_str(m, "key", &path)?
                        .filter(|k| !k.trim().is_empty())
                        .ok_or_else(|| perr(&format!("{path}.key"), "empty"))?;
                    if key.trim_start().starts_with("-----BEGIN") {
                        Verifier::Key {
                            path: "<inline>".into(),
                            key: PublicKey::from_pem(key.as_bytes())
                                .map_err(|e| perr(&format!("{path}.key"), e))?,
                        }
                    } else {
                        let pem = read_file(base_dir, key)
                            .map_err(|e| perr(&format!("{path}.key"), e))?;
                        Verifier::Key {
                            path: key.to_string(),
                            key: PublicKey::from_pem(&pem)
                                .map_err(|e| perr(&format!("{path}.key"), format!("{key}: {e}")))?,
                        }
                    }
                }
                (None, Some(kl)) => {
                    let kpath = format!("{path}.keyless");
                    let k = kl
                        .as_object()
                        .ok_or_else(|| perr(&kpath, "must be a mapping"))?;
                    Self::keyless(k, &kpath, base_dir)?
                }
                (Some(_), Some(_)) => {
                    return Err(perr(&path, "exactly one of key and keyless, not both"));
                }
                (None, None) => return Err(perr(&path, "one of key or keyless is required")),
            };
            rules.push(Rule { glob, verifier });
        }
        Ok(Self { rules })
    }

    fn keyless(k: &Map<String, Value>, path: &str, base_dir: &Path) -> Result<Verifier, Error> {
        check_keys(
            k,
            &[
                "identity",
                "identityRegexp",
                "issuer",
                "issuerRegexp",
                "trustedRoot",
            ],
            path,
        )?;
        let regexp = |key: &str, s: &str| {
            regex::Regex::new(s).map_err(|e| perr(&format!("{path}.{key}"), e))
        };
        let identity = match (
            get_str(k, "identity", path)?,
            get_str(k, "identityRegexp", path)?,
        ) {
            (Some(s), None) => Identity::Exact(s.to_string()),
            (None, Some(r)) => Identity::Regexp(regexp("identityRegexp", r)?),
            _ => {
                return Err(perr(
                    path,
                    "exactly one of identity and identityRegexp is required",
                ));
            }
        };
        let issuer = match (
            get_str(k, "issuer", path)?,
            get_str(k, "issuerRegexp", path)?,
        ) {
            (Some(s), None) => Issuer::Exact(s.to_string()),
            (None, Some(r)) => Issuer::Regexp(regexp("issuerRegexp", r)?),
            _ => {
                return Err(perr(
                    path,
                    "exactly one of issuer and issuerRegexp is required",
                ));
            }
        };
        let tr = get_str(k, "trustedRoot", path)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| perr(&format!("{path}.trustedRoot"), "required"))?;
        let json = read_file(base_dir, tr).map_err(|e| perr(&format!("{path}.trustedRoot"), e))?;
        let trust_root = TrustRoot::from_json(&json)
            .map_err(|e| perr(&format!("{path}.trustedRoot"), format!("{tr}: {e}")))?;
        Ok(Verifier::Keyless {
            identity,
            issuer,
            trust_root,
        })
    }

    /// The first rule whose glob matches `repository` (normalized, without tag or digest).
    pub fn find(&self, repository: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| glob_match(&r.glob, repository))
    }
}

/// Whole-string glob match: `*` = any run of non-`/` characters, `**` = anything including
/// `/`, `?` = one non-`/` character, everything else literal.
pub fn glob_match(glob: &str, s: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Any,
        Star,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut it = glob.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' if it.peek() == Some(&'*') => {
                it.next();
                toks.push(Tok::Any);
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            c => toks.push(Tok::Lit(c)),
        }
    }
    let s: Vec<char> = s.chars().collect();
    // dp[j] = tokens[..i] match s[..j]
    let mut dp = vec![false; s.len() + 1];
    dp[0] = true;
    for t in &toks {
        let mut next = vec![false; s.len() + 1];
        match *t {
            Tok::Any => {
                let mut reach = false;
                for j in 0..=s.len() {
                    reach |= dp[j];
                    next[j] = reach;
                }
            }
            Tok::Star => {
                let mut reach = false;
                for j in 0..=s.len() {
                    if j > 0 && s[j - 1] == '/' {
                        reach = false;
                    }
                    reach |= dp[j];
                    next[j] = reach;
                }
            }
            Tok::One => {
                for j in 1..=s.len() {
                    next[j] = dp[j - 1] && s[j - 1] != '/';
                }
            }
            Tok::Lit(c) => {
                for j in 1..=s.len() {
                    next[j] = dp[j - 1] && s[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[s.len()]
}
