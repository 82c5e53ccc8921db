//! Validation (`Profile.Validate`, docs/formats/profile.md) and what this imager does not
//! build yet. After [`Profile::validate`] the profile is never changed again.

use super::*;

impl Profile {
    /// `Profile.Validate` (docs/formats/profile.md): the rules every profile must meet.
    pub fn validate(&self) -> Result<()> {
        if self.arch != "amd64" && self.arch != "arm64" {
            return Err(invalid(
                "arch",
                format!("{:?} is not amd64 or arm64", self.arch),
            ));
        }
        if self.platform.is_empty() {
            return Err(invalid("platform", "must be set"));
        }
        if !PLATFORMS.contains(&self.platform.as_str()) {
            return Err(invalid(
                "platform",
                format!(
                    "unknown platform {:?} (known: {})",
                    self.platform,
                    PLATFORMS.join(", ")
                ),
            ));
        }
        if self.is_secureboot() && !self.quirks().has(Quirk::Uki) {
            return Err(invalid(
                "secureboot",
                format!("needs version >= 1.5 (profile version {})", self.version),
            ));
        }
        let c = &self.customization;
        let kind = self.output.kind.as_str();
        match self.output.kind {
            OutputKind::Unknown => return Err(invalid("output.kind", "must be set")),
            OutputKind::Iso => {
                if let Some(o) = &self.output.iso_options {
                    if o.bootloader == "none" {
                        return Err(invalid("output.isoOptions.bootloader", "must not be none"));
                    }
                    check_bootloader("output.isoOptions.bootloader", &o.bootloader, true)?;
                }
            }
            OutputKind::Installer => {
                if !c.meta_contents.is_empty() {
                    return Err(invalid(
                        "customization.metaContents",
                        "not allowed for output kind installer",
                    ));
                }
            }
            OutputKind::Kernel | OutputKind::Initramfs => {
                if self.is_secureboot() {
                    return Err(invalid(
                        "secureboot",
                        format!("not allowed for output kind {kind}"),
                    ));
                }
                if !c.extra_kernel_args.is_empty() {
                    return Err(invalid(
                        "customization.extraKernelArgs",
                        format!("not allowed for output kind {kind}"),
                    ));
                }
                if !c.meta_contents.is_empty() {
                    return Err(invalid(
                        "customization.metaContents",
                        format!("not allowed for output kind {kind}"),
                    ));
                }
            }
            OutputKind::Image => {
                let o = self.output.image_options.as_ref().ok_or_else(|| {
                    invalid("output.imageOptions", "required for output kind image")
                })?;
                if o.disk_size == 0 {
                    return Err(invalid(
                        "output.imageOptions.diskSize",
                        "required for output kind image",
                    ));
                }
                check_bootloader("output.imageOptions.bootloader", &o.bootloader, false)?;
                if o.bootloader == "dual-boot" && self.arch != "amd64" {
                    return Err(invalid(
                        "output.imageOptions.bootloader",
                        "dual-boot exists for amd64 only",
                    ));
                }
                if !matches!(o.disk_format.as_str(), "raw" | "qcow2" | "vhd" | "ova") {
                    return Err(invalid(
                        "output.imageOptions.diskFormat",
                        format!("{:?} is not one of raw, qcow2, vhd, ova", o.disk_format),
                    ));
                }
                let opts_field = "output.imageOptions.diskFormatOptions";
                match o.disk_format.as_str() {
                    "qcow2" => {
                        diskfmt::parse_qcow2_options(&o.disk_format_options)
                            .map_err(|e| invalid(opts_field, e))?;
                    }
                    "vhd" => {
                        diskfmt::parse_vhd_options(&o.disk_format_options)
                            .map_err(|e| invalid(opts_field, e))?;
                    }
                    // raw and ova run no qemu-img in Talos either: options are ignored there
                    _ => {}
                }
                if !matches!(o.disk_sector_size, 0 | 512 | 4096) {
                    return Err(invalid(
                        "output.imageOptions.diskSectorSize",
                        format!("{} (512 or 4096)", o.disk_sector_size),
                    ));
                }
            }
            OutputKind::Uki | OutputKind::Cmdline | OutputKind::Pxe => {}
        }
        Ok(())
    }

    /// What this imager cannot build yet: exit code 3 with the field at fault.
    pub fn check_supported(&self) -> Result<()> {
        if self.is_secureboot() {
            return Err(unsupported(
                "secureboot",
                "SecureBoot is not implemented yet",
            ));
        }
        let kind = self.output.kind;
        if matches!(kind, OutputKind::Uki) {
            return Err(unsupported(
                "output.kind",
                format!("{} output is not implemented yet", kind.as_str()),
            ));
        }
        if !self.input.image_cache.is_empty() {
            return Err(unsupported(
                "input.imageCache",
                "image caches are not implemented yet",
            ));
        }
        if self.overlay.is_some() {
            return Err(unsupported("overlay", "overlays are not implemented yet"));
        }
        if !self.customization.embedded_machine_configuration.is_empty()
            && !self
                .quirks()
                .has(crate::profile::quirks::Quirk::EmbeddedConfig)
        {
            return Err(unsupported(
                "customization.embeddedMachineConfiguration",
                format!(
                    "embedded machine configuration needs Talos >= 1.12 (version {})",
                    self.version
                ),
            ));
        }
        Ok(())
    }
}

fn check_bootloader(field: &str, v: &str, allow_empty: bool) -> Result<()> {
    match v {
        "sd-boot" | "grub" | "dual-boot" => Ok(()),
        "" if allow_empty => Ok(()),
        other => Err(invalid(
            field,
            format!("{other:?} is not one of sd-boot, grub, dual-boot"),
        )),
    }
}
