//! What the factory keeps in OCI registries (docs/formats/factory.md, "Builds and the cache"):
//!
//! - **assets**: one image per built asset in `cache.oci`, tagged with the profile hash, a
//!   single `application/data` layer holding the file as it is, signed with cosign (the
//!   `sha256-<digest>.sig` tag) by `cache.signingKeyPath`. A lookup verifies that signature
//!   against the key before the entry counts: a missing or bad signature is a miss, and the
//!   asset is built again (and the entry replaced). Downloads stream the layer from the
//!   registry ([`oci::client::BlobReader`] checks its digest before the last chunk).
//! - **schematics**: one image per schematic in `artifacts.schematic`, tagged with the ID, a
//!   single layer `application/vnd.sidero.dev-image.schematic` whose digest *is* the ID
//!   (the canonical YAML), as upstream stores them.

use crate::config::Repo;
use cosign::Verifier;
use imager::inputs::registry::Fetcher;
use oci::types::{Descriptor, Document, OCI_CONFIG, OCI_MANIFEST};
use oci::{Digest, Reference};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The layer media type of cached assets (upstream's).
pub const ASSET_MEDIA_TYPE: &str = "application/data";
/// The manifest annotation that binds a signed entry to its key (the profile hash, or the
/// installer repository and version): the signature covers it, the tag it is found under
/// must match it.
pub const KEY_ANNOTATION: &str = "dev.talos-rs.factory.key";

/// The layer media type of schematics (upstream's).
pub const SCHEMATIC_MEDIA_TYPE: &str = "application/vnd.sidero.dev-image.schematic";

/// A store failure (the registry, the signature, the files).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

fn e(what: &str, x: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what}: {x}"))
}

/// A verified cache entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's image, by digest.
    pub image: Reference,
    /// Its one layer: the asset.
    pub layer: Descriptor,
}

/// The registries of one factory.
pub struct Store {
    fetcher: Fetcher,
    key: Arc<cosign::SigningKey>,
    verifier: Verifier,
    cache: Repo,
    schematics: Repo,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cache", &self.cache.name())
            .field("schematics", &self.schematics.name())
            .finish_non_exhaustive()
    }
}

fn parse_ref(s: &str) -> Result<Reference, StoreError> {
    Reference::parse(s).map_err(|x| e("reference", x))
}

impl Store {
    /// A store over `fetcher`'s client, signing with `key`.
    pub fn new(
        fetcher: Fetcher,
        key: Arc<cosign::SigningKey>,
        cache: Repo,
        schematics: Repo,
    ) -> Self {
        let verifier = Verifier::Key {
            path: "cache.signingKeyPath".into(),
            key: key.public_key(),
        };
        Self {
            fetcher,
            key,
            verifier,
            cache,
            schematics,
        }
    }

    /// The registry client and input verification.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The signing key.
    pub fn key(&self) -> &cosign::SigningKey {
        &self.key
    }

    /// The single layer of the image `r` (tag or digest) in `repo`, or `None` when the tag
    /// does not exist; with `verify`, `None` too when its signature does not verify (the
    /// reason is returned for the log).
    fn single_layer(
        &self,
        r: &Reference,
        insecure: bool,
        verify: Option<&str>,
    ) -> Result<Result<(Reference, Descriptor), String>, StoreError> {
        let client = self.fetcher.client();
        let top = match client.resolve(r, insecure) {
            Ok(t) => t,
            Err(x) if x.is_absent() => return Ok(Err("no entry".into())),
            Err(x) => return Err(e(&format!("looking up {r}"), x)),
        };
        if verify.is_some()
            && let Err(why) = self.verify(r, insecure, &top.digest)?
        {
            return Ok(Err(why));
        }
        let m = match oci::types::parse_document(&top.bytes, &top.media_type, &r.to_string()) {
            Ok(Document::Manifest(m)) => m,
            Ok(Document::Index(_)) => return Ok(Err("an index, not an image".into())),
            Err(x) => return Ok(Err(x.to_string())),
        };
        // the signature covers the manifest, not the tag: the manifest names its key, so a
        // signed entry moved to another tag is not taken for that tag's asset
        if let Some(key) = verify
            && m.annotations.get(KEY_ANNOTATION).map(String::as_str) != Some(key)
        {
            return Ok(Err(format!(
                "the entry is for {:?}, not {key}",
                m.annotations.get(KEY_ANNOTATION)
            )));
        }
        let [layer] = m.layers.as_slice() else {
            return Ok(Err(format!("{} layers, not one", m.layers.len())));
        };
        Ok(Ok((r.with_digest(top.digest.clone()), layer.clone())))
    }

    /// Whether `digest` in `r`'s repository carries a cosign signature by the cache key
    /// (`Ok(Err(why))` when it does not).
    pub fn verify(
        &self,
        r: &Reference,
        insecure: bool,
        digest: &Digest,
    ) -> Result<Result<(), String>, StoreError> {
        let layers = self
            .fetcher
            .signature_layers(r, digest, insecure)
            .map_err(|x| e(&format!("signatures of {r}"), x))?;
        Ok(
            cosign::verify_image(&self.verifier, &r.name(), digest.as_str(), &layers)
                .map(|_| ())
                .map_err(|x| format!("signature of {}@{digest}: {x}", r.name())),
        )
    }

    /// The verified cache entry of `hash`: `Ok(None)` is a miss, with the reason when an
    /// entry exists but does not count.
    pub fn lookup(&self, hash: &str) -> Result<(Option<Entry>, Option<String>), StoreError> {
        let r = parse_ref(&format!("{}:{hash}", self.cache.name()))?;
        Ok(
            match self.single_layer(&r, self.cache.insecure, Some(hash))? {
                Ok((image, layer)) if layer.media_type == ASSET_MEDIA_TYPE => {
                    (Some(Entry { image, layer }), None)
                }
                Ok((_, layer)) => (None, Some(format!("layer type {:?}", layer.media_type))),
                Err(why) if why == "no entry" => (None, None),
                Err(why) => (None, Some(why)),
            },
        )
    }

    /// Pushes `file` (of `sha256`) as the entry of `hash` and signs it.
    pub fn put(&self, hash: &str, file: &Path, sha256: &str) -> Result<Entry, StoreError> {
        let size = std::fs::metadata(file)
            .map_err(|x| e(&format!("{}", file.display()), x))?
            .len();
        let layer = Descriptor {
            media_type: ASSET_MEDIA_TYPE.into(),
            digest: Digest::parse(&format!("sha256:{sha256}")).map_err(|x| e("digest", x))?,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let target = parse_ref(&format!("{}:{hash}", self.cache.name()))?;
        let image = self.push_one(
            &target,
            self.cache.insecure,
            layer.clone(),
            file,
            Some(hash),
        )?;
        Ok(Entry { image, layer })
    }

    /// Pushes a one-layer image (an empty config, as upstream's) under `target`'s tag. With
    /// `key`, the manifest carries it and is signed before the tag exists: pushed by digest,
    /// signed, then tagged, so no reader ever finds the tag without its signature.
    fn push_one(
        &self,
        target: &Reference,
        insecure: bool,
        layer: Descriptor,
        file: &Path,
        key: Option<&str>,
    ) -> Result<Reference, StoreError> {
        let cache = self.fetcher.client().cache();
        let config = serde_json::json!({
            "architecture": "",
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
            "config": {},
        });
        let cbytes = serde_json::to_vec(&config).map_err(|x| e("config", x))?;
        let (cd, cp) = cache
            .insert_bytes(&cbytes, "factory config")
            .map_err(|x| e("config", x))?;
        let manifest = oci::types::Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: OCI_CONFIG.into(),
                digest: cd.clone(),
                size: cbytes.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers: vec![layer.clone()],
            annotations: key
                .map(|k| (KEY_ANNOTATION.to_string(), k.to_string()))
                .into_iter()
                .collect(),
        };
        let mbytes = serde_json::to_vec(&manifest).map_err(|x| e("manifest", x))?;
        let files = oci::layout::ImageFiles {
            descriptor: Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: Digest::of(&mbytes),
                size: mbytes.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            manifest: mbytes,
            blobs: [(cd, cp), (layer.digest.clone(), file.to_path_buf())]
                .into_iter()
                .collect(),
        };
        self.push_signed(target, insecure, &files, key.is_some())
    }

    /// Pushes `img` by digest, signs it (when `sign`), then tags it as `target`.
    pub fn push_signed(
        &self,
        target: &Reference,
        insecure: bool,
        img: &oci::layout::ImageFiles,
        sign: bool,
    ) -> Result<Reference, StoreError> {
        let by_digest = target.with_digest(img.descriptor.digest.clone());
        let d = if img.descriptor.media_type == oci::types::OCI_INDEX {
            // an index: its manifests were pushed by digest before
            self.fetcher
                .client()
                .push(
                    &by_digest,
                    insecure,
                    &img.manifest,
                    oci::types::OCI_INDEX,
                    &[],
                )
                .map_err(|x| e(&format!("pushing {target}"), x))?
        } else {
            self.fetcher
                .push(&by_digest, insecure, img)
                .map_err(|x| e(&format!("pushing {target}"), x))?
        };
        if sign {
            self.fetcher
                .push_signature(target, insecure, &d, &self.key)
                .map_err(|x| e(&format!("signing {target}"), x))?;
        }
        self.fetcher
            .client()
            .push(
                target,
                insecure,
                &img.manifest,
                &img.descriptor.media_type,
                &[],
            )
            .map_err(|x| e(&format!("tagging {target}"), x))?;
        Ok(target.with_digest(d))
    }

    /// Streams the asset of `entry`.
    pub fn open(&self, entry: &Entry) -> Result<oci::client::BlobReader, StoreError> {
        self.fetcher
            .client()
            .open_blob(&entry.image, self.cache.insecure, &entry.layer)
            .map_err(|x| e(&format!("reading {}", entry.image), x))
    }

    /// Stores a schematic's canonical text under its ID.
    pub fn put_schematic(&self, id: &str, text: &str) -> Result<(), StoreError> {
        let cache = self.fetcher.client().cache();
        let (d, p) = cache
            .insert_bytes(text.as_bytes(), "schematic")
            .map_err(|x| e("schematic", x))?;
        if d.hex() != id {
            return Err(StoreError(format!(
                "schematic {id}: its text hashes to {d}"
            )));
        }
        let layer = Descriptor {
            media_type: SCHEMATIC_MEDIA_TYPE.into(),
            digest: d,
            size: text.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let target = parse_ref(&format!("{}:{id}", self.schematics.name()))?;
        self.push_one(&target, self.schematics.insecure, layer, &p, None)?;
        Ok(())
    }

    /// The stored text of schematic `id`, checked against the ID; `None` when unknown.
    pub fn get_schematic(&self, id: &str) -> Result<Option<String>, StoreError> {
        let r = parse_ref(&format!("{}:{id}", self.schematics.name()))?;
        let (image, layer) = match self.single_layer(&r, self.schematics.insecure, None)? {
            Ok(x) => x,
            Err(_) => return Ok(None),
        };
        if layer.digest.hex() != id || layer.size > schematic::MAX_SCHEMATIC as u64 {
            return Err(StoreError(format!(
                "stored schematic {id} has layer {} of {} bytes",
                layer.digest, layer.size
            )));
        }
        let mut text = String::new();
        use std::io::Read as _;
        self.fetcher
            .client()
            .open_blob(&image, self.schematics.insecure, &layer)
            .map_err(|x| e(&format!("reading {image}"), x))?
            .read_to_string(&mut text)
            .map_err(|x| e(&format!("reading {image}"), x))?;
        Ok(Some(text))
    }
}
