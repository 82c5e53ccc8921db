//! Profiles: built-in YAML, parsing, Talos merge semantics, defaults and validation.
//!
//! In: a built-in profile name or a YAML document, plus an override built from CLI flags.
//! Out: a [`Profile`] with every default filled in and validated (spec §1.1, §1.3, §4.4).
//!
//! Merging happens on YAML values before typing (`pkg/machinery/config/merge`): maps merge per
//! key, sequences are concatenated, a right-hand scalar overrides unless it is the zero value
//! (`""`, `0`, null), and booleans always override. Typing is strict: an unknown key is an
//! error that names its full path (e.g. `output.imageOptions.diskSise`).

pub mod schema;

pub use schema::*;

use crate::error::{Error, Result};
use crate::quirks::{DEFAULT_VERSION, Quirk, Quirks};
use serde_json::Value;

/// `MinRAWDiskSize`.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;
/// `DefaultRAWDiskSize`.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;
const MIB: u64 = 1024 * 1024;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Platforms known to `talos.platform=` (spec §10).
pub const PLATFORMS: &[&str] = &[
    "akamai",
    "alibabacloud",
    "aws",
    "azure",
    "cloudstack",
    "container",
    "digital-ocean",
    "equinixMetal",
    "exoscale",
    "gcp",
    "hcloud",
    "metal",
    "nocloud",
    "opennebula",
    "openstack",
    "oracle",
    "scaleway",
    "upcloud",
    "vmware",
    "vultr",
];

/// Parses YAML text into an untyped value (`what` names the source in errors).
pub fn parse_yaml(text: &str, what: &str) -> Result<Value> {
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| Error::invalid(format!("{what}: invalid YAML: {e}")))?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Default::default())),
        _ => Err(Error::invalid(format!(
            "{what}: a profile must be a YAML mapping"
        ))),
    }
}

/// Types a value strictly; errors name the field path.
pub fn from_value(v: Value, what: &str) -> Result<Profile> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::invalid(format!("{what}: {inner}"))
        } else {
            Error::invalid(format!("{what}: field {path}: {inner}"))
        }
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Merges `right` onto `left` with Talos semantics.
pub fn merge(left: &mut Value, right: Value) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, rv) in r {
                match l.get_mut(&k) {
                    Some(lv) => merge(lv, rv),
                    None => {
                        if !is_zero(&rv) {
                            l.insert(k, rv);
                        }
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(r)) => l.extend(r),
        (l, r) => {
            if !is_zero(&r) {
                *l = r;
            }
        }
    }
}

/// The built-in profile `name` as a value.
pub fn builtin(name: &str) -> Result<Value> {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        Error::invalid(format!(
            "unknown profile {name:?} (built-in profiles: {})",
            names.join(", ")
        ))
    })?;
    parse_yaml(text, &format!("built-in profile {name}"))
}

/// Resolves `baseProfileName` (if any) and merges `v` onto it.
pub fn resolve_base(v: Value) -> Result<Value> {
    let base = v
        .get("baseProfileName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut out = match base {
        Some(name) if !name.is_empty() => builtin(&name)?,
        _ => Value::Object(Default::default()),
    };
    merge(&mut out, v);
    if let Value::Object(m) = &mut out {
        m.remove("baseProfileName");
    }
    Ok(out)
}

/// Where SecureBoot keys live by convention (`-v …:/secureboot:ro`).
pub const SECUREBOOT_DIR: &str = "/secureboot";

fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("field {field}: {msg}"))
}

fn unsupported(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::unsupported(format!("field {field}: {msg}"))
}

impl Profile {
    /// Quirks for the target version.
    pub fn quirks(&self) -> Quirks {
        Quirks::new(&self.version)
    }

    /// Whether SecureBoot is on.
    pub fn is_secureboot(&self) -> bool {
        self.secureboot == Some(true)
    }

    /// `Output.selectBootloader` (spec §1.1): SecureBoot forces sd-boot, an explicit choice is
    /// kept, else arm64 (≥1.10) → sd-boot, <1.10 → grub, amd64 → dual-boot.
    pub fn select_bootloader(&self, explicit: &str) -> String {
        if self.is_secureboot() {
            return "sd-boot".into();
        }
        if !explicit.is_empty() && explicit != "none" {
            return explicit.into();
        }
        if !self.quirks().has(Quirk::SdBootForUefi) {
            "grub".into()
        } else if self.arch == "arm64" {
            "sd-boot".into()
        } else {
            "dual-boot".into()
        }
    }

    /// Fills the defaults of spec §1.1 / §4.4 (`Profile.FillDefaults`). `install_dir`
    /// replaces `/usr/install` in the default asset paths.
    pub fn fill_defaults(&mut self, install_dir: &str) {
        if self.version.is_empty() {
            self.version = DEFAULT_VERSION.into();
        }
        let q = self.quirks();
        let dir = install_dir.trim_end_matches('/');
        let arch = self.arch.clone();
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
        match self.output.kind {
            OutputKind::Image => {
                let explicit = self
                    .output
                    .image_options
                    .as_ref()
                    .map(|o| o.bootloader.clone())
                    .unwrap_or_default();
                let bl = self.select_bootloader(&explicit);
                if let Some(o) = self.output.image_options.as_mut() {
                    if o.disk_format.is_empty() {
                        o.disk_format = "raw".into();
                    }
                    let boot = q.boot_size_mib() * MIB;
                    if o.disk_size != 0 {
                        o.disk_size = (o.disk_size + boot).saturating_sub(1000 * MIB);
                        if bl == "dual-boot" {
                            o.disk_size += MIB + boot;
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
                    .map(|o| o.bootloader.clone())
                    .unwrap_or_default();
                let bl = self.select_bootloader(&explicit);
                self.output
                    .iso_options
                    .get_or_insert_with(Default::default)
                    .bootloader = bl;
            }
            _ => {}
        }
    }

    /// `Profile.Validate` (spec §1.1): the rules every profile must meet.
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
            && !self.quirks().has(crate::quirks::Quirk::EmbeddedConfig)
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

    /// `<platform>-<arch>[-secureboot]`.
    pub fn base_name(&self) -> String {
        let sb = if self.is_secureboot() {
            "-secureboot"
        } else {
            ""
        };
        format!("{}-{}{sb}", self.platform, self.arch)
    }

    /// File name of the primary artifact (spec §2), before post-processing.
    pub fn output_name(&self) -> String {
        let base = self.base_name();
        let sb = if self.is_secureboot() {
            "-secureboot"
        } else {
            ""
        };
        match self.output.kind {
            OutputKind::Image => {
                let fmt = self
                    .output
                    .image_options
                    .as_ref()
                    .map_or("raw", |o| o.disk_format.as_str());
                format!("{base}.{fmt}")
            }
            OutputKind::Kernel => format!("kernel-{}", self.arch),
            OutputKind::Initramfs => format!("initramfs-{base}.xz"),
            OutputKind::Cmdline => format!("cmdline-{base}"),
            OutputKind::Iso => format!("{base}.iso"),
            OutputKind::Uki => format!("{base}-uki.efi"),
            OutputKind::Installer => format!("installer-{}{sb}.tar", self.arch),
            OutputKind::Pxe => format!("{base}.ipxe"),
            OutputKind::Unknown => base,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolved(v: Value) -> Profile {
        let mut p = from_value(resolve_base(v).unwrap(), "test").unwrap();
        p.fill_defaults("/usr/install");
        p.validate().unwrap();
        p
    }

    #[test]
    fn merge_semantics() {
        let mut l = json!({"a": "x", "n": 5, "b": true, "s": [1], "m": {"k": "v"}});
        merge(
            &mut l,
            json!({"a": "", "n": 0, "b": false, "s": [2], "m": {"j": "w"}, "new": ""}),
        );
        assert_eq!(
            l,
            json!({"a": "x", "n": 5, "b": false, "s": [1, 2], "m": {"k": "v", "j": "w"}})
        );
        merge(&mut l, json!({"a": "y", "n": 7}));
        assert_eq!(l["a"], "y");
        assert_eq!(l["n"], 7);
    }

    #[test]
    fn metal_defaults_follow_the_spec() {
        let p = resolved(json!({"baseProfileName": "metal", "arch": "amd64"}));
        assert_eq!(p.platform, "metal");
        assert_eq!(p.version, DEFAULT_VERSION);
        assert_eq!(p.input.kernel.path, "/usr/install/amd64/vmlinuz");
        assert_eq!(
            p.input.base_installer.image_ref,
            "ghcr.io/siderolabs/installer-base:v1.14.0"
        );
        let o = p.output.image_options.as_ref().unwrap();
        // spec §4.4: metal amd64 dual-boot 4 453 302 272
        assert_eq!(o.disk_size, 4_453_302_272);
        assert_eq!(o.bootloader, "dual-boot");
        assert_eq!(p.output_name(), "metal-amd64.raw");
        let p = resolved(json!({"baseProfileName": "metal", "arch": "arm64"}));
        let o = p.output.image_options.unwrap();
        assert_eq!(
            (o.disk_size, o.bootloader.as_str()),
            (2_355_101_696, "sd-boot")
        );
        let p = resolved(json!({"baseProfileName": "aws", "arch": "amd64"}));
        assert_eq!(p.output.image_options.unwrap().disk_size, 11_736_711_168);
        let p =
            resolved(json!({"baseProfileName": "metal", "arch": "amd64", "version": "v1.10.0"}));
        assert_eq!(p.output.image_options.unwrap().disk_size, 2_356_150_272);
        assert_eq!(
            resolved(json!({"baseProfileName": "metal", "arch": "amd64", "version": "v1.9.0"}))
                .input
                .base_installer
                .image_ref,
            "ghcr.io/siderolabs/installer:v1.9.0"
        );
    }

    #[test]
    fn secureboot_forces_sd_boot_and_fills_signers() {
        let p = resolved(json!({"baseProfileName": "secureboot-metal", "arch": "amd64"}));
        assert_eq!(
            p.output.image_options.as_ref().unwrap().bootloader,
            "sd-boot"
        );
        let sb = p.input.secureboot.as_ref().unwrap();
        assert_eq!(
            sb.secure_boot_signer.key_path,
            "/secureboot/uki-signing-key.pem"
        );
        assert_eq!(sb.pcr_signer.key_path, "/secureboot/pcr-signing-key.pem");
        assert_eq!(p.output_name(), "metal-amd64-secureboot.raw");
        assert!(p.check_supported().is_err());
    }

    #[test]
    fn every_builtin_resolves_for_both_arches() {
        assert_eq!(BUILTIN.len(), 32);
        for (name, _) in BUILTIN {
            for arch in ["amd64", "arm64"] {
                resolved(json!({"baseProfileName": name, "arch": arch}));
            }
        }
    }

    #[test]
    fn strict_fields_name_their_path() {
        let v = parse_yaml(
            "platform: metal\noutput:\n  imageOptions:\n    diskSise: 1\n",
            "x",
        )
        .unwrap();
        let e = from_value(v, "stdin").unwrap_err().to_string();
        assert!(e.contains("output.imageOptions"), "{e}");
        assert!(e.contains("diskSise"), "{e}");
        let v = parse_yaml(
            "customization:\n  metaContents:\n    - key: 256\n      value: x\n",
            "x",
        )
        .unwrap();
        let e = from_value(v, "stdin").unwrap_err().to_string();
        assert!(e.contains("customization.metaContents[0].key"), "{e}");
        assert!(parse_yaml("a: [", "stdin").is_err());
        assert!(parse_yaml("- 1", "stdin").is_err());
        let e = builtin("nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("metal"), "{e}");
    }
}
