//! The profile schema of docs/formats/profile.md. Go struct tags become camelCase keys, field order follows
//! the Go structs (so dumps read like Talos's), `omitempty` fields are skipped when empty, and
//! unknown keys are rejected.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::closed::{Arch, Bootloader, DiskFormat, Platform};

fn is_false(b: &bool) -> bool {
    !*b
}

/// The YAML 1.1 spellings go-yaml v3 still accepts for a typed boolean (profiles are read
/// with YAML 1.2 booleans, so `yes` elsewhere stays a string, as in Talos).
fn yaml11_bool_str(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrWord {
    Bool(bool),
    Word(String),
}

fn bool_of<E: serde::de::Error>(v: BoolOrWord) -> Result<bool, E> {
    match v {
        BoolOrWord::Bool(b) => Ok(b),
        BoolOrWord::Word(w) => yaml11_bool_str(&w)
            .ok_or_else(|| E::custom(format!("invalid value {w:?}, expected a boolean"))),
    }
}

fn yaml11_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool_of(BoolOrWord::deserialize(d)?)
}

fn yaml11_opt_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Option::<BoolOrWord>::deserialize(d)?
        .map(bool_of)
        .transpose()
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// A whole profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    /// Profile to inherit from (built-in name); cleared after the merge.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_profile_name: String,
    /// `amd64` or `arm64`.
    #[serde(default)]
    pub arch: Arch,
    /// Platform name, becomes `talos.platform=`.
    #[serde(default)]
    pub platform: Platform,
    /// SecureBoot (no omitempty: dumps as `null` when unset).
    #[serde(default, deserialize_with = "yaml11_opt_bool")]
    pub secureboot: Option<bool>,
    /// OS name (default "Talos" where it is used).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Target version; drives the version quirks.
    #[serde(default)]
    pub version: String,
    /// Customization.
    #[serde(default, skip_serializing_if = "Customization::is_empty")]
    pub customization: Customization,
    /// Input assets.
    #[serde(default)]
    pub input: Input,
    /// Board overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayOptions>,
    /// Output.
    #[serde(default)]
    pub output: Output,
}

/// `customization`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    /// Extra kernel arguments (appended; `-key` deletes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// META values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta_contents: Vec<MetaValue>,
    /// Machine configuration embedded into the image (Talos ≥ 1.12).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embedded_machine_configuration: String,
}

impl Customization {
    fn is_empty(&self) -> bool {
        self.extra_kernel_args.is_empty()
            && self.meta_contents.is_empty()
            && self.embedded_machine_configuration.is_empty()
    }
}

/// One META value (`meta.Value`: untagged Go fields, so lowercase keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    /// Tag, 0..=255.
    pub key: u8,
    /// Value.
    pub value: String,
}

/// A file input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileAsset {
    /// Path on the build host.
    #[serde(default)]
    pub path: String,
}

/// An image input: a registry reference, a plain filesystem tarball or an OCI layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerAsset {
    /// Registry reference.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_ref: String,
    /// Plain HTTP / no TLS verification for this reference.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "yaml11_bool"
    )]
    pub force_insecure: bool,
    /// A plain filesystem tar (not a `docker save` archive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tarball_path: String,
    /// An OCI image layout directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub oci_path: String,
}

impl ContainerAsset {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.image_ref.is_empty() && self.tarball_path.is_empty() && self.oci_path.is_empty()
    }
}

/// A signing key with its certificate (file, Azure Key Vault, AWS KMS or a gRPC signer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKeyAndCertificate {
    /// PEM key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_path: String,
    /// PEM certificate file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_path: String,
    /// Azure Key Vault URL.
    #[serde(
        default,
        rename = "azureVaultURL",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_vault_url: String,
    /// Azure certificate id.
    #[serde(
        default,
        rename = "azureCertificateID",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_certificate_id: String,
    /// AWS KMS key id.
    #[serde(
        default,
        rename = "awsKMSKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_kms_key_id: String,
    /// AWS region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_region: String,
    /// Certificate file for the AWS key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_cert_path: String,
    /// Certificate ARN for the AWS key.
    #[serde(
        default,
        rename = "awsCertARN",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_cert_arn: String,
    /// gRPC signer (`unix://…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer_address: String,
}

/// A signing key (PCR signatures).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKey {
    /// PEM key file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_path: String,
    /// Azure Key Vault URL.
    #[serde(
        default,
        rename = "azureVaultURL",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_vault_url: String,
    /// Azure key id.
    #[serde(
        default,
        rename = "azureKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub azure_key_id: String,
    /// Azure key version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_key_version: String,
    /// AWS KMS key id.
    #[serde(
        default,
        rename = "awsKMSKeyID",
        skip_serializing_if = "String::is_empty"
    )]
    pub aws_kms_key_id: String,
    /// AWS region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aws_region: String,
    /// gRPC signer (`unix://…`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer_address: String,
}

/// `input.secureboot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBootAssets {
    /// UKI / sd-boot signer.
    #[serde(default)]
    pub secure_boot_signer: SigningKeyAndCertificate,
    /// PCR policy signer.
    #[serde(default)]
    pub pcr_signer: SigningKey,
    /// Pre-built PK.auth.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform_key_path: String,
    /// Pre-built KEK.auth.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_exchange_key_path: String,
    /// Pre-built db.auth.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_key_path: String,
    /// Add Microsoft's certificates to KEK and db.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "yaml11_bool"
    )]
    pub include_well_known_certs: bool,
}

/// `input`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Input {
    /// Kernel image.
    #[serde(default)]
    pub kernel: FileAsset,
    /// Initramfs.
    #[serde(default)]
    pub initramfs: FileAsset,
    /// systemd-stub (for UKIs).
    #[serde(default)]
    pub sd_stub: FileAsset,
    /// systemd-boot.
    #[serde(default)]
    pub sd_boot: FileAsset,
    /// Base installer image.
    #[serde(default, skip_serializing_if = "ContainerAsset::is_empty")]
    pub base_installer: ContainerAsset,
    /// Image cache.
    #[serde(default, skip_serializing_if = "ContainerAsset::is_empty")]
    pub image_cache: ContainerAsset,
    /// Overlay installer image (installer output only).
    #[serde(default, skip_serializing_if = "ContainerAsset::is_empty")]
    pub overlay_installer: ContainerAsset,
    /// SecureBoot signing material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secureboot: Option<SecureBootAssets>,
    /// System extensions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_extensions: Vec<ContainerAsset>,
    /// Registry mirrors, TLS and auth for pulls, in Talos's `machine.registries` shape (this
    /// imager's addition; `--registries-config` merges over it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<oci::RegistriesConfig>,
}

/// `overlay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlayOptions {
    /// Installer name inside the overlay (default `default`).
    #[serde(default)]
    pub name: String,
    /// Overlay image.
    #[serde(default)]
    pub image: ContainerAsset,
    /// Options passed to the overlay installer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// `output`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Output {
    /// Output kind.
    #[serde(default)]
    pub kind: OutputKind,
    /// Image options (kind `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_options: Option<ImageOptions>,
    /// ISO options (kind `iso`).
    #[serde(
        default,
        rename = "isoOptions",
        skip_serializing_if = "Option::is_none"
    )]
    pub iso_options: Option<IsoOptions>,
    /// Post-processing.
    #[serde(default)]
    pub out_format: OutFormat,
}

/// Output kinds of docs/formats/outputs.md, plus `pxe` (this imager's PXE set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unset (invalid after the merge).
    #[default]
    Unknown,
    /// ISO.
    Iso,
    /// Disk image.
    Image,
    /// Installer OCI image.
    Installer,
    /// Kernel copy.
    Kernel,
    /// Initramfs.
    Initramfs,
    /// Unified kernel image.
    Uki,
    /// Kernel command line.
    Cmdline,
    /// PXE set: kernel, initramfs, cmdline and an iPXE script.
    Pxe,
}

impl OutputKind {
    /// Every kind's spelling.
    pub const NAMES: &'static [&'static str] = &[
        "iso",
        "image",
        "installer",
        "kernel",
        "initramfs",
        "uki",
        "cmdline",
        "pxe",
    ];

    /// Parses the CLI spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "iso" => Self::Iso,
            "image" => Self::Image,
            "installer" => Self::Installer,
            "kernel" => Self::Kernel,
            "initramfs" => Self::Initramfs,
            "uki" => Self::Uki,
            "cmdline" => Self::Cmdline,
            "pxe" => Self::Pxe,
            _ => return None,
        })
    }

    /// The YAML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Iso => "iso",
            Self::Image => "image",
            Self::Installer => "installer",
            Self::Kernel => "kernel",
            Self::Initramfs => "initramfs",
            Self::Uki => "uki",
            Self::Cmdline => "cmdline",
            Self::Pxe => "pxe",
        }
    }
}

/// Post-processing format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutFormat {
    /// As is.
    #[default]
    #[serde(rename = "raw")]
    Raw,
    /// `.tar.gz` (sparse tar of `disk.raw`, gzip -6).
    #[serde(rename = ".tar.gz")]
    TarGz,
    /// xz -0.
    #[serde(rename = ".xz")]
    Xz,
    /// gzip -6.
    #[serde(rename = ".gz")]
    Gz,
    /// zstd -18.
    #[serde(rename = ".zst")]
    Zst,
}

impl OutFormat {
    /// The file name suffix.
    pub fn suffix(&self) -> &'static str {
        match self {
            Self::Raw => "",
            Self::TarGz => ".tar.gz",
            Self::Xz => ".xz",
            Self::Gz => ".gz",
            Self::Zst => ".zst",
        }
    }
}

/// `sdBootEnrollKeys`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SdBootEnrollKeys {
    /// Auto-enroll in VMs (the zero value).
    #[default]
    IfSafe,
    /// Manual enrolment from the menu.
    Manual,
    /// Enrol even on bare metal in setup mode.
    Force,
    /// No keys written.
    Off,
}

impl SdBootEnrollKeys {
    /// Parses the CLI spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "if-safe" => Self::IfSafe,
            "manual" => Self::Manual,
            "force" => Self::Force,
            "off" => Self::Off,
            _ => return None,
        })
    }
    /// The spelling of the profile, the CLI and `loader.conf`'s `secure-boot-enroll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfSafe => "if-safe",
            Self::Manual => "manual",
            Self::Force => "force",
            Self::Off => "off",
        }
    }
    fn is_default(&self) -> bool {
        *self == Self::IfSafe
    }
}

/// `output.imageOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageOptions {
    /// Disk size in bytes (adjusted by the defaults, docs/formats/disk-layout.md).
    #[serde(default)]
    pub disk_size: u64,
    /// `raw`, `qcow2`, `vhd` or `ova`.
    #[serde(default)]
    pub disk_format: DiskFormat,
    /// `qemu-img -o` style options.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_format_options: String,
    /// Sector size, 0 = 512.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub disk_sector_size: u32,
    /// `sd-boot`, `grub`, `dual-boot` (`none`/empty = default).
    #[serde(default)]
    pub bootloader: Bootloader,
    /// SecureBoot key enrolment.
    #[serde(default, skip_serializing_if = "SdBootEnrollKeys::is_default")]
    pub sd_boot_enroll_keys: SdBootEnrollKeys,
}

/// `output.isoOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IsoOptions {
    /// SecureBoot key enrolment (no omitempty).
    #[serde(default)]
    pub sd_boot_enroll_keys: SdBootEnrollKeys,
    /// Bootloader (Talos ≥ 1.12).
    #[serde(default, skip_serializing_if = "Bootloader::is_unset")]
    pub bootloader: Bootloader,
}
