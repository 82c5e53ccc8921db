//! Version quirks (docs/formats/quirks.md) as one data table: cmdline, layout and defaults all ask
//! [`Quirks::has`] about a [`Quirk`], and the table says from which version it holds.
//!
//! A version is `[v]MAJOR.MINOR[.PATCH][-pre][+build]`; the pre-release is ignored and a
//! version that does not parse counts as "latest" (every quirk holds), as in Talos.

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

/// Behaviours that changed between versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// GRUB "Reset" menu entry.
    ResetOption,
    /// UKI and SecureBoot.
    Uki,
    /// gzip in INSTALLER_META_BASE64 above 256 bytes.
    CompressedMeta,
    /// Board overlays.
    Overlays,
    /// zstd (not xz) for extension squashfs and the appended initramfs cpio.
    ZstdExtensions,
    /// ISO volume id / volume set id.
    IsoVolumeId,
    /// `talos.halt_if_installed=1` on ISOs.
    HaltIfInstalled,
    /// metal amd64 drops `console=ttyS0`.
    MetalNoSerialConsole,
    /// Images omit STATE and EPHEMERAL.
    SkipDataPartitions,
    /// sd-boot for UEFI (dual-boot amd64, sd-boot arm64).
    SdBootForUefi,
    /// `installer-base` as the base installer image.
    UnifiedInstaller,
    /// `/usr/lib/{modules,firmware}`.
    Usrmerge,
    /// UKI profiles (`.profile` sections).
    UkiProfiles,
    /// `selinux=1`.
    Selinux,
    /// IMA arguments are dropped (they exist up to 1.10.x).
    NoImaArgs,
    /// BOOT is 2000 MiB (else 1000 MiB).
    LargeBootPartition,
    /// ISO bootloader selectable.
    IsoBootloader,
    /// `module.sig_enforce=1`.
    ModuleSigEnforce,
    /// Embedded machine configuration.
    EmbeddedConfig,
    /// `proc_mem.force_override=never`.
    ProcMemOverride,
    /// XFS `lts_6.18.conf`.
    XfsLts618,
    /// `init_on_alloc=1` and `lockdown=confidentiality` dropped; nvme timeout AWS-only.
    Drop114Defaults,
}

/// The table: each quirk and the first version it holds for.
pub const TABLE: &[(Quirk, (u64, u64, u64))] = &[
    (Quirk::ResetOption, (1, 4, 0)),
    (Quirk::Uki, (1, 5, 0)),
    (Quirk::CompressedMeta, (1, 6, 3)),
    (Quirk::Overlays, (1, 7, 0)),
    (Quirk::ZstdExtensions, (1, 8, 0)),
    (Quirk::IsoVolumeId, (1, 8, 0)),
    (Quirk::HaltIfInstalled, (1, 8, 0)),
    (Quirk::MetalNoSerialConsole, (1, 8, 0)),
    (Quirk::SkipDataPartitions, (1, 8, 0)),
    (Quirk::SdBootForUefi, (1, 10, 0)),
    (Quirk::UnifiedInstaller, (1, 10, 0)),
    (Quirk::Usrmerge, (1, 10, 0)),
    (Quirk::UkiProfiles, (1, 10, 0)),
    (Quirk::Selinux, (1, 10, 0)),
    (Quirk::NoImaArgs, (1, 11, 0)),
    (Quirk::LargeBootPartition, (1, 11, 0)),
    (Quirk::IsoBootloader, (1, 12, 0)),
    (Quirk::ModuleSigEnforce, (1, 12, 0)),
    (Quirk::EmbeddedConfig, (1, 12, 0)),
    (Quirk::ProcMemOverride, (1, 13, 0)),
    (Quirk::XfsLts618, (1, 13, 0)),
    (Quirk::Drop114Defaults, (1, 14, 0)),
];

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

    /// Whether `q` holds for this version.
    pub fn has(&self, q: Quirk) -> bool {
        let Some(v) = self.v else { return true };
        TABLE
            .iter()
            .find(|(k, _)| *k == q)
            .is_some_and(|(_, (major, minor, patch))| {
                v >= Version {
                    major: *major,
                    minor: *minor,
                    patch: *patch,
                }
            })
    }

    /// Size of the BOOT partition (and of the sd-boot ESP's extra room), in MiB.
    pub fn boot_size_mib(&self) -> u64 {
        if self.has(Quirk::LargeBootPartition) {
            2000
        } else {
            1000
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_latest() {
        assert!(Version::parse("v1.10.0-alpha.1") == Version::parse("1.10.0"));
        assert!(Quirks::new("garbage").has(Quirk::Drop114Defaults));
        assert!(!Quirks::new("v1.13.9").has(Quirk::Drop114Defaults));
        assert!(Quirks::new("v1.14.0-beta.1").has(Quirk::Drop114Defaults));
        assert_eq!(Quirks::new("v1.10.5").boot_size_mib(), 1000);
        assert_eq!(Quirks::new("1.11").boot_size_mib(), 2000);
        assert!(!Quirks::new("v1.10.9").has(Quirk::NoImaArgs));
        assert!(!Quirks::new("v1.6.2").has(Quirk::CompressedMeta));
        assert!(Quirks::new("v1.6.3").has(Quirk::CompressedMeta));
    }

    #[test]
    fn every_quirk_is_in_the_table_once() {
        for (q, _) in TABLE {
            assert_eq!(TABLE.iter().filter(|(k, _)| k == q).count(), 1, "{q:?}");
        }
        assert_eq!(TABLE.len(), 22);
    }
}
