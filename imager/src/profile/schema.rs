//! The profile schema of spec §1.1: Go struct tags become camelCase keys; unknown keys are
//! rejected. Only the keys the imager acts on so far are modelled; the rest of §1.1 (overlay,
//! SecureBoot signers, image cache, ISO options) is rejected as unknown until it is supported.

use serde::{Deserialize, Serialize};

/// A whole profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    /// Profile to inherit from (built-in name); cleared after the merge.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_profile_name: String,
    /// `amd64` or `arm64`.
    #[serde(default)]
    pub arch: String,
    /// Platform name, becomes `talos.platform=`.
    #[serde(default)]
    pub platform: String,
    /// SecureBoot (not supported yet; must be false or unset).
    #[serde(default)]
    pub secureboot: Option<bool>,
    /// OS name.
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
    /// Output.
    #[serde(default)]
    pub output: Output,
}

/// `customization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    /// Extra kernel arguments (appended; `-key` deletes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// META values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta_contents: Vec<MetaValue>,
}

impl Customization {
    fn is_empty(&self) -> bool {
        self.extra_kernel_args.is_empty() && self.meta_contents.is_empty()
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

impl FileAsset {
    fn is_empty(&self) -> bool {
        self.path.is_empty()
    }
}

/// `input`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Input {
    /// Kernel image.
    #[serde(default, skip_serializing_if = "FileAsset::is_empty")]
    pub kernel: FileAsset,
    /// Initramfs.
    #[serde(default, skip_serializing_if = "FileAsset::is_empty")]
    pub initramfs: FileAsset,
    /// systemd-stub (for UKIs).
    #[serde(default, skip_serializing_if = "FileAsset::is_empty")]
    pub sd_stub: FileAsset,
    /// systemd-boot.
    #[serde(default, skip_serializing_if = "FileAsset::is_empty")]
    pub sd_boot: FileAsset,
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
    /// Post-processing.
    #[serde(default)]
    pub out_format: OutFormat,
}

/// Output kinds of spec §2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unset (invalid after the merge).
    #[default]
    Unknown,
    /// ISO (not supported yet).
    Iso,
    /// Disk image.
    Image,
    /// Installer OCI image (not supported yet).
    Installer,
    /// Kernel copy.
    Kernel,
    /// Initramfs.
    Initramfs,
    /// Unified kernel image (not supported yet).
    Uki,
    /// Kernel command line.
    Cmdline,
}

impl OutputKind {
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
    /// zstd -18.
    #[serde(rename = ".zst")]
    Zst,
    /// xz -0.
    #[serde(rename = ".xz")]
    Xz,
    /// gzip -6.
    #[serde(rename = ".gz")]
    Gz,
    /// tar + gzip.
    #[serde(rename = ".tar.gz")]
    TarGz,
}

/// `output.imageOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageOptions {
    /// Disk size in bytes (adjusted by the defaults, spec §4.4).
    #[serde(default)]
    pub disk_size: u64,
    /// Disk format.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_format: String,
    /// `qemu-img -o` style options.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_format_options: String,
    /// Sector size, 0 = 512.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_sector_size: u32,
    /// Bootloader.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bootloader: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
