//! Closed sets of the profile schema as enums: each value is spelled exactly as in Talos's
//! YAML, serializes as that string (so dumps are unchanged), and an unknown value is refused
//! with the allowed ones listed. The empty string is the "unset" value where the schema has
//! one; defaults replace it before validation.

/// Declares a closed string set.
macro_rules! closed_set {
    (
        $(#[$m:meta])*
        $name:ident, $what:literal {
            $( $(#[$vm:meta])* $var:ident = $s:literal ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vm])* $var ),*
        }

        impl $name {
            /// Every spelling, the unset `""` included.
            pub const ALL: &'static [&'static str] = &[$($s),*];

            /// The YAML spelling.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( Self::$var => $s ),*
                }
            }

            /// Parses a spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $s => Some(Self::$var), )*
                    _ => None,
                }
            }

            /// The allowed (non-empty) spellings, for messages.
            pub fn allowed() -> String {
                Self::ALL
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            }

            /// Whether this is the unset value `""`.
            pub fn is_unset(&self) -> bool {
                self.as_str().is_empty()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{} {:?} is not one of {}",
                        $what,
                        crate::profile::closed::shown(&s),
                        Self::allowed()
                    ))
                })
            }
        }
    };
}

/// An input value as it may be echoed in a message: at most 64 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

closed_set! {
    /// Target architecture.
    Arch, "architecture" {
        /// Unset (invalid after defaults).
        #[default]
        Unset = "",
        /// x86-64.
        Amd64 = "amd64",
        /// AArch64.
        Arm64 = "arm64",
    }
}

closed_set! {
    /// Platforms known to `talos.platform=` (docs/formats/cmdline.md).
    Platform, "platform" {
        /// Unset (invalid after the merge).
        #[default]
        Unset = "",
        /// Akamai.
        Akamai = "akamai",
        /// Alibaba Cloud.
        Alibabacloud = "alibabacloud",
        /// AWS.
        Aws = "aws",
        /// Azure.
        Azure = "azure",
        /// CloudStack.
        Cloudstack = "cloudstack",
        /// Container.
        Container = "container",
        /// DigitalOcean.
        DigitalOcean = "digital-ocean",
        /// Equinix Metal.
        EquinixMetal = "equinixMetal",
        /// Exoscale.
        Exoscale = "exoscale",
        /// GCP.
        Gcp = "gcp",
        /// Hetzner Cloud.
        Hcloud = "hcloud",
        /// Bare metal.
        Metal = "metal",
        /// NoCloud.
        Nocloud = "nocloud",
        /// OpenNebula.
        Opennebula = "opennebula",
        /// OpenStack.
        Openstack = "openstack",
        /// Oracle Cloud.
        Oracle = "oracle",
        /// Scaleway.
        Scaleway = "scaleway",
        /// UpCloud.
        Upcloud = "upcloud",
        /// VMware.
        Vmware = "vmware",
        /// Vultr.
        Vultr = "vultr",
    }
}

closed_set! {
    /// Bootloader of a disk image or ISO.
    Bootloader, "bootloader" {
        /// Unset: the default for the version and arch.
        #[default]
        Unset = "",
        /// Talos's zero value, also "the default" for images (refused for ISOs).
        None = "none",
        /// systemd-boot (UEFI only).
        SdBoot = "sd-boot",
        /// GRUB (BIOS and UEFI).
        Grub = "grub",
        /// GRUB for BIOS, systemd-boot for UEFI.
        DualBoot = "dual-boot",
    }
}

closed_set! {
    /// Disk image format.
    DiskFormat, "disk format" {
        /// Unset: `raw`.
        #[default]
        Unset = "",
        /// Raw (sparse).
        Raw = "raw",
        /// qcow2.
        Qcow2 = "qcow2",
        /// VHD.
        Vhd = "vhd",
        /// OVA (VMDK inside).
        Ova = "ova",
    }
}
