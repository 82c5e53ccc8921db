//! Defaults (`Profile.FillDefaults`, docs/formats/profile.md): the version, the asset paths,
//! the base installer reference, SecureBoot signer paths, the bootloader choice and the disk
//! size adjustment of docs/formats/disk-layout.md.

use super::*;

impl Profile {
    /// Fills the defaults of docs/formats/profile.md and docs/formats/disk-layout.md (`Profile.FillDefaults`). `install_dir`
    /// replaces `/usr/install` in the default asset paths.
    pub fn fill_defaults(&mut self, install_dir: &str) {
        if self.version.is_empty() {
            self.version = DEFAULT_VERSION.into();
        }
        let q = self.quirks();
        let dir = install_dir.trim_end_matches('/');
        let arch = self.arch;
        let fill = |a: &mut FileAsset, file: &str| {
            if a.path.is_empty() {
                a.path = format!("{dir}/{arch}/{file}");
            }
        };
        fill(&mut self.input.kernel, "vmlinuz");
        fill(&mut self.input.initramfs, "initramfs.xz");
        fill(&mut self.input.sd_stub, "systemd-stub.efi");
        fill(&mut self.input.sd_boot, "systemd-boot.efi");
        if self.input.base_installer.is_empty() {
            let repo = if q.has(Quirk::UnifiedInstaller) {
                "installer-base"
            } else {
                "installer"
            };
            self.input.base_installer.image_ref =
                format!("ghcr.io/siderolabs/{repo}:{}", self.version);
        }
        if self.is_secureboot() {
            let sb = SECUREBOOT_DIR;
            let a = self.input.secureboot.get_or_insert_with(Default::default);
            let s = &mut a.secure_boot_signer;
            if s.key_path.is_empty()
                && s.azure_vault_url.is_empty()
                && s.aws_kms_key_id.is_empty()
                && s.signer_address.is_empty()
            {
                s.key_path = format!("{sb}/uki-signing-key.pem");
                s.cert_path = format!("{sb}/uki-signing-cert.pem");
            }
            let pcr = &mut a.pcr_signer;
            if pcr.key_path.is_empty()
                && pcr.azure_vault_url.is_empty()
                && pcr.aws_kms_key_id.is_empty()
                && pcr.signer_address.is_empty()
            {
                pcr.key_path = format!("{sb}/pcr-signing-key.pem");
            }
            // pre-built enrolment databases are used only when they exist
            for (field, file) in [
                (&mut a.platform_key_path, "PK.auth"),
                (&mut a.key_exchange_key_path, "KEK.auth"),
                (&mut a.signature_key_path, "db.auth"),
            ] {
                let p = format!("{sb}/{file}");
                if field.is_empty() && std::path::Path::new(&p).exists() {
                    *field = p;
                }
            }
        }
        // Talos's default board name of an overlay
        if let Some(o) = self.overlay.as_mut()
            && o.name.is_empty()
        {
            o.name = "default".into();
        }
        match self.output.kind {
            OutputKind::Image => {
                let explicit = self
                    .output
                    .image_options
                    .as_ref()
                    .map(|o| o.bootloader)
                    .unwrap_or_default();
                let bl = self.select_bootloader(explicit);
                if let Some(o) = self.output.image_options.as_mut() {
                    if o.disk_format.is_unset() {
                        o.disk_format = DiskFormat::Raw;
                    }
                    let boot = q.boot_size_mib() * MIB;
                    if o.disk_size != 0 {
                        // saturating: an absurd size is refused by validate, naming the field
                        o.disk_size = o.disk_size.saturating_add(boot).saturating_sub(1000 * MIB);
                        if bl == "dual-boot" {
                            o.disk_size = o.disk_size.saturating_add(MIB + boot);
                        }
                    }
                    o.bootloader = bl;
                }
            }
            OutputKind::Iso if q.has(Quirk::IsoBootloader) => {
                let explicit = self
                    .output
                    .iso_options
                    .as_ref()
                    .map(|o| o.bootloader)
                    .unwrap_or_default();
                let bl = self.select_bootloader(explicit);
                self.output
                    .iso_options
                    .get_or_insert_with(Default::default)
                    .bootloader = bl;
            }
            _ => {}
        }
    }
}
