//! META values of a build (docs/formats/meta.md): the profile's `metaContents`, plus the
//! image-mode value `0x11 = dual-boot` that Talos ≥ 1.10 writes into amd64 dual-boot images.
//! Disk images carry them in their META partition; other outputs carry them on the kernel
//! command line as `talos.environment=INSTALLER_META_BASE64=…`.

use crate::error::{Error, Result};
use crate::profile::quirks::Quirk;
use crate::profile::{OutputKind, Profile};

/// META key written into dual-boot disk images (`DiskImageBootloader`).
pub const META_DISK_IMAGE_BOOTLOADER: u8 = 0x11;

/// META values of the profile (later duplicates overwrite earlier ones), plus the image-mode
/// auto value: `0x11 = dual-boot` on amd64 dual-boot images of Talos ≥ 1.10.
pub fn values(p: &Profile) -> Result<adv::Adv> {
    let mut a = adv::Adv::new();
    for (i, m) in p.customization.meta_contents.iter().enumerate() {
        a.set(m.key, m.value.as_bytes())
            .map_err(|e| Error::invalid(format!("field customization.metaContents[{i}]: {e}")))?;
    }
    let dual = p
        .output
        .image_options
        .as_ref()
        .is_some_and(|o| o.bootloader == "dual-boot");
    if p.output.kind == OutputKind::Image
        && dual
        && p.arch == "amd64"
        && !p.is_secureboot()
        && p.quirks().has(Quirk::SdBootForUefi)
    {
        a.set(META_DISK_IMAGE_BOOTLOADER, b"dual-boot")
            .map_err(|e| Error::invalid(format!("field customization.metaContents: {e}")))?;
    }
    Ok(a)
}

/// The `INSTALLER_META_BASE64` value for outputs without a META partition (`None` for disk
/// images and when there are no values).
pub fn cmdline_env(p: &Profile) -> Option<String> {
    (p.output.kind != OutputKind::Image && !p.customization.meta_contents.is_empty()).then(|| {
        let pairs: Vec<(u8, String)> = p
            .customization
            .meta_contents
            .iter()
            .map(|m| (m.key, m.value.clone()))
            .collect();
        adv::env::encode(&pairs, p.quirks().has(Quirk::CompressedMeta))
    })
}
