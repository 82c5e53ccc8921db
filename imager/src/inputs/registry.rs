//! Pulling container assets from registries (docs/formats/profile.md `ContainerAsset`).
//!
//! In: an image reference, `forceInsecure`, the target arch, and the registry settings of the
//! build (mirrors, credentials, CAs, cache, signature policy). Out: the `linux/<arch>` image
//! with every blob verified in the content-addressed cache, written as an OCI layout into the
//! build's staging directory (so extension extraction reads it exactly like an `ociPath`), or
//! the base installer's `usr/install/` tree.
//!
//! Signatures: when the policy has a rule for the image's repository, the digest the
//! reference resolves to must carry a cosign signature that verifies under the rule, or the
//! build stops; the image is then pulled by that digest, so what is verified is what is used.

use crate::error::{Error, ExitCode, Result};
use crate::profile::ContainerAsset;
use oci::{Client, Reference};
use std::path::{Path, PathBuf};

/// Registry settings of one build.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Mirrors, per-host TLS and auth.
    pub registries: oci::RegistriesConfig,
    /// Credentials from flags (`HOST=USER:PASSWORD`).
    pub credentials: Vec<(String, oci::auth::Credentials)>,
    /// Extra CA files (PEM).
    pub ca_files: Vec<PathBuf>,
    /// Cache root.
    pub cache_dir: Option<PathBuf>,
    /// Signature policy file.
    pub policy: Option<PathBuf>,
    /// `--insecure-skip-signature-verify`.
    pub skip_verify: bool,
    /// Per-read timeout.
    pub timeout: Option<std::time::Duration>,
    /// Attempts per request.
    pub attempts: Option<u32>,
}

/// A ready client plus the policy; holds the cache's shared lock while alive.
pub struct Fetcher {
    client: Client,
    policy: Option<(cosign::Policy, String)>,
    skip_verify: bool,
    _lock: oci::cache::CacheLock,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.client.cache().root())
            .field("policy", &self.policy.as_ref().map(|p| &p.1))
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

fn dep(e: impl Into<anyhow::Error>) -> Error {
    Error::new(ExitCode::Dependency, e)
}

pub(crate) fn oci_err(what: &str, e: oci::Error) -> Error {
    Error::from_oci(what, e)
}

/// The build's registry client, which `inputs::resolve` creates whenever something is pulled
/// or pushed.
pub fn required(f: Option<&Fetcher>) -> Result<&Fetcher> {
    f.ok_or_else(|| Error::new(ExitCode::Unknown, anyhow::anyhow!("no registry client")))
}

/// Reads a `--registries-config` file.
pub fn registries_file(f: &Path) -> Result<oci::RegistriesConfig> {
    let what = format!("--registries-config {}", f.display());
    let text = crate::io::read_text(
        f,
        crate::io::limits::SIDE_FILE,
        "--registries-config",
        ExitCode::Io,
    )?;
    oci::RegistriesConfig::parse(&text, &what).map_err(Error::invalid)
}

/// Parses `s` as an image reference, naming `field` on error.
pub fn parse_ref(field: &str, s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| Error::invalid(format!("{field}: {e}")))
}

impl Fetcher {
    /// Opens the cache and reads the policy.
    pub fn new(o: &FetchOptions) -> Result<Self> {
        let dir = o
            .cache_dir
            .clone()
            .or_else(oci::Cache::default_dir)
            .ok_or_else(|| {
                Error::new(
                    ExitCode::Environment,
                    anyhow::anyhow!(
                        "no cache directory: set --cache-dir, IMAGER_CACHE_DIR or HOME"
                    ),
                )
            })?;
        let cache = oci::Cache::open(&dir).map_err(|e| oci_err("blob cache", e))?;
        let lock = cache.lock(false).map_err(|e| oci_err("blob cache", e))?;
        let mut extra_ca = Vec::new();
        for f in &o.ca_files {
            extra_ca.push(crate::io::read_bytes(
                f,
                crate::io::limits::SIDE_FILE,
                "--registry-ca",
                ExitCode::Io,
            )?);
        }
        let mut keychain = oci::auth::Keychain {
            use_env: true,
            ..Default::default()
        };
        for (h, c) in &o.credentials {
            keychain.explicit.insert(h.clone(), c.clone());
        }
        let mut opts = oci::ClientOptions {
            registries: o.registries.clone(),
            keychain,
            extra_ca,
            progress: Some(std::sync::Arc::new(crate::progress::Downloads)),
            ..Default::default()
        };
        if let Some(t) = o.timeout {
            opts.timeout = t;
        }
        if let Some(a) = o.attempts {
            opts.attempts = a;
        }
        let client = Client::new(opts, cache).map_err(|e| oci_err("registry client", e))?;
        let policy = match &o.policy {
            None => None,
            Some(p) => {
                let text = crate::io::read_text(
                    p,
                    crate::io::limits::SIDE_FILE,
                    "--signature-policy",
                    ExitCode::Io,
                )?;
                let base = p.parent().unwrap_or(Path::new("."));
                let pol = cosign::Policy::from_yaml(&text, base).map_err(|e| {
                    Error::invalid(format!("--signature-policy {}: {e}", p.display()))
                })?;
                Some((pol, p.display().to_string()))
            }
        };
        Ok(Self {
            client,
            policy,
            skip_verify: o.skip_verify,
            _lock: lock,
        })
    }

    /// The registry client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves `r` and checks its signature under the policy. Returns the reference pinned
    /// to the verified digest, and what the verification established (if a rule applied).
    pub fn resolve_verified(
        &self,
        field: &str,
        r: &Reference,
        insecure: bool,
    ) -> Result<(oci::client::Resolved, Option<String>)> {
        let top = self
            .client
            .resolve(r, insecure)
            .map_err(|e| oci_err(&format!("{field}: pulling {r}"), e))?;
        let rule = self.policy.as_ref().and_then(|(p, _)| p.find(&r.name()));
        let Some(rule) = rule else {
            return Ok((top, None));
        };
        if self.skip_verify {
            eprintln!(
                "imager: WARNING: signature verification of {r} ({}) SKIPPED (--insecure-skip-signature-verify); the policy requires it",
                top.digest
            );
            return Ok((top, None));
        }
        let layers = self
            .signature_layers(r, &top.digest, insecure)
            .map_err(|e| oci_err(&format!("{field}: fetching signatures of {r}"), e))?;
        // cosign's tag format first; the referrers (cosign v3) only when it does not verify
        let result = cosign::verify_image_then_referrers(
            &rule.verifier,
            &r.name(),
            top.digest.as_str(),
            &layers,
            || {
                let (bundles, skipped) = self
                    .client
                    .referrer_bundles(r, &top.digest, insecure)
                    .map_err(|e| oci_err(&format!("{field}: fetching referrers of {r}"), e))?;
                for s in &skipped {
                    eprintln!("imager: {r}: skipped {s}");
                }
                Ok::<_, Error>((bundles, skipped))
            },
        )?;
        match result {
            Ok(v) => {
                eprintln!(
                    "imager: verified {r}@{}: {} (policy rule {:?})",
                    top.digest, v.description, rule.glob
                );
                Ok((top, Some(v.description)))
            }
            Err(e) => Err(dep(anyhow::anyhow!(
                "{field}: signature verification of {r}@{} failed under policy rule {:?}: {e} \
                 (--insecure-skip-signature-verify skips it)",
                top.digest,
                rule.glob
            ))),
        }
    }

    /// The cosign signatures (tag format) of `digest` in `r`'s repository, as layers to verify.
    pub fn signature_layers(
        &self,
        r: &Reference,
        digest: &oci::Digest,
        insecure: bool,
    ) -> std::result::Result<Vec<cosign::SignatureLayer>, oci::Error> {
        Ok(self
            .client
            .signatures(r, digest, insecure)?
            .into_iter()
            .map(|s| cosign::SignatureLayer {
                payload: s.payload,
                annotations: s.annotations,
            })
            .collect())
    }

    /// Pulls the `linux/<arch>` image of `image_ref` after the signature check.
    pub fn pull(
        &self,
        field: &str,
        image_ref: &str,
        insecure: bool,
        arch: &str,
    ) -> Result<oci::Image> {
        let r = parse_ref(field, image_ref)?;
        let (top, _) = self.resolve_verified(field, &r, insecure)?;
        let img = self
            .client
            .pull_resolved(&r, top, arch, insecure)
            .map_err(|e| oci_err(&format!("{field}: pulling {r}"), e))?;
        let s = self.client.stats();
        eprintln!(
            "imager: pulled {r} linux/{arch} ({}; {} blobs downloaded, {} cache hits so far)",
            img.manifest_digest, s.downloads, s.hits
        );
        Ok(img)
    }

    /// Pulls `a` (an `imageRef`) and writes it as an OCI layout at `dir`.
    pub fn pull_layout(
        &self,
        field: &str,
        a: &ContainerAsset,
        arch: &str,
        dir: &Path,
    ) -> Result<oci::Image> {
        let img = self.pull(field, &a.image_ref, a.force_insecure, arch)?;
        oci::layout::write_layout(dir, &[image_files(&img)])
            .map_err(|e| oci_err(&format!("{field}: writing the pulled image"), e))?;
        Ok(img)
    }
}

/// The files of a pulled image.
pub fn image_files(img: &oci::Image) -> oci::layout::ImageFiles {
    oci::layout::ImageFiles {
        descriptor: oci::types::Descriptor {
            media_type: img.manifest_media_type.clone(),
            digest: img.manifest_digest.clone(),
            size: img.manifest_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        },
        manifest: img.manifest_bytes.clone(),
        blobs: img.blobs.clone(),
    }
}

impl Fetcher {
    /// Pushes an image to `target` (its own registry, never a mirror); returns the manifest
    /// digest.
    pub fn push(
        &self,
        target: &Reference,
        insecure: bool,
        img: &oci::layout::ImageFiles,
    ) -> Result<oci::Digest> {
        let m = match oci::types::parse_document(&img.manifest, &img.descriptor.media_type, "image")
            .map_err(|e| oci_err("push", e))?
        {
            oci::types::Document::Manifest(m) => m,
            oci::types::Document::Index(_) => {
                return Err(Error::invalid("push: expected a manifest"));
            }
        };
        let mut blobs = Vec::new();
        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
            let p = img
                .blobs
                .get(&d.digest)
                .ok_or_else(|| Error::invalid(format!("push: blob {} missing", d.digest)))?;
            blobs.push((d.clone(), p.clone()));
        }
        let d = self
            .client
            .push(
                target,
                insecure,
                &img.manifest,
                &img.descriptor.media_type,
                &blobs,
            )
            .map_err(|e| oci_err(&format!("--push {target}"), e))?;
        eprintln!("imager: pushed {}@{d}", target.name());
        Ok(d)
    }

    /// Pushes a multi-platform image: each platform's manifest (and blobs) by digest, then
    /// the index under `target`'s tag; returns the index digest.
    pub fn push_index(
        &self,
        target: &Reference,
        insecure: bool,
        images: &[oci::layout::ImageFiles],
        index: &[u8],
    ) -> Result<oci::Digest> {
        for img in images {
            let by_digest = Reference {
                tag: None,
                digest: Some(img.descriptor.digest.clone()),
                ..target.clone()
            };
            self.push(&by_digest, insecure, img)?;
        }
        let d = self
            .client
            .push(target, insecure, index, oci::types::OCI_INDEX, &[])
            .map_err(|e| oci_err(&format!("--push {target}"), e))?;
        eprintln!("imager: pushed {}@{d} (index)", target.name());
        Ok(d)
    }

    /// Signs `digest` in `target`'s repository with `key` and pushes the cosign signature
    /// image (`sha256-<hex>.sig`: one simple-signing layer carrying the signature annotation).
    pub fn push_signature(
        &self,
        target: &Reference,
        insecure: bool,
        digest: &oci::Digest,
        key: &cosign::SigningKey,
    ) -> Result<oci::Digest> {
        let payload = cosign::simple_signing_payload(&target.name(), digest.as_str());
        let annotations = cosign::sign_payload(key, &payload);
        let cache = self.client.cache();
        let (pd, pp) = cache
            .insert_bytes(&payload, "cosign payload")
            .map_err(|e| oci_err("signing", e))?;
        // cosign's signature image config
        let config = serde_json::json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [pd.to_string()]},
            "config": {},
        });
        let cbytes = serde_json::to_vec(&config)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("{e}")))?;
        let (cd, cp) = cache
            .insert_bytes(&cbytes, "cosign config")
            .map_err(|e| oci_err("signing", e))?;
        let layer = oci::types::Descriptor {
            media_type: cosign::SIMPLESIGNING_MEDIA_TYPE.into(),
            digest: pd.clone(),
            size: payload.len() as u64,
            platform: None,
            annotations,
        };
        let cdesc = oci::types::Descriptor {
            media_type: oci::types::OCI_CONFIG.into(),
            digest: cd.clone(),
            size: cbytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let m = oci::types::Manifest {
            schema_version: 2,
            media_type: Some(oci::types::OCI_MANIFEST.into()),
            config: cdesc.clone(),
            layers: vec![layer.clone()],
            annotations: Default::default(),
        };
        let mbytes = serde_json::to_vec(&m)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("{e}")))?;
        let sig_ref = target.with_tag(&format!("sha256-{}.sig", digest.hex()));
        let d = self
            .client
            .push(
                &sig_ref,
                insecure,
                &mbytes,
                oci::types::OCI_MANIFEST,
                &[(cdesc, cp), (layer, pp)],
            )
            .map_err(|e| oci_err(&format!("pushing the signature {sig_ref}"), e))?;
        eprintln!(
            "imager: signed {}@{digest} (key {}): {sig_ref}",
            target.name(),
            hex::encode(&key.public_key().key_id()[..8])
        );
        Ok(d)
    }
}
