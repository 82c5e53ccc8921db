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
use crate::quirks::{DEFAULT_VERSION, Quirks};
use serde_json::Value;

/// `MinRAWDiskSize`.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;
/// `DefaultRAWDiskSize`.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;
const MIB: u64 = 1024 * 1024;

/// Built-in profiles, embedded from `profiles/`.
pub const BUILTIN: &[(&str, &str)] = &[("metal", include_str!("../../../profiles/metal.yaml"))];

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

/// Bootloaders the disk writer implements today.
pub const IMPLEMENTED_BOOTLOADERS: &[&str] = &["sd-boot"];

impl Profile {
    /// Quirks for the target version.
    pub fn quirks(&self) -> Quirks {
        Quirks::new(&self.version)
    }

    /// `Output.selectBootloader` (spec §1.1).
    fn select_bootloader(&self, explicit: &str) -> String {
        if self.secureboot == Some(true) {
            return "sd-boot".into();
        }
        if !explicit.is_empty() {
            return explicit.into();
        }
        let q = self.quirks();
        if !q.from_1_10() {
            "grub".into()
        } else if self.arch == "arm64" {
            "sd-boot".into()
        } else {
            "dual-boot".into()
        }
    }

    /// Fills the defaults of spec §1.1 / §4.4. `install_dir` replaces `/usr/install` in the
    /// default asset paths. Returns notices to print (e.g. a default that was not available).
    pub fn fill_defaults(&mut self, default_arch: &str, install_dir: &str) -> Vec<String> {
        let mut notes = Vec::new();
        if self.arch.is_empty() {
            self.arch = default_arch.into();
        }
        if self.version.is_empty() {
            self.version = DEFAULT_VERSION.into();
        }
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
        if self.output.kind == OutputKind::Image {
            let q = self.quirks();
            let explicit = self
                .output
                .image_options
                .as_ref()
                .map(|o| o.bootloader.clone())
                .unwrap_or_default();
            let mut bl = self.select_bootloader(&explicit);
            if explicit.is_empty() && !IMPLEMENTED_BOOTLOADERS.contains(&bl.as_str()) {
                notes.push(format!(
                    "the default bootloader for {} {} is {bl}, which is not implemented yet; using sd-boot",
                    self.arch, self.version
                ));
                bl = "sd-boot".into();
            }
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
        notes
    }

    /// `Profile.Validate` plus what this imager supports so far.
    pub fn validate(&self) -> Result<()> {
        if self.arch != "amd64" && self.arch != "arm64" {
            return Err(Error::invalid(format!(
                "field arch: {:?} is not supported (amd64 or arm64)",
                self.arch
            )));
        }
        if self.platform.is_empty() {
            return Err(Error::invalid("field platform: must be set"));
        }
        if !PLATFORMS.contains(&self.platform.as_str()) {
            return Err(Error::invalid(format!(
                "field platform: unknown platform {:?} (known: {})",
                self.platform,
                PLATFORMS.join(", ")
            )));
        }
        if self.secureboot == Some(true) {
            if !self.quirks().supports_uki() {
                return Err(Error::invalid(format!(
                    "field secureboot: needs version >= 1.5 (profile version {})",
                    self.version
                )));
            }
            return Err(Error::unsupported(
                "field secureboot: SecureBoot is not implemented yet",
            ));
        }
        let c = &self.customization;
        match self.output.kind {
            OutputKind::Unknown => {
                return Err(Error::invalid("field output.kind: must be set"));
            }
            OutputKind::Iso | OutputKind::Installer | OutputKind::Uki => {
                return Err(Error::unsupported(format!(
                    "field output.kind: {} output is not implemented yet",
                    self.output.kind.as_str()
                )));
            }
            OutputKind::Kernel | OutputKind::Initramfs => {
                if !c.extra_kernel_args.is_empty() {
                    return Err(Error::invalid(format!(
                        "field customization.extraKernelArgs: not allowed for output kind {}",
                        self.output.kind.as_str()
                    )));
                }
                if !c.meta_contents.is_empty() {
                    return Err(Error::invalid(format!(
                        "field customization.metaContents: not allowed for output kind {}",
                        self.output.kind.as_str()
                    )));
                }
            }
            OutputKind::Image => {
                let o = self.output.image_options.as_ref().ok_or_else(|| {
                    Error::invalid("field output.imageOptions: required for output kind image")
                })?;
                if o.disk_size == 0 {
                    return Err(Error::invalid(
                        "field output.imageOptions.diskSize: required for output kind image",
                    ));
                }
                match o.bootloader.as_str() {
                    "sd-boot" => {}
                    "grub" | "dual-boot" => {
                        return Err(Error::unsupported(format!(
                            "field output.imageOptions.bootloader: {} is not implemented yet",
                            o.bootloader
                        )));
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "field output.imageOptions.bootloader: {other:?} is not one of sd-boot, grub, dual-boot"
                        )));
                    }
                }
                match o.disk_format.as_str() {
                    "raw" => {}
                    "qcow2" | "vhd" | "ova" => {
                        return Err(Error::unsupported(format!(
                            "field output.imageOptions.diskFormat: {} is not implemented yet",
                            o.disk_format
                        )));
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "field output.imageOptions.diskFormat: {other:?} is not one of raw, qcow2, vhd, ova"
                        )));
                    }
                }
                if !matches!(o.disk_sector_size, 0 | 512 | 4096) {
                    return Err(Error::invalid(format!(
                        "field output.imageOptions.diskSectorSize: {} (512 or 4096)",
                        o.disk_sector_size
                    )));
                }
            }
            OutputKind::Cmdline => {}
        }
        if self.output.out_format == OutFormat::TarGz {
            return Err(Error::unsupported(
                "field output.outFormat: .tar.gz is not implemented yet",
            ));
        }
        Ok(())
    }

    /// File name of the primary artifact (spec §2), before post-processing.
    pub fn output_name(&self) -> String {
        let base = format!("{}-{}", self.platform, self.arch);
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
            OutputKind::Installer => format!("installer-{}.tar", self.arch),
            OutputKind::Unknown => base,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

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
    fn metal_defaults() {
        let v = resolve_base(json!({"baseProfileName": "metal", "arch": "amd64"})).unwrap();
        let mut p = from_value(v, "test").unwrap();
        let notes = p.fill_defaults("amd64", "/usr/install");
        assert_eq!(notes.len(), 1, "{notes:?}");
        p.validate().unwrap();
        assert_eq!(p.platform, "metal");
        assert_eq!(p.version, DEFAULT_VERSION);
        assert_eq!(p.input.kernel.path, "/usr/install/amd64/vmlinuz");
        let o = p.output.image_options.as_ref().unwrap();
        // MinRAWDiskSize + (2000 - 1000) MiB: the sd-boot size of spec §4.4 (metal arm64 v1.15)
        assert_eq!(o.disk_size, 2_355_101_696);
        assert_eq!(o.bootloader, "sd-boot");
        assert_eq!(p.output_name(), "metal-amd64.raw");
        assert_eq!(p.output.out_format, OutFormat::Zst);
        // arm64 selects sd-boot by the spec rule, without a notice
        let v = resolve_base(json!({"baseProfileName": "metal", "arch": "arm64"})).unwrap();
        let mut p = from_value(v, "test").unwrap();
        assert!(p.fill_defaults("amd64", "/usr/install").is_empty());
        assert_eq!(p.output.image_options.unwrap().disk_size, 2_355_101_696);
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
