//! Volume geometry: from a byte size and [`FatOptions`] to the FAT32 layout.
//!
//! In: volume size, sector size, optional sectors per cluster. Out: a [`Geometry`] with the
//! reserved sectors, FAT size and cluster count, computed the way `mkfs.fat -F 32` does with
//! its default structure alignment (reserved sectors and FAT size rounded up to whole
//! clusters, so clusters are aligned relative to the start of the volume).

use crate::{FatError, FatOptions};

/// FAT32 needs at least this many clusters; fewer means FAT12/16 to a strict reader.
pub const MIN_FAT32_CLUSTERS: u64 = 65525;
/// Largest cluster count FAT32 can address (cluster numbers 2..=0x0FFFFFF6).
const MAX_FAT32_CLUSTERS: u64 = 0x0FFF_FFF5;
/// Reserved sectors mkfs.fat uses for FAT32 (before alignment to the cluster size).
const RESERVED_SECTORS: u64 = 32;
/// Number of FAT copies.
pub(crate) const NUM_FATS: u64 = 2;

/// The computed layout of one FAT32 volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per logical sector.
    pub sector_size: u64,
    /// Sectors per cluster.
    pub spc: u64,
    /// Reserved sectors (boot sector, FSInfo, backups).
    pub reserved: u64,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// Total sectors of the volume.
    pub total_sectors: u64,
    /// Number of data clusters (cluster numbers 2..clusters+2).
    pub clusters: u64,
}

impl Geometry {
    /// Computes the geometry for a volume of `size_bytes`, validating the options.
    pub fn compute(size_bytes: u64, opts: &FatOptions) -> Result<Geometry, FatError> {
        let ss = u64::from(opts.sector_size);
        if !matches!(ss, 512 | 1024 | 2048 | 4096) {
            return Err(FatError::InvalidOptions(format!(
                "sector size {ss} is not 512, 1024, 2048 or 4096"
            )));
        }
        let total_sectors = size_bytes / ss;
        if total_sectors > u64::from(u32::MAX) {
            return Err(FatError::InvalidOptions(format!(
                "volume of {size_bytes} bytes has more than 2^32-1 sectors"
            )));
        }
        let (mut spc, explicit) = match opts.sectors_per_cluster {
            Some(n) if n.is_power_of_two() => (u64::from(n), true),
            Some(n) => {
                return Err(FatError::InvalidOptions(format!(
                    "sectors per cluster {n} is not a power of two"
                )));
            }
            None => (default_spc(size_bytes, ss), false),
        };
        loop {
            let g = Self::with_spc(total_sectors, ss, spc);
            if g.clusters > MAX_FAT32_CLUSTERS {
                if explicit || spc == 128 {
                    return Err(FatError::InvalidOptions(format!(
                        "{} clusters exceed the FAT32 maximum; use larger clusters",
                        g.clusters
                    )));
                }
                spc *= 2;
                continue;
            }
            if g.clusters >= MIN_FAT32_CLUSTERS {
                return Ok(g);
            }
            if !explicit && spc > 1 {
                spc /= 2;
                continue;
            }
            if opts.allow_small && g.clusters > 0 {
                return Ok(g);
            }
            return Err(FatError::TooSmall {
                size_bytes,
                clusters: g.clusters,
                sectors_per_cluster: u8::try_from(spc).unwrap_or(u8::MAX),
            });
        }
    }

    /// mkfs.fat's FAT32 sizing for a fixed cluster size: estimate the cluster count from the
    /// space after the reserved sectors, size the FATs for it (rounded up to whole clusters),
    /// then recount the clusters that really fit after both FATs.
    fn with_spc(total_sectors: u64, ss: u64, spc: u64) -> Geometry {
        let reserved = RESERVED_SECTORS.div_ceil(spc) * spc;
        let fat_data = total_sectors.saturating_sub(reserved);
        let estimate = (fat_data * ss + NUM_FATS * 8) / (spc * ss + NUM_FATS * 4);
        let fat_sectors = ((estimate + 2) * 4).div_ceil(ss).div_ceil(spc) * spc;
        let fits = fat_data.saturating_sub(NUM_FATS * fat_sectors) / spc;
        // The FAT must have an entry for every cluster (plus the two reserved entries).
        let clusters = fits.min((fat_sectors * ss / 4).saturating_sub(2));
        Geometry {
            sector_size: ss,
            spc,
            reserved,
            fat_sectors,
            total_sectors,
            clusters,
        }
    }

    /// Cluster size in bytes.
    pub fn cluster_bytes(&self) -> u64 {
        self.sector_size * self.spc
    }

    /// Byte offset (from the volume start) of FAT number `n` (0-based).
    pub fn fat_offset(&self, n: u64) -> u64 {
        (self.reserved + n * self.fat_sectors) * self.sector_size
    }

    /// Byte offset (from the volume start) of cluster 2, the first data cluster.
    pub fn data_offset(&self) -> u64 {
        self.fat_offset(NUM_FATS)
    }

    /// Byte offset (from the volume start) of data cluster `cluster` (>= 2).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + (u64::from(cluster) - 2) * self.cluster_bytes()
    }
}

/// mkfs.fat's default cluster size for FAT32. For 512-byte sectors: < 260 MiB → 1 sector,
/// < 8 GiB → 8, < 16 GiB → 16, < 32 GiB → 32, else 64. Larger sectors start at 1 sector per
/// cluster (doubled by the caller only if the cluster count would exceed the FAT32 maximum).
fn default_spc(size_bytes: u64, ss: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if ss != 512 {
        return 1;
    }
    match size_bytes {
        s if s < 260 * MIB => 1,
        s if s < 8 * GIB => 8,
        s if s < 16 * GIB => 16,
        s if s < 32 * GIB => 32,
        _ => 64,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn geo(size: u64, ss: u16, spc: Option<u8>) -> Geometry {
        let mut o = FatOptions::new("EFI", 0, 0);
        o.sector_size = ss;
        o.sectors_per_cluster = spc;
        o.allow_small = true;
        Geometry::compute(size, &o).unwrap()
    }

    /// Values taken from `mkfs.fat -F 32` (dosfstools 4.2) on the same sizes.
    #[test]
    fn matches_mkfs_fat() {
        let g = geo(100 << 20, 512, None);
        assert_eq!(
            (g.spc, g.reserved, g.fat_sectors, g.clusters),
            (1, 32, 1576, 201616)
        );
        let g = geo(300 << 20, 4096, None);
        assert_eq!(
            (g.spc, g.reserved, g.fat_sectors, g.clusters),
            (1, 32, 75, 76618)
        );
        let g = geo(300 << 20, 512, Some(64));
        assert_eq!((g.reserved, g.fat_sectors), (64, 128));
        let g = geo(40 << 30, 512, None);
        assert_eq!((g.spc, g.reserved, g.fat_sectors), (64, 64, 10240));
    }
}
