//! Schematic + asset → the imager profile that builds it, and the profile's hash, the cache
//! key (docs/formats/factory.md, "Builds and the cache"), as upstream's `EnhanceFromSchematic` and
//! `profile.Hash`.

use crate::path::Asset;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The SecureBoot signing keys (files) and the fingerprint of the certificate, which stands
/// for them in the cache key.
#[derive(Debug, Clone)]
pub struct SecureBootKeys {
    /// UKI / boot loader signing key.
    pub key: String,
    /// Its certificate.
    pub cert: String,
    /// PCR policy signing key.
    pub pcr_key: String,
    /// SHA-256 of the certificate file.
    pub cert_sha256: String,
}

/// The inputs a profile is pinned to, by digest.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// The version's installer-base image, `registry/path@sha256:…`.
    pub base: String,
    /// The schematic's extensions in its order, `registry/path@sha256:…`.
    pub extensions: Vec<String>,
    /// Plain HTTP for both.
    pub insecure: bool,
    /// SecureBoot keys, when the factory has them.
    pub secureboot: Option<SecureBootKeys>,
    /// The schematic's overlay image from the version's overlay catalog,
    /// `registry/path@sha256:…`.
    pub overlay: Option<String>,
    /// The schematic's virtual extension ([`schematic_extension`]), a tarball.
    pub schematic_extension: Option<String>,
}

/// The name of the virtual extension that names an image's schematic (upstream's).
pub const SCHEMATIC_EXTENSION: &str = "schematic";

/// The virtual extension every image of a schematic carries, as upstream's
/// `schematicExtension`: `manifest.yaml` (name `schematic`, version = the ID, the canonical
/// schematic as `extraInfo` from Talos 1.7, which reads overlays from it) and the empty file
/// `rootfs/usr/local/share/schematic/<id>`, so a node (and `talosctl`) knows which schematic
/// it runs. The tarball's bytes depend on nothing else (mtime 0, uid 0). Unlike upstream's,
/// the author does not name the factory's URL, so that every instance makes the same bytes.
pub fn schematic_extension(
    id: &str,
    canonical: &str,
    extra_info: bool,
) -> std::io::Result<Vec<u8>> {
    let manifest = serde_json::json!({
        "version": "v1alpha1",
        "metadata": {
            "name": SCHEMATIC_EXTENSION,
            "version": id,
            "author": "Image Factory",
            "description": "Virtual extension which specifies the schematic of the image built with Image Factory.",
            "compatibility": {"talos": {"version": ">= 1.0.0"}},
            "extraInfo": if extra_info { canonical } else { "" },
        },
    });
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data)
    };
    put("manifest.yaml", tar::EntryType::Regular, 0o644, &text)?;
    for d in [
        "rootfs/",
        "rootfs/usr/",
        "rootfs/usr/local/",
        "rootfs/usr/local/share/",
        "rootfs/usr/local/share/schematic/",
    ] {
        put(d, tar::EntryType::Directory, 0o755, &[])?;
    }
    put(
        &format!("rootfs/usr/local/share/schematic/{id}"),
        tar::EntryType::Regular,
        0o644,
        &[],
    )?;
    b.into_inner()
}

/// A schematic this build cannot honour (a 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// The profile of `asset` for `version`, customized by `s` and pinned to `pins`.
pub fn profile(
    asset: &Asset,
    version: &str,
    s: &schematic::Schematic,
    pins: &Pinned,
) -> Result<Value, Unsupported> {
    let c = &s.customization;
    let mut p = asset.profile(version);
    let asset_ref = |r: &str| json!({"imageRef": r, "forceInsecure": pins.insecure});
    p["input"] = json!({"baseInstaller": asset_ref(&pins.base)});
    if !s.overlay.image.is_empty() || !s.overlay.name.is_empty() {
        let image = pins.overlay.as_ref().ok_or_else(|| {
            Unsupported(format!(
                "overlay {:?} ({:?}) is not in the version's overlay catalog",
                s.overlay.image, s.overlay.name
            ))
        })?;
        let mut o = json!({"image": asset_ref(image), "name": s.overlay.name});
        if !s.overlay.options.is_empty() {
            o["options"] = json!(s.overlay.options);
        }
        p["overlay"] = o;
    }
    if asset.secureboot {
        let k = pins.secureboot.as_ref().ok_or_else(|| {
            Unsupported(
                "SecureBoot assets are not built here: the factory has no secureBoot keys \
                 (secureBoot.enabled)"
                    .into(),
            )
        })?;
        let mut sb = json!({
            "secureBootSigner": {"keyPath": k.key, "certPath": k.cert},
            "pcrSigner": {"keyPath": k.pcr_key},
        });
        if c.secureboot.include_well_known_certificates {
            sb["includeWellKnownCerts"] = json!(true);
        }
        p["input"]["secureboot"] = sb;
    }
    let mut exts: Vec<Value> = pins.extensions.iter().map(|r| asset_ref(r)).collect();
    if let Some(t) = &pins.schematic_extension {
        exts.push(json!({"tarballPath": t}));
    }
    if !exts.is_empty() {
        p["input"]["systemExtensions"] = Value::Array(exts);
    }
    let mut cust = serde_json::Map::new();
    // the kernel and the initramfs carry no command line and no META; installers no META
    // (the imager refuses them there, as Talos's imager ignores them)
    let boot_pieces = matches!(asset.kind, "kernel" | "initramfs");
    if !c.extra_kernel_args.is_empty() && !boot_pieces {
        cust.insert("extraKernelArgs".into(), json!(c.extra_kernel_args));
    }
    if !c.meta.is_empty() && !boot_pieces && asset.kind != "installer" {
        cust.insert(
            "metaContents".into(),
            Value::Array(
                c.meta
                    .iter()
                    .map(|m| json!({"key": m.key, "value": m.value}))
                    .collect(),
            ),
        );
    }
    if !c.embedded_machine_configuration.is_empty() {
        cust.insert(
            "embeddedMachineConfiguration".into(),
            json!(c.embedded_machine_configuration),
        );
    }
    if !cust.is_empty() {
        p["customization"] = Value::Object(cust);
    }
    let enroll = (asset.secureboot && !c.secureboot.enroll_keys.is_empty())
        .then(|| json!(c.secureboot.enroll_keys));
    match asset.kind {
        "image" => {
            if !c.bootloader.is_empty() {
                p["output"]["imageOptions"]["bootloader"] = json!(c.bootloader);
            }
            if c.disk_image.sector_size != 0 {
                p["output"]["imageOptions"]["diskSectorSize"] = json!(c.disk_image.sector_size);
            }
            if let Some(e) = enroll {
                p["output"]["imageOptions"]["sdBootEnrollKeys"] = e;
            }
        }
        "iso" => {
            if !c.bootloader.is_empty() {
                p["output"]["isoOptions"]["bootloader"] = json!(c.bootloader);
            }
            if let Some(e) = enroll {
                p["output"]["isoOptions"]["sdBootEnrollKeys"] = e;
            }
        }
        _ => {}
    }
    Ok(p)
}

/// What changes every cache key when this project's builds change in a way the profile does
/// not show (upstream's "errata" salts); bump the number to rebuild everything.
const ERRATA: &str = "talos-rs factory build 1";

/// The cache key of a resolved profile: SHA-256 of its YAML with the registry hosts taken
/// out of image references and `forceInsecure` dropped (so that a mirror or a moved registry
/// keeps the cache), SecureBoot key paths replaced by the certificate's fingerprint (so that
/// moved files keep the cache and new keys do not), then `SOURCE_DATE_EPOCH` and the errata
/// salt.
pub fn hash(
    p: &imager::profile::Profile,
    epoch: i64,
    secureboot: Option<&SecureBootKeys>,
) -> Result<String, imager::error::Error> {
    let mut p = p.clone();
    if let Some(sb) = p.input.secureboot.as_mut() {
        let fp = secureboot.map_or("none", |k| k.cert_sha256.as_str());
        sb.secure_boot_signer.key_path.clear();
        sb.secure_boot_signer.cert_path = format!("sha256:{fp}");
        sb.pcr_signer.key_path.clear();
    }
    let strip = |a: &mut imager::profile::ContainerAsset| {
        if let Ok(r) = oci::Reference::parse(&a.image_ref) {
            a.image_ref = match &r.digest {
                Some(d) => format!("{}@{d}", r.repository),
                None => format!("{}:{}", r.repository, r.tag.as_deref().unwrap_or("latest")),
            };
        }
        a.force_insecure = false;
        // a file of the work directory: its name (the schematic ID), not where it lives
        if let Some(name) = std::path::Path::new(&a.tarball_path).file_name() {
            a.tarball_path = name.to_string_lossy().into_owned();
        }
    };
    strip(&mut p.input.base_installer);
    if let Some(o) = p.overlay.as_mut() {
        strip(&mut o.image);
    }
    for e in &mut p.input.system_extensions {
        strip(e);
    }
    let mut h = Sha256::new();
    h.update(p.to_yaml()?.as_bytes());
    h.update(format!("epoch {epoch}\n").as_bytes());
    h.update(ERRATA.as_bytes());
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pins(host: &str) -> Pinned {
        Pinned {
            base: format!("{host}/siderolabs/installer-base@sha256:{}", "a".repeat(64)),
            extensions: vec![format!(
                "{host}/siderolabs/gvisor@sha256:{}",
                "b".repeat(64)
            )],
            insecure: true,
            secureboot: None,
            overlay: None,
            schematic_extension: None,
        }
    }

    fn resolved(p: Value) -> imager::profile::Resolved {
        imager::profile::resolve(p, "test", std::path::Path::new("/x"), &Default::default())
            .unwrap()
    }

    #[test]
    fn customization_reaches_the_profile_and_the_hash_ignores_the_host() {
        let s = schematic::parse(
            b"customization:\n  extraKernelArgs: [noapic]\n  meta:\n    - {key: 12, value: hi}\n  \
              bootloader: grub\n  systemExtensions:\n    officialExtensions: [siderolabs/gvisor]\n",
        )
        .unwrap();
        let a = crate::path::parse("metal-amd64.raw.xz").unwrap();
        let p = profile(&a, "v1.14.0", &s, &pins("127.0.0.1:5000")).unwrap();
        assert_eq!(p["customization"]["extraKernelArgs"], json!(["noapic"]));
        assert_eq!(p["customization"]["metaContents"][0]["key"], json!(12));
        assert_eq!(p["output"]["imageOptions"]["bootloader"], json!("grub"));
        assert_eq!(
            p["input"]["systemExtensions"][0]["forceInsecure"],
            json!(true)
        );
        let r = resolved(p);
        let h = hash(&r.profile, 1, None).unwrap();
        let other = resolved(profile(&a, "v1.14.0", &s, &pins("mirror.example:443")).unwrap());
        assert_eq!(h, hash(&other.profile, 1, None).unwrap());
        assert_ne!(
            h,
            hash(&r.profile, 2, None).unwrap(),
            "the epoch is in the key"
        );
        let iso = crate::path::parse("metal-amd64.iso").unwrap();
        let pi = resolved(profile(&iso, "v1.14.0", &s, &pins("h")).unwrap());
        assert_ne!(h, hash(&pi.profile, 1, None).unwrap());
    }

    #[test]
    fn the_schematic_extension_is_a_valid_extension() {
        let s = schematic::parse(b"customization:\n  extraKernelArgs: [noapic]\n").unwrap();
        let id = s.id().unwrap();
        let t = schematic_extension(&id, &s.canonical().unwrap(), true).unwrap();
        assert_eq!(
            t,
            schematic_extension(&id, &s.canonical().unwrap(), true).unwrap()
        );
        let mut ar = tar::Archive::new(t.as_slice());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "manifest.yaml" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
                let m = sysext::Manifest::parse(&text).unwrap();
                assert_eq!(m.metadata.name, "schematic");
                assert_eq!(m.metadata.version, id);
                assert_eq!(m.metadata.extra_info, s.canonical().unwrap());
            }
            names.push(name);
        }
        assert_eq!(
            names.last().unwrap(),
            &format!("rootfs/usr/local/share/schematic/{id}")
        );
    }

    #[test]
    fn unknown_overlays_and_keyless_secureboot_are_refused() {
        let s = schematic::parse(b"overlay:\n  image: x/y\n  name: rpi\n").unwrap();
        let a = crate::path::parse("metal-amd64.raw.xz").unwrap();
        assert!(profile(&a, "v1.14.0", &s, &pins("h")).is_err());
        let s = schematic::parse(b"{}").unwrap();
        let a = crate::path::parse("metal-amd64-secureboot.iso").unwrap();
        assert!(profile(&a, "v1.14.0", &s, &pins("h")).is_err());
    }
}
