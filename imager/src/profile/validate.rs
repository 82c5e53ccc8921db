//! Validation (`Profile.Validate`, docs/formats/profile.md) and what this imager does not
//! build yet. After [`Profile::validate`] the profile is never changed again.

use super::*;

impl Profile {
    /// `Profile.Validate` (docs/formats/profile.md): the rules every profile must meet.
    pub fn validate(&self) -> Result<()> {
        // unknown values of the closed sets were refused while typing; unset ones are not
        if self.arch.is_unset() {
            return Err(invalid(
                "arch",
                format!("must be set (one of {})", Arch::allowed()),
            ));
        }
        if self.platform.is_unset() {
            return Err(invalid("platform", "must be set"));
        }
        if self.is_secureboot() && !self.quirks().has(Quirk::Uki) {
            return Err(invalid(
                "secureboot",
                format!("needs version >= 1.5 (profile version {})", self.version),
            ));
        }
        check_name("name", &self.name, true)?;
        check_name("version", &self.version, false)?;
        crate::assemble::cmdline::check_extra_args(
            &self.customization.extra_kernel_args,
            self.arch,
        )?;
        // image references parse here, before anything (the blob cache included) is touched
        let refs = std::iter::once((
            "input.baseInstaller".to_string(),
            &self.input.base_installer,
        ))
        .chain(
            self.input
                .system_extensions
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("input.systemExtensions[{i}]"), a)),
        );
        for (i, a) in self.input.system_extensions.iter().enumerate() {
            if a.is_empty() {
                return Err(invalid(
                    &format!("input.systemExtensions[{i}]"),
                    "one of tarballPath, ociPath or imageRef is required",
                ));
            }
        }
        for (field, a) in refs {
            if !a.image_ref.is_empty() {
                oci::Reference::parse(&a.image_ref)
                    .map_err(|e| invalid(&format!("{field}.imageRef"), e))?;
            }
        }
        let c = &self.customization;
        let kind = self.output.kind.as_str();
        match self.output.kind {
            OutputKind::Unknown => return Err(invalid("output.kind", "must be set")),
            OutputKind::Iso => {
                if let Some(o) = &self.output.iso_options
                    && o.bootloader == Bootloader::None
                {
                    return Err(invalid("output.isoOptions.bootloader", "must not be none"));
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
                if o.disk_size > MAX_DISK_SIZE {
                    return Err(invalid(
                        "output.imageOptions.diskSize",
                        format!(
                            "{} bytes is larger than {MAX_DISK_SIZE} (16 TiB)",
                            o.disk_size
                        ),
                    ));
                }
                if o.bootloader.is_unset() || o.bootloader == Bootloader::None {
                    return Err(invalid(
                        "output.imageOptions.bootloader",
                        format!(
                            "must be one of sd-boot, grub, dual-boot, not {:?}",
                            o.bootloader.as_str()
                        ),
                    ));
                }
                if o.bootloader == Bootloader::DualBoot && self.arch != Arch::Amd64 {
                    return Err(invalid(
                        "output.imageOptions.bootloader",
                        "dual-boot exists for amd64 only",
                    ));
                }
                if o.disk_format.is_unset() {
                    return Err(invalid(
                        "output.imageOptions.diskFormat",
                        format!("must be one of {}", DiskFormat::allowed()),
                    ));
                }
                let opts_field = "output.imageOptions.diskFormatOptions";
                match o.disk_format {
                    DiskFormat::Qcow2 => {
                        diskfmt::parse_qcow2_options(&o.disk_format_options)
                            .map_err(|e| invalid(opts_field, e))?;
                    }
                    DiskFormat::Vhd => {
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
            let sb = self.input.secureboot.clone().unwrap_or_default();
            let (s, k) = (&sb.secure_boot_signer, &sb.pcr_signer);
            let remote = [
                (
                    "input.secureboot.secureBootSigner.azureVaultURL",
                    &s.azure_vault_url,
                ),
                (
                    "input.secureboot.secureBootSigner.awsKMSKeyID",
                    &s.aws_kms_key_id,
                ),
                (
                    "input.secureboot.secureBootSigner.signerAddress",
                    &s.signer_address,
                ),
                (
                    "input.secureboot.pcrSigner.azureVaultURL",
                    &k.azure_vault_url,
                ),
                ("input.secureboot.pcrSigner.awsKMSKeyID", &k.aws_kms_key_id),
                (
                    "input.secureboot.pcrSigner.signerAddress",
                    &k.signer_address,
                ),
            ];
            if let Some((field, _)) = remote.iter().find(|(_, v)| !v.is_empty()) {
                return Err(unsupported(
                    field,
                    "only key files sign here (keyPath/certPath); KMS and gRPC signers are not implemented",
                ));
            }
        }
        if !self.input.image_cache.is_empty() {
            return Err(unsupported(
                "input.imageCache",
                "image caches are not implemented yet",
            ));
        }
        if self.overlay.is_some() && self.is_secureboot() {
            return Err(invalid(
                "overlay",
                "board overlays boot GRUB and SecureBoot boots systemd-boot: not both",
            ));
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

/// Names that reach file names, loader entries, grub.cfg titles and volume labels: letters,
/// digits and `._+-` (and spaces in the OS name), at most 64 characters.
fn check_name(field: &str, v: &str, spaces: bool) -> Result<()> {
    let ok = v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c) || (spaces && c == ' '))
        && !v.starts_with([' ', '.', '-']);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{:?}: up to 64 letters, digits and ._+-{}, not starting with one of them",
                closed::shown(v),
                if spaces { " or spaces" } else { "" }
            ),
        ))
    }
}
