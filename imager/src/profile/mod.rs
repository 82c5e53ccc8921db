//! Profiles: built-in YAML, parsing, Talos merge semantics, defaults and validation.
//!
//! In: a built-in profile name or a YAML document, plus an override built from CLI flags.
//! Out: a [`Profile`] with every default filled in and validated (docs/formats/profile.md, docs/formats/disk-layout.md).
//!
//! Merging happens on YAML values before typing (`pkg/machinery/config/merge`): maps merge per
//! key, sequences are concatenated, a right-hand scalar overrides unless it is the zero value
//! (`""`, `0`, null), and booleans always override. Typing is strict: an unknown key is an
//! error that names its full path (e.g. `output.imageOptions.diskSise`).

pub mod closed;
mod defaults;
pub mod quirks;
pub mod schema;
mod validate;

pub use schema::*;

use crate::error::{Error, ExitCode, Result};
use quirks::{DEFAULT_VERSION, Quirk, Quirks};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the boot assets whose paths the profile left unset are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetRoot {
    /// `<dir>/<arch>/…` on this machine (`--install-dir`, `IMAGER_INSTALL_DIR`).
    InstallDir(PathBuf),
    /// `/usr/install/<arch>/…` inside `input.baseInstaller`, which was given explicitly.
    BaseInstaller,
}

/// Which file inputs the profile left unset (so [`AssetRoot`] supplies them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaulted {
    /// `input.kernel.path`.
    pub kernel: bool,
    /// `input.initramfs.path`.
    pub initramfs: bool,
    /// `input.sdStub.path`.
    pub sd_stub: bool,
    /// `input.sdBoot.path`.
    pub sd_boot: bool,
}

/// A merged, defaulted and validated profile: the output of this stage, never changed after.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The profile, as `--dump-profile` prints it.
    pub profile: Profile,
    /// Where defaulted assets come from.
    pub assets: AssetRoot,
    /// Which file inputs were defaulted.
    pub defaulted: Defaulted,
}

/// Profiles an overlay image carries, by name (`profiles/<name>.yaml`), looked up as
/// `baseProfileName` before the built-in ones (docs/formats/overlays.md).
pub type OverlayProfiles = std::collections::BTreeMap<String, Value>;

/// Types `value` (a profile merged onto its base), fills the defaults and validates.
/// `what` names the source in errors; `install_dir` replaces `/usr/install` in default asset
/// paths unless an explicit base installer supplies them; `extra` are the overlay's profiles.
pub fn resolve(
    value: Value,
    what: &str,
    install_dir: &Path,
    extra: &OverlayProfiles,
) -> Result<Resolved> {
    let merged = resolve_base(value, extra)?;
    let mut p = from_value(merged, what)?;
    let defaulted = Defaulted {
        kernel: p.input.kernel.path.is_empty(),
        initramfs: p.input.initramfs.path.is_empty(),
        sd_stub: p.input.sd_stub.path.is_empty(),
        sd_boot: p.input.sd_boot.path.is_empty(),
    };
    // an explicitly given base installer supplies the assets whose paths are not set; the
    // profile then shows their paths inside it, as Talos does
    let assets = if p.input.base_installer.is_empty() {
        p.fill_defaults(&install_dir.to_string_lossy());
        AssetRoot::InstallDir(install_dir.to_path_buf())
    } else {
        p.fill_defaults(BASE_INSTALL_DIR);
        AssetRoot::BaseInstaller
    };
    p.validate()?;
    Ok(Resolved {
        profile: p,
        assets,
        defaulted,
    })
}

/// `/usr/install`: where boot assets live in installer images.
pub const BASE_INSTALL_DIR: &str = "/usr/install";

/// The largest `diskSize` accepted (16 TiB, the largest sparse file ext4 holds): the size
/// adjustment and the layout's arithmetic stay far from overflow.
pub const MAX_DISK_SIZE: u64 = 16 << 40;
/// `MinRAWDiskSize`.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;
/// `DefaultRAWDiskSize`.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;
const MIB: u64 = 1024 * 1024;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Parses YAML text into an untyped value (`what` names the source in errors).
pub fn parse_yaml(text: &str, what: &str) -> Result<Value> {
    // YAML 1.2 booleans, as go-yaml v3 reads untyped scalars: `yes` is a string (the three
    // boolean fields of the schema still take the YAML 1.1 words, as go-yaml does)
    let mut opts = serde_saphyr::Options::default();
    opts.strict_booleans = true;
    let v: Value = serde_saphyr::from_str_with_options(text, opts)
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
    base_profile(name, &OverlayProfiles::new())
}

/// The profile `name`: the overlay's if it carries one of that name, else the built-in one.
fn base_profile(name: &str, extra: &OverlayProfiles) -> Result<Value> {
    if let Some(v) = extra.get(name) {
        return Ok(v.clone());
    }
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        let theirs = if extra.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = extra.keys().map(String::as_str).collect();
            format!("; the overlay's: {}", names.join(", "))
        };
        Error::invalid(format!(
            "unknown profile {name:?} (built-in profiles: {}{theirs})",
            names.join(", ")
        ))
    })?;
    parse_yaml(text, &format!("built-in profile {name}"))
}

/// Resolves `baseProfileName` (if any: an overlay's profile first, then a built-in one) and
/// merges `v` onto it. As in Talos, a base profile's own `baseProfileName` is not followed.
pub fn resolve_base(v: Value, extra: &OverlayProfiles) -> Result<Value> {
    let base = match v.get("baseProfileName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Error::invalid(format!(
                "field baseProfileName: expected a profile name, got {}",
                closed::shown(&other.to_string())
            )));
        }
    };
    let mut out = match base {
        Some(name) if !name.is_empty() => base_profile(&name, extra)?,
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
    /// The profile as YAML, as `--dump-profile` prints it (docs/formats/profile.md): YAML 1.2
    /// without a directive, so strings are quoted only where a YAML 1.2 reader (Talos's
    /// go-yaml v3, or ours) would take them for another type: `version: 1.14.0` stays plain,
    /// `"1.5"`, `"true"`, `"null"` and `"0x0a"` are quoted.
    pub fn to_yaml(&self) -> Result<String> {
        let mut opts = serde_saphyr::SerializerOptions::default();
        opts.yaml_12 = true;
        opts.no_lang_directive = true;
        serde_saphyr::to_string_with_options(self, opts)
            .map_err(|e| Error::new(ExitCode::Unknown, anyhow::anyhow!("dumping profile: {e}")))
    }

    /// Quirks for the target version.
    pub fn quirks(&self) -> Quirks {
        Quirks::new(&self.version)
    }

    /// Whether the kernel is booted as a UKI (docs/formats/uki-secureboot.md): SecureBoot, or
    /// Talos ≥ 1.10. So far this decides the installer image's artifacts only.
    pub fn uses_uki(&self) -> bool {
        self.is_secureboot() || self.quirks().has(quirks::Quirk::UkiProfiles)
    }

    /// Whether SecureBoot is on.
    pub fn is_secureboot(&self) -> bool {
        self.secureboot == Some(true)
    }

    /// `Output.selectBootloader` (docs/formats/profile.md): SecureBoot forces sd-boot, an explicit choice is
    /// kept, else arm64 (≥1.10) → sd-boot, <1.10 → grub, amd64 → dual-boot.
    pub fn select_bootloader(&self, explicit: Bootloader) -> Bootloader {
        if self.is_secureboot() {
            return Bootloader::SdBoot;
        }
        // board images are GRUB-only, as Talos's SBC profiles are (docs/formats/overlays.md)
        if self.overlay.is_some() && self.output.kind == OutputKind::Image {
            return Bootloader::Grub;
        }
        if !matches!(explicit, Bootloader::Unset | Bootloader::None) {
            return explicit;
        }
        if !self.quirks().has(Quirk::SdBootForUefi) {
            Bootloader::Grub
        } else if self.arch == Arch::Arm64 {
            Bootloader::SdBoot
        } else {
            Bootloader::DualBoot
        }
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

    /// File name of the primary artifact (docs/formats/outputs.md), before post-processing.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolved(v: Value) -> Profile {
        resolve(
            v,
            "test",
            Path::new("/usr/install"),
            &OverlayProfiles::new(),
        )
        .unwrap()
        .profile
    }

    #[test]
    fn overlay_profiles_come_before_builtins() {
        let mut extra = OverlayProfiles::new();
        extra.insert(
            "metal".into(),
            json!({"arch": "arm64", "platform": "metal", "output": {"kind": "image",
                   "outFormat": ".xz", "imageOptions": {"diskSize": 1306525696_u64,
                   "diskFormat": "raw", "bootloader": "grub"}}}),
        );
        extra.insert(
            "board".into(),
            json!({"arch": "arm64", "platform": "metal", "baseProfileName": "aws",
                   "output": {"kind": "iso"}}),
        );
        let r = |v: Value| resolve(v, "test", Path::new("/usr/install"), &extra).map(|r| r.profile);
        // the overlay's `metal` shadows the built-in one, and the user's fields win
        let p = r(json!({"baseProfileName": "metal",
                         "customization": {"extraKernelArgs": ["a=1"]}}))
        .unwrap();
        assert_eq!(p.arch.as_str(), "arm64");
        assert_eq!(p.output.out_format.suffix(), ".xz");
        let io = p.output.image_options.as_ref().unwrap();
        // with the default version's BOOT growth (1000 MiB)
        assert_eq!(io.disk_size, 1306525696 + 1000 * MIB);
        assert_eq!(p.customization.extra_kernel_args, ["a=1"]);
        // a base profile's own baseProfileName is not followed (Talos)
        let p = r(json!({"baseProfileName": "board"})).unwrap();
        assert_eq!(p.platform, "metal");
        // unknown names list both sets
        let e = r(json!({"baseProfileName": "nope"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built-in profiles: ") && e.contains("the overlay's: board, metal"),
            "{e}"
        );
        // without the overlay, the built-in metal is amd64-capable again
        let p = resolve(
            json!({"baseProfileName": "metal", "arch": "amd64"}),
            "t",
            Path::new("/usr/install"),
            &OverlayProfiles::new(),
        )
        .unwrap()
        .profile;
        assert_eq!(p.output.kind, OutputKind::Image);
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
        // docs/formats/disk-layout.md: metal amd64 dual-boot 4 453 302 272
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
        assert!(p.check_supported().is_ok());
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
    fn closed_sets_list_their_values_and_dump_as_strings() {
        for (yaml, field, allowed) in [
            ("arch: riscv64\n", "field arch", "amd64, arm64"),
            ("platform: moon\n", "field platform", "aws, azure"),
            (
                "output:\n  imageOptions:\n    bootloader: lilo\n",
                "field output.imageOptions.bootloader",
                "none, sd-boot, grub, dual-boot",
            ),
            (
                "output:\n  imageOptions:\n    diskFormat: vdi\n",
                "field output.imageOptions.diskFormat",
                "raw, qcow2, vhd, ova",
            ),
        ] {
            let e = from_value(parse_yaml(yaml, "x").unwrap(), "stdin")
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains(allowed), "{e}");
        }
        // a long hostile value is cut in the message
        let long = format!("arch: {}\n", "x".repeat(500));
        let e = from_value(parse_yaml(&long, "x").unwrap(), "stdin")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
        let p = resolved(json!({"baseProfileName": "metal", "arch": "arm64"}));
        let y = p.to_yaml().unwrap();
        assert!(
            y.contains("arch: arm64\n") && y.contains("platform: metal\n"),
            "{y}"
        );
        assert!(
            y.contains("bootloader: sd-boot\n") && y.contains("diskFormat: raw\n"),
            "{y}"
        );
        assert_eq!(Arch::parse("amd64"), Some(Arch::Amd64));
        assert_eq!(Platform::DigitalOcean.as_str(), "digital-ocean");
    }

    #[test]
    fn the_dump_quotes_only_what_yaml_1_2_would_misread_and_reads_back_identical() {
        let tricky = [
            "yes", "on", "1.5", "true", "null", "~", "0x0a", "1e3", "-x", "*b", "[x]", "#c",
            "1.2.3", "",
        ];
        let p = resolve(
            json!({"arch": "amd64", "platform": "metal", "version": "1.14.0",
                   "customization": {"extraKernelArgs": tricky},
                   "output": {"kind": "iso", "outFormat": "raw"}}),
            "t",
            Path::new("/usr/install"),
            &OverlayProfiles::new(),
        );
        // "" is refused as a kernel argument; the rest is what a user may write
        assert!(p.is_err());
        let p = resolved(
            json!({"arch": "amd64", "platform": "metal", "version": "1.14.0",
               "customization": {"extraKernelArgs": &tricky[..tricky.len() - 1]},
               "output": {"kind": "iso", "outFormat": "raw"}}),
        );
        let y = p.to_yaml().unwrap();
        assert!(
            y.starts_with("arch: amd64\n"),
            "no directive, no document marker:\n{y}"
        );
        assert!(y.contains("\nversion: 1.14.0\n"), "{y}");
        for quoted in [
            "\"1.5\"", "\"true\"", "\"null\"", "\"~\"", "\"0x0a\"", "\"1e3\"",
        ] {
            assert!(y.contains(&format!("- {quoted}\n")), "{quoted} in\n{y}");
        }
        assert!(y.contains("- 1.2.3\n") && y.contains("- yes\n"), "{y}");
        let back = from_value(parse_yaml(&y, "dump").unwrap(), "dump").unwrap();
        assert_eq!(back, p, "the dump reads back as the same profile");
        // booleans: YAML 1.1 words only where a boolean is expected
        for (word, want) in [("yes", true), ("On", true), ("true", true), ("NO", false)] {
            let v = parse_yaml(&format!("secureboot: {word}\n"), "t").unwrap();
            assert_eq!(from_value(v, "t").unwrap().secureboot, Some(want), "{word}");
        }
        let v = parse_yaml("secureboot: maybe\n", "t").unwrap();
        let e = from_value(v, "t").unwrap_err().to_string();
        assert!(e.contains("field secureboot") && e.contains("maybe"), "{e}");
        let v = parse_yaml("secureboot: null\n", "t").unwrap();
        assert_eq!(from_value(v, "t").unwrap().secureboot, None);
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
