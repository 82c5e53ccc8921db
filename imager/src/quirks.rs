//! Version quirks (spec §13): every behaviour that depends on the target version reads this
//! one table, so cmdline, layout and defaults agree.
//!
//! A version is `[v]MAJOR.MINOR[.PATCH][-pre][+build]`; the pre-release is ignored and a
//! version that does not parse counts as "latest", as in Talos.

/// A parsed target version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
}

/// The version this imager targets by default (Talos `version.Tag`).
pub const DEFAULT_VERSION: &str = "v1.14.0";

impl Version {
    /// Parses a version; `None` means "latest".
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = match it.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

/// Quirks for one target version.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    v: Option<Version>,
}

impl Quirks {
    /// Quirks of `version` (unparsable = latest).
    pub fn new(version: &str) -> Self {
        Self {
            v: Version::parse(version),
        }
    }

    fn at_least(&self, major: u64, minor: u64, patch: u64) -> bool {
        self.v.is_none_or(|v| {
            v >= Version {
                major,
                minor,
                patch,
            }
        })
    }

    /// Size of the BOOT partition (and of the sd-boot ESP's extra room), in MiB.
    pub fn boot_size_mib(&self) -> u64 {
        if self.at_least(1, 11, 0) { 2000 } else { 1000 }
    }
    /// GRUB reset menu entry.
    pub fn supports_reset_option(&self) -> bool {
        self.at_least(1, 4, 0)
    }
    /// UKI / SecureBoot.
    pub fn supports_uki(&self) -> bool {
        self.at_least(1, 5, 0)
    }
    /// gzip in INSTALLER_META_BASE64 when longer than 256 bytes.
    pub fn supports_compressed_encoded_meta(&self) -> bool {
        self.at_least(1, 6, 3)
    }
    /// zstd for extensions, ISO volume id, halt_if_installed, metal amd64 without ttyS0,
    /// images without STATE/EPHEMERAL.
    pub fn from_1_8(&self) -> bool {
        self.at_least(1, 8, 0)
    }
    /// sd-boot for UEFI, installer-base, usrmerge, UKI profiles, `selinux=1`.
    pub fn from_1_10(&self) -> bool {
        self.at_least(1, 10, 0)
    }
    /// IMA arguments (≤ 1.10.x).
    pub fn ima_args(&self) -> bool {
        !self.at_least(1, 11, 0)
    }
    /// `module.sig_enforce=1`, selectable ISO bootloader, embedded config.
    pub fn from_1_12(&self) -> bool {
        self.at_least(1, 12, 0)
    }
    /// `proc_mem.force_override=never`.
    pub fn from_1_13(&self) -> bool {
        self.at_least(1, 13, 0)
    }
    /// Drops `init_on_alloc=1` and `lockdown=confidentiality`; nvme timeout AWS-only.
    pub fn from_1_14(&self) -> bool {
        self.at_least(1, 14, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_latest() {
        assert!(Version::parse("v1.10.0-alpha.1") == Version::parse("1.10.0"));
        assert!(Quirks::new("garbage").from_1_14());
        assert!(!Quirks::new("v1.13.9").from_1_14());
        assert!(Quirks::new("v1.14.0-beta.1").from_1_14());
        assert_eq!(Quirks::new("v1.10.5").boot_size_mib(), 1000);
        assert_eq!(Quirks::new("1.11").boot_size_mib(), 2000);
        assert!(Quirks::new("v1.10.9").ima_args());
        assert!(!Quirks::new("v1.6.2").supports_compressed_encoded_meta());
        assert!(Quirks::new("v1.6.3").supports_compressed_encoded_meta());
    }
}
