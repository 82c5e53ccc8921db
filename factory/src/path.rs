//! The asset path grammar of `/image/:schematic/:version/:path` (docs/formats/factory.md,
//! "HTTP"), as upstream's `ParseFromPath`: the file name says the output kind, platform,
//! architecture, SecureBoot, disk format and compression; the result is the imager profile
//! that builds it (before the schematic's customization is merged in).
//!
//! - `kernel-<arch>`, `initramfs-<arch>.xz`, `cmdline-<platform>-<arch>[-secureboot]`;
//! - `<platform>-<arch>[-secureboot].iso`, `<platform>-<arch>[-secureboot]-uki.efi`;
//! - `installer-<arch>[-secureboot].tar`, `<platform>-installer-<arch>[-secureboot].tar`;
//! - `<platform>-<arch>[-secureboot].<raw|qcow2|vhd|ova>[.gz|.xz|.zst|.tar.gz]`, with the
//!   disk size and format options of the platform's built-in profile (qcow2 otherwise
//!   `cluster_size=8k`).
//!
//! `x86_64` and `i386` mean `amd64` (iPXE's `${buildarch}`); `digital-ocean` is the one
//! platform with a dash. Unlike upstream, an unknown platform is refused here, not when the
//! build fails, so that every bad path is a 400.

use imager::profile::{DEFAULT_RAW_DISK_SIZE, Platform};
use serde_json::{Value, json};

/// Bound on an asset path.
const MAX_PATH: usize = 256;

/// A path that names no asset.
#[derive(Debug, thiserror::Error)]
#[error("invalid asset path {path:?}: {why}")]
pub struct PathError {
    /// The path, shortened and with control characters escaped.
    pub path: String,
    /// What is wrong.
    pub why: String,
}

fn bad(path: &str, why: impl Into<String>) -> PathError {
    PathError {
        path: path.chars().take(80).flat_map(char::escape_debug).collect(),
        why: why.into(),
    }
}

/// An asset, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// The imager's output kind: `kernel`, `initramfs`, `cmdline`, `iso`, `uki`,
    /// `installer`, `image`.
    pub kind: &'static str,
    /// The platform.
    pub platform: String,
    /// `amd64` or `arm64`.
    pub arch: &'static str,
    /// A SecureBoot asset.
    pub secureboot: bool,
    /// `raw`, `.gz`, `.xz`, `.zst`, `.tar.gz`.
    pub out_format: &'static str,
    /// Disk images: the format (`raw`, `qcow2`, `vhd`, `ova`).
    pub disk_format: Option<&'static str>,
}

fn arch(s: &str, path: &str) -> Result<&'static str, PathError> {
    match s {
        "amd64" | "x86_64" | "i386" => Ok("amd64"),
        "arm64" => Ok("arm64"),
        _ => Err(bad(path, format!("unknown architecture {s:?}"))),
    }
}

/// `<platform>-<arch>[-secureboot]`.
fn platform_arch(s: &str, path: &str) -> Result<(String, &'static str, bool), PathError> {
    let (s, secureboot) = match s.strip_suffix("-secureboot") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let (mut platform, mut rest) = s
        .split_once('-')
        .ok_or_else(|| bad(path, "expected <platform>-<arch>"))?;
    if platform == "digital"
        && let Some(r) = rest.strip_prefix("ocean-")
    {
        platform = "digital-ocean";
        rest = r;
    }
    if Platform::parse(platform).is_none_or(|p| p.is_unset()) {
        return Err(bad(path, format!("unknown platform {platform:?}")));
    }
    Ok((platform.to_string(), arch(rest, path)?, secureboot))
}

/// Parses an asset file name.
pub fn parse(path: &str) -> Result<Asset, PathError> {
    if path.is_empty() || path.len() > MAX_PATH || path.contains(['/', '\\']) {
        return Err(bad(path, "not a file name"));
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(path, "control characters or spaces"));
    }
    let simple = |kind, platform: &str, arch, secureboot| Asset {
        kind,
        platform: platform.to_string(),
        arch,
        secureboot,
        out_format: "raw",
        disk_format: None,
    };
    if let Some(rest) = path.strip_prefix("kernel-") {
        return Ok(simple("kernel", "metal", arch(rest, path)?, false));
    }
    if let Some(rest) = path.strip_prefix("cmdline-") {
        let (p, a, sb) = platform_arch(rest, path)?;
        return Ok(simple("cmdline", &p, a, sb));
    }
    if let Some(rest) = path
        .strip_prefix("initramfs-")
        .and_then(|r| r.strip_suffix(".xz"))
    {
        return Ok(simple("initramfs", "metal", arch(rest, path)?, false));
    }
    if let Some(rest) = path.strip_suffix(".iso") {
        let (p, a, sb) = platform_arch(rest, path)?;
        return Ok(simple("iso", &p, a, sb));
    }
    if let Some(rest) = path.strip_suffix("-uki.efi") {
        let (p, a, sb) = platform_arch(rest, path)?;
        return Ok(simple("uki", &p, a, sb));
    }
    if let Some(rest) = path
        .strip_prefix("installer-")
        .and_then(|r| r.strip_suffix(".tar"))
    {
        let (rest, sb) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple("installer", "metal", arch(rest, path)?, sb));
    }
    if let Some((platform, rest)) = path.split_once("-installer-")
        && let Some(rest) = rest.strip_suffix(".tar")
    {
        let (p, a, sb) = platform_arch(&format!("{platform}-{rest}"), path)?;
        return Ok(simple("installer", &p, a, sb));
    }
    // a disk image: compression, then the disk format, then platform and arch
    let mut rest = path;
    let mut out_format = "raw";
    for f in [".tar.gz", ".gz", ".xz", ".zst"] {
        if let Some(r) = rest.strip_suffix(f) {
            rest = r;
            out_format = f;
            break;
        }
    }
    let mut disk_format = None;
    for f in ["raw", "qcow2", "vhd", "ova"] {
        if let Some(r) = rest.strip_suffix(&format!(".{f}")) {
            rest = r;
            disk_format = Some(f);
            break;
        }
    }
    let Some(disk_format) = disk_format else {
        return Err(bad(
            path,
            "not an asset name (kernel-, initramfs-, cmdline-, .iso, -uki.efi, installer, or a disk image .raw/.qcow2/.vhd/.ova)",
        ));
    };
    let (p, a, sb) = platform_arch(rest, path)?;
    Ok(Asset {
        kind: "image",
        platform: p,
        arch: a,
        secureboot: sb,
        out_format,
        disk_format: Some(disk_format),
    })
}

impl Asset {
    /// The imager profile that builds the asset for Talos `version` (docs/formats/profile.md),
    /// before the schematic is merged in.
    pub fn profile(&self, version: &str) -> Value {
        let mut output = json!({"kind": self.kind, "outFormat": self.out_format});
        if let Some(f) = self.disk_format {
            // the platform's built-in profile says the disk size and format options
            let builtin = imager::profile::builtin(&if self.secureboot {
                format!("secureboot-{}", self.platform)
            } else {
                self.platform.clone()
            })
            .or_else(|_| imager::profile::builtin(&self.platform))
            .ok();
            let opts = builtin
                .as_ref()
                .map(|b| &b["output"]["imageOptions"])
                .cloned()
                .unwrap_or(Value::Null);
            let size = opts["diskSize"]
                .as_u64()
                .filter(|s| *s != 0)
                .unwrap_or(DEFAULT_RAW_DISK_SIZE);
            let mut image = json!({"diskSize": size, "diskFormat": f});
            match opts["diskFormatOptions"].as_str().filter(|s| !s.is_empty()) {
                Some(o) => image["diskFormatOptions"] = json!(o),
                None if f == "qcow2" => image["diskFormatOptions"] = json!("cluster_size=8k"),
                None => {}
            }
            output["imageOptions"] = image;
        }
        let mut p = json!({
            "arch": self.arch,
            "platform": self.platform,
            "version": version,
            "output": output,
        });
        if self.secureboot {
            p["secureboot"] = json!(true);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_asset_name() {
        let a = |p: &str| parse(p).unwrap_or_else(|e| panic!("{e}"));
        let k = a("kernel-amd64");
        assert_eq!(
            (k.kind, k.arch, k.platform.as_str()),
            ("kernel", "amd64", "metal")
        );
        assert_eq!(a("kernel-x86_64").arch, "amd64");
        assert_eq!(a("initramfs-arm64.xz").kind, "initramfs");
        let c = a("cmdline-metal-amd64-secureboot");
        assert_eq!((c.kind, c.secureboot), ("cmdline", true));
        assert_eq!(a("metal-arm64.iso").kind, "iso");
        let u = a("metal-amd64-secureboot-uki.efi");
        assert_eq!((u.kind, u.secureboot), ("uki", true));
        let i = a("installer-arm64-secureboot.tar");
        assert_eq!((i.kind, i.arch, i.secureboot), ("installer", "arm64", true));
        let i = a("aws-installer-amd64.tar");
        assert_eq!((i.kind, i.platform.as_str()), ("installer", "aws"));
        let d = a("digital-ocean-amd64.raw.gz");
        assert_eq!(
            (d.kind, d.platform.as_str(), d.disk_format, d.out_format),
            ("image", "digital-ocean", Some("raw"), ".gz")
        );
        for (p, f, o) in [
            ("metal-amd64.raw.zst", "raw", ".zst"),
            ("metal-amd64.raw", "raw", "raw"),
            ("nocloud-arm64.qcow2", "qcow2", "raw"),
            ("azure-amd64.vhd.xz", "vhd", ".xz"),
            ("vmware-amd64.ova", "ova", "raw"),
            ("gcp-amd64.raw.tar.gz", "raw", ".tar.gz"),
            ("metal-amd64-secureboot.raw.xz", "raw", ".xz"),
        ] {
            let d = a(p);
            assert_eq!((d.disk_format, d.out_format), (Some(f), o), "{p}");
        }
        // the platform's own disk size and options
        let gcp = a("gcp-amd64.raw.tar.gz").profile("v1.14.0");
        assert_eq!(gcp["output"]["kind"], "image");
        assert_eq!(gcp["output"]["outFormat"], ".tar.gz");
        assert!(gcp["output"]["imageOptions"]["diskSize"].as_u64().unwrap() > 0);
        let q = a("nocloud-amd64.qcow2").profile("v1.14.0");
        assert_eq!(
            q["output"]["imageOptions"]["diskFormatOptions"],
            "cluster_size=8k"
        );
        let sb = a("metal-amd64-secureboot.iso").profile("v1.14.0");
        assert_eq!(
            (sb["secureboot"].clone(), sb["platform"].clone()),
            (json!(true), json!("metal"))
        );
    }

    /// Every profile the grammar makes is one the imager takes (SecureBoot ones once keys are
    /// given; the installer once a base installer is).
    #[test]
    fn the_imager_takes_the_profiles() {
        for p in [
            "kernel-amd64",
            "initramfs-arm64.xz",
            "cmdline-metal-amd64",
            "metal-amd64.iso",
            "metal-arm64.iso",
            "metal-amd64-uki.efi",
            "metal-amd64.raw.zst",
            "nocloud-arm64.qcow2",
            "azure-amd64.vhd.xz",
            "vmware-amd64.ova",
            "gcp-amd64.raw.tar.gz",
            "digital-ocean-amd64.raw.gz",
            "aws-amd64.raw.xz",
        ] {
            let v = parse(p).unwrap().profile("v1.14.0");
            if let Err(e) = imager::profile::resolve(
                v.clone(),
                p,
                std::path::Path::new("/usr/install"),
                &Default::default(),
            ) {
                panic!("{p}: {e}\n{v:#}");
            }
        }
    }

    #[test]
    fn bad_paths_say_why() {
        for (p, why) in [
            ("", "not a file name"),
            ("../etc/passwd", "not a file name"),
            ("kernel-mips", "unknown architecture"),
            ("initramfs-amd64.gz", "not an asset name"),
            ("metal.iso", "expected <platform>-<arch>"),
            ("mars-amd64.iso", "unknown platform"),
            ("metal-amd64.vmdk", "not an asset name"),
            ("metal-amd64.raw.bz2", "not an asset name"),
            ("cmdline-metal", "expected <platform>-<arch>"),
            ("metal-amd64\u{1b}[2J.iso", "control characters"),
            ("x-installer-amd64.tar", "unknown platform"),
        ] {
            let e = parse(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p:?}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        assert!(parse(&"a".repeat(300)).is_err());
    }
}
