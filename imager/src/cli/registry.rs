//! `imager cache ls|prune`, `imager pull REF DIR`, `imager verify REF` and
//! `imager verify-blob FILE`.
//!
//! In: argv after `imager`. Out: an exit code (docs/ARCHITECTURE.md) and lines on stdout.

use crate::error::{Error, ExitCode, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// `imager cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Cache directory (default $IMAGER_CACHE_DIR, $XDG_CACHE_HOME/imager, ~/.cache/imager).
    #[arg(long = "cache-dir", env = "IMAGER_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: CacheCmd,
}

/// `imager verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Image reference.
    reference: String,
    /// Signature policy file (see `imager --help`).
    #[arg(long = "signature-policy", env = "IMAGER_SIGNATURE_POLICY")]
    policy: PathBuf,
    /// Plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Registries config (mirrors, TLS, auth).
    #[arg(long = "registries-config", env = "IMAGER_REGISTRIES_CONFIG")]
    registries_config: Option<PathBuf>,
    /// Cache directory.
    #[arg(long = "cache-dir", env = "IMAGER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// `imager pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference.
    reference: String,
    /// Output OCI layout directory.
    dir: PathBuf,
    /// Architecture.
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// Plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Signature policy file.
    #[arg(long = "signature-policy", env = "IMAGER_SIGNATURE_POLICY")]
    policy: Option<PathBuf>,
    /// Registries config (mirrors, TLS, auth).
    #[arg(long = "registries-config", env = "IMAGER_REGISTRIES_CONFIG")]
    registries_config: Option<PathBuf>,
    /// Cache directory.
    #[arg(long = "cache-dir", env = "IMAGER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// `imager verify-blob`.
#[derive(Args, Debug)]
pub struct VerifyBlobArgs {
    /// The file.
    file: PathBuf,
    /// The bundle (default `<file>.sigstore.json`).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Public key (PEM) of a key-signed bundle.
    #[arg(long, required_unless_present = "trusted_root")]
    key: Option<PathBuf>,
    /// Keyless: the Sigstore trust root (`trusted_root.json`: Fulcio CAs, Rekor and CT log
    /// keys, timestamp authorities) to verify a certificate-signed bundle against, offline.
    #[arg(
        long = "trusted-root",
        conflicts_with = "key",
        requires = "identity_group",
        requires = "issuer_group"
    )]
    trusted_root: Option<PathBuf>,
    /// Keyless: the certificate identity (SAN email or URI) that must have signed.
    #[arg(
        long = "certificate-identity",
        group = "identity_group",
        requires = "trusted_root"
    )]
    certificate_identity: Option<String>,
    /// Keyless: a regular expression the certificate identity must match.
    #[arg(
        long = "certificate-identity-regexp",
        group = "identity_group",
        requires = "trusted_root"
    )]
    certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer the certificate must name.
    #[arg(
        long = "certificate-oidc-issuer",
        group = "issuer_group",
        requires = "trusted_root"
    )]
    certificate_oidc_issuer: Option<String>,
    /// Keyless: a regular expression the OIDC issuer must match.
    #[arg(
        long = "certificate-oidc-issuer-regexp",
        group = "issuer_group",
        requires = "trusted_root"
    )]
    certificate_oidc_issuer_regexp: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// Lists blobs: digest, size, last use, what it is.
    Ls,
    /// Removes blobs (waits for running builds; they hold the cache lock).
    Prune {
        /// Remove everything.
        #[arg(long, conflicts_with = "older_than")]
        all: bool,
        /// Remove blobs unused for this long: `30d`, `12h`, `90m`, `45s` (default 30d).
        #[arg(long = "older-than", value_name = "AGE")]
        older_than: Option<String>,
    },
}

fn parse_age(s: &str) -> Result<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| Error::invalid(format!("--older-than {s:?}: expected e.g. 30d, 12h")))?;
    let mul = match unit {
        "d" => 86400,
        "h" => 3600,
        "m" => 60,
        "s" | "" => 1,
        _ => {
            return Err(Error::invalid(format!(
                "--older-than {s:?}: unit must be d, h, m or s"
            )));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(mul)))
}

fn cache_at(dir: Option<PathBuf>) -> Result<oci::Cache> {
    let d = dir
        .or_else(oci::Cache::default_dir)
        .ok_or_else(|| Error::new(ExitCode::Environment, anyhow::anyhow!("no cache directory")))?;
    oci::Cache::open(&d).map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("{e}")))
}

/// A registry client for `pull` and `verify`: the registries config file (if any), the cache
/// and the signature policy.
fn fetcher(
    registries_config: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    policy: Option<PathBuf>,
) -> Result<crate::inputs::registry::Fetcher> {
    let registries = match registries_config {
        None => oci::RegistriesConfig::default(),
        Some(f) => crate::inputs::registry::registries_file(&f)?,
    };
    crate::inputs::registry::Fetcher::new(&crate::inputs::registry::FetchOptions {
        registries,
        cache_dir,
        policy,
        ..Default::default()
    })
}

/// `imager cache ls|prune`.
pub fn cache(a: CacheArgs) -> Result<()> {
    let CacheArgs { cache_dir, cmd } = a;
    let c = cache_at(cache_dir)?;
    match cmd {
        CacheCmd::Ls => {
            let entries = c
                .list()
                .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("{e}")))?;
            let mut total = 0;
            for e in &entries {
                let age = SystemTime::now()
                    .duration_since(e.last_used)
                    .unwrap_or_default()
                    .as_secs();
                println!(
                    "{} {:>12} {:>8}s-ago {}",
                    e.digest,
                    e.size,
                    age,
                    e.note.trim()
                );
                total += e.size;
            }
            eprintln!(
                "imager: cache {}: {} blobs, {total} bytes",
                c.root().display(),
                entries.len()
            );
        }
        CacheCmd::Prune { all, older_than } => {
            let age = if all {
                None
            } else {
                Some(parse_age(older_than.as_deref().unwrap_or("30d"))?)
            };
            let r = c
                .prune(age, SystemTime::now())
                .map_err(|e| Error::new(ExitCode::Io, anyhow::anyhow!("{e}")))?;
            println!(
                "removed {} blobs ({} bytes), kept {}",
                r.removed, r.bytes, r.kept
            );
        }
    }
    Ok(())
}

/// `imager verify REF`.
pub fn verify(a: VerifyArgs) -> Result<()> {
    let VerifyArgs {
        reference,
        policy,
        insecure,
        registries_config,
        cache_dir,
    } = a;
    let f = fetcher(registries_config, cache_dir, Some(policy.clone()))?;
    let r = crate::inputs::registry::parse_ref("REF", &reference)?;
    let (top, v) = f.resolve_verified("verify", &r, insecure)?;
    match v {
        Some(d) => println!("{}@{}: {d}", r.name(), top.digest),
        None => {
            return Err(Error::invalid(format!(
                "{r}: no rule of {} applies to {}",
                policy.display(),
                r.name()
            )));
        }
    }
    Ok(())
}

/// `imager pull REF DIR`.
pub fn pull(a: PullArgs) -> Result<()> {
    let PullArgs {
        reference,
        dir,
        arch,
        insecure,
        policy,
        registries_config,
        cache_dir,
    } = a;
    let f = fetcher(registries_config, cache_dir, policy)?;
    let a = crate::profile::ContainerAsset {
        image_ref: reference.clone(),
        force_insecure: insecure,
        ..Default::default()
    };
    let img = f.pull_layout("REF", &a, &arch, &dir)?;
    println!(
        "{}@{} {}",
        img.reference.name(),
        img.top.digest,
        dir.display()
    );
    Ok(())
}

/// `imager verify-blob FILE`.
pub fn verify_blob(a: VerifyBlobArgs) -> Result<()> {
    let VerifyBlobArgs {
        file,
        bundle,
        key,
        trusted_root,
        certificate_identity,
        certificate_identity_regexp,
        certificate_oidc_issuer,
        certificate_oidc_issuer_regexp,
    } = a;
    let bundle = bundle.unwrap_or_else(|| {
        let mut n = file.file_name().unwrap_or_default().to_os_string();
        n.push(".sigstore.json");
        file.with_file_name(n)
    });
    let side = crate::io::limits::SIDE_FILE;
    let verifier = match (key, trusted_root) {
        (Some(key), _) => {
            let pem = crate::io::read_bytes(&key, side, "--key", ExitCode::Io)?;
            let pk = cosign::PublicKey::from_pem(&pem)
                .map_err(|e| Error::invalid(format!("--key {}: {e}", key.display())))?;
            cosign::Verifier::Key {
                path: key.display().to_string(),
                key: pk,
            }
        }
        (None, Some(tr)) => {
            let json = crate::io::read_bytes(&tr, side, "--trusted-root", ExitCode::Io)?;
            let trust_root = cosign::TrustRoot::from_json(&json)
                .map_err(|e| Error::invalid(format!("--trusted-root {}: {e}", tr.display())))?;
            let identity = match (certificate_identity, certificate_identity_regexp) {
                (Some(s), _) => cosign::Identity::Exact(s),
                (None, Some(r)) => cosign::Identity::regexp(&r)
                    .map_err(|e| Error::invalid(format!("--certificate-identity-regexp: {e}")))?,
                (None, None) => return Err(Error::invalid("--certificate-identity is required")),
            };
            let issuer = match (certificate_oidc_issuer, certificate_oidc_issuer_regexp) {
                (Some(s), _) => cosign::Issuer::Exact(s),
                (None, Some(r)) => cosign::Issuer::regexp(&r).map_err(|e| {
                    Error::invalid(format!("--certificate-oidc-issuer-regexp: {e}"))
                })?,
                (None, None) => {
                    return Err(Error::invalid("--certificate-oidc-issuer is required"));
                }
            };
            cosign::Verifier::Keyless {
                identity,
                issuer,
                trust_root,
            }
        }
        (None, None) => return Err(Error::invalid("--key or --trusted-root is required")),
    };
    let b = crate::io::read_bytes(&bundle, side, "bundle", ExitCode::Io)?;
    let digest = crate::io::sha256_file(&file)?;
    let v = cosign::verify_blob_bundle(&verifier, &b, &digest).map_err(|e| {
        Error::new(
            ExitCode::Dependency,
            anyhow::anyhow!("{}: bundle {}: {e}", file.display(), bundle.display()),
        )
    })?;
    println!("{}: {}", file.display(), v.description);
    Ok(())
}
