//! GUID Partition Tables, written and read without any external tool.
//!
//! In: a disk size, a sector size and an ordered list of partitions (label, type, GUID, size).
//! Out: a [`Layout`] with every partition's LBA range, written as protective MBR + primary and
//! backup GPT; and back: [`read`] parses a disk's GPT (checking both CRCs, falling back to the
//! backup header) so the booted system can find partitions by name.
//!
//! Follows docs/formats/disk-layout.md ("GPT"): 128 entries of 128 bytes, entries at
//! LBA `2 + skip`, first usable LBA = entries LBA + 16 KiB worth of sectors, 1 MiB alignment,
//! protective MBR with one 0xEE entry (boot code bytes untouched), GUIDs stored mixed-endian.

mod guid;
pub use guid::{Guid, GuidParseError, guid_from_label};

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Number of partition entries in the array.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u32 = 128;
const ARRAY_BYTES: u64 = (ENTRY_COUNT * ENTRY_SIZE) as u64;
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Partition alignment in bytes.
pub const ALIGNMENT: u64 = 1024 * 1024;

/// Well-known partition type GUIDs.
pub mod types {
    use super::Guid;
    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_str_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    /// BIOS boot partition (GRUB core.img).
    pub const BIOS_BOOT: Guid = Guid::from_str_const("21686148-6449-6E6F-744E-656564454649");
    /// Linux filesystem data.
    pub const LINUX_DATA: Guid = Guid::from_str_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Sector size not supported.
    #[error("unsupported sector size {0} (512 or 4096)")]
    SectorSize(u64),
    /// The partitions do not fit.
    #[error(
        "partition {name:?} (ends at byte {end}) does not fit the disk's usable area (ends at byte {usable_end})"
    )]
    DoesNotFit {
        /// Partition label.
        name: String,
        /// Where it would end.
        end: u64,
        /// End of the usable area.
        usable_end: u64,
    },
    /// Bad partition definition.
    #[error("partition {name:?}: {reason}")]
    BadPartition {
        /// Partition label.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Too many partitions.
    #[error("at most {ENTRY_COUNT} partitions")]
    TooMany,
    /// No valid GPT found.
    #[error("no valid GPT: {0}")]
    Invalid(String),
    /// I/O failure.
    #[error("GPT I/O: {0}")]
    Io(#[from] io::Error),
}

/// A partition to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Partition name (UTF-16LE on disk, at most 36 code units).
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub guid: Guid,
    /// Size in bytes; must be a multiple of the sector size, or [`REST`].
    pub size: u64,
    /// Attribute bits (bit 2 = legacy BIOS bootable).
    pub attributes: u64,
}

/// The size of a last partition that takes everything up to the last usable LBA (Talos's
/// EPHEMERAL in pre-1.8 images).
pub const REST: u64 = u64::MAX;

/// A placed partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number.
    pub number: u32,
    /// Name.
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
}

impl Partition {
    /// Byte offset of the partition for a sector size.
    pub fn offset(&self, sector: u64) -> u64 {
        self.first_lba * sector
    }
    /// Size in bytes for a sector size.
    pub fn size(&self, sector: u64) -> u64 {
        (self.last_lba + 1 - self.first_lba) * sector
    }
}

/// A complete partition table for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Logical sector size.
    pub sector_size: u64,
    /// Number of sectors on the disk.
    pub total_lbas: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// LBA of the primary entry array.
    pub entries_lba: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// Partitions, in table order.
    pub partitions: Vec<Partition>,
}

fn array_lbas(sector: u64) -> u64 {
    ARRAY_BYTES.div_ceil(sector)
}

/// Places partitions in order, each start rounded up to [`ALIGNMENT`].
///
/// `skip_lbas` moves the primary entry array (and so every partition) down, leaving room for
/// firmware such as U-Boot right after the GPT header.
pub fn plan(
    disk_size: u64,
    sector_size: u64,
    skip_lbas: u64,
    disk_guid: Guid,
    specs: &[PartitionSpec],
) -> Result<Layout, GptError> {
    if sector_size != 512 && sector_size != 4096 {
        return Err(GptError::SectorSize(sector_size));
    }
    if specs.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooMany);
    }
    let total_lbas = disk_size / sector_size;
    let entries_lba = 2 + skip_lbas;
    let first_usable = entries_lba + array_lbas(sector_size);
    // backup header at the last LBA, backup array just before it
    let last_usable = total_lbas
        .checked_sub(2 + array_lbas(sector_size))
        .filter(|l| *l >= first_usable)
        .ok_or_else(|| GptError::DoesNotFit {
            name: "(GPT)".into(),
            end: (first_usable + array_lbas(sector_size) + 1) * sector_size,
            usable_end: disk_size,
        })?;
    let align = (ALIGNMENT / sector_size).max(1);
    let mut next = first_usable;
    let mut partitions = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if s.name.encode_utf16().count() > 36 {
            return Err(GptError::BadPartition {
                name: s.name.clone(),
                reason: "name longer than 36 UTF-16 code units",
            });
        }
        let rest = s.size == REST;
        if rest && i + 1 != specs.len() {
            return Err(GptError::BadPartition {
                name: s.name.clone(),
                reason: "only the last partition can take the rest of the disk",
            });
        }
        if !rest && (s.size == 0 || !s.size.is_multiple_of(sector_size)) {
            return Err(GptError::BadPartition {
                name: s.name.clone(),
                reason: "size must be a non-zero multiple of the sector size",
            });
        }
        let first = next.div_ceil(align) * align;
        let last = if rest {
            // at least one alignment unit must be left for it
            (last_usable + 1).max(first + align) - 1
        } else {
            first.saturating_add(s.size / sector_size - 1)
        };
        if last > last_usable {
            return Err(GptError::DoesNotFit {
                name: s.name.clone(),
                end: (last + 1) * sector_size,
                usable_end: (last_usable + 1) * sector_size,
            });
        }
        partitions.push(Partition {
            number: i as u32 + 1,
            name: s.name.clone(),
            type_guid: s.type_guid,
            guid: s.guid,
            first_lba: first,
            last_lba: last,
            attributes: s.attributes,
        });
        next = last + 1;
    }
    Ok(Layout {
        sector_size,
        total_lbas,
        disk_guid,
        entries_lba,
        first_usable,
        last_usable,
        partitions,
    })
}

impl Layout {
    /// Finds a partition by name.
    pub fn by_name(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// The 128-entry partition array.
    pub fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; ARRAY_BYTES as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.to_mixed_endian());
            e[16..32].copy_from_slice(&p.guid.to_mixed_endian());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    fn header(&self, primary: bool, array_crc: u32) -> Vec<u8> {
        let last = self.total_lbas - 1;
        let (current, backup, entries) = if primary {
            (1, last, self.entries_lba)
        } else {
            (last, 1, last - array_lbas(self.sector_size))
        };
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_mixed_endian());
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The 66 bytes at 446..512 of LBA 0: one protective 0xEE entry and the 55 AA signature.
    /// Bytes 0..446 (boot code) are left to the caller.
    pub fn protective_mbr_tail(&self) -> [u8; 66] {
        let mut t = [0u8; 66];
        let e = &mut t[0..16];
        e[0] = 0x00; // not bootable
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let len = (self.total_lbas - 1).min(u64::from(u32::MAX)) as u32;
        e[12..16].copy_from_slice(&len.to_le_bytes());
        t[64] = 0x55;
        t[65] = 0xAA;
        t
    }

    /// Writes the protective MBR tail, both headers and both entry arrays. Nothing else of the
    /// disk is touched, so boot code in bytes 0..446 and data in the gap after the header
    /// (e.g. U-Boot when `skip_lbas` is used) survive.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), GptError> {
        let s = self.sector_size;
        let array = self.entry_array();
        let crc = crc32fast::hash(&array);
        w.seek(SeekFrom::Start(446))?;
        w.write_all(&self.protective_mbr_tail())?;
        w.seek(SeekFrom::Start(s))?;
        w.write_all(&self.header(true, crc))?;
        w.seek(SeekFrom::Start(self.entries_lba * s))?;
        w.write_all(&array)?;
        let last = self.total_lbas - 1;
        w.seek(SeekFrom::Start((last - array_lbas(s)) * s))?;
        w.write_all(&array)?;
        w.seek(SeekFrom::Start(last * s))?;
        w.write_all(&self.header(false, crc))?;
        Ok(())
    }
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}
fn le32(b: &[u8], o: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(x)
}

fn parse_header(h: &[u8], lba: u64) -> Result<(), String> {
    if &h[0..8] != SIGNATURE {
        return Err(format!("no signature at LBA {lba}"));
    }
    let size = le32(h, 12) as usize;
    if !(HEADER_SIZE as usize..=h.len()).contains(&size) {
        return Err(format!("header size {size} at LBA {lba}"));
    }
    let mut c = h[..size].to_vec();
    c[16..20].fill(0);
    if crc32fast::hash(&c) != le32(h, 16) {
        return Err(format!("header CRC mismatch at LBA {lba}"));
    }
    if le64(h, 24) != lba {
        return Err(format!("header at LBA {lba} claims LBA {}", le64(h, 24)));
    }
    Ok(())
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    r.seek(SeekFrom::Start(off))?;
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_with_header<R: Read + Seek>(
    r: &mut R,
    sector: u64,
    total_lbas: u64,
    lba: u64,
) -> Result<Layout, String> {
    let h = read_at(r, lba * sector, sector as usize).map_err(|e| e.to_string())?;
    parse_header(&h, lba)?;
    let entries_lba = le64(&h, 72);
    let count = le32(&h, 80);
    let esize = le32(&h, 84);
    if !(128..=4096).contains(&esize) || count > 4096 || !esize.is_multiple_of(8) {
        return Err(format!("entry geometry {count}×{esize}"));
    }
    // the array must lie on the disk (a crafted LBA must not wrap the offset around)
    let array_bytes = u64::from(count) * u64::from(esize);
    let array_off = entries_lba
        .checked_mul(sector)
        .filter(|off| entries_lba >= 2 && off.saturating_add(array_bytes) <= total_lbas * sector)
        .ok_or_else(|| format!("entry array at LBA {entries_lba} is outside the disk"))?;
    let array = read_at(r, array_off, array_bytes as usize).map_err(|e| e.to_string())?;
    if crc32fast::hash(&array) != le32(&h, 88) {
        return Err(format!("entry array CRC mismatch (header at LBA {lba})"));
    }
    let mut partitions = Vec::new();
    for i in 0..count as usize {
        let e = &array[i * esize as usize..(i + 1) * esize as usize];
        let type_guid = Guid::from_mixed_endian(&e[0..16]);
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
        // every placed partition must be a non-empty range on the disk, so that its offset
        // and size can be computed
        if first_lba > last_lba || last_lba >= total_lbas {
            return Err(format!(
                "partition {}: LBAs {first_lba}..{last_lba} are not on the disk",
                i + 1
            ));
        }
        partitions.push(Partition {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&units),
            type_guid,
            guid: Guid::from_mixed_endian(&e[16..32]),
            first_lba,
            last_lba,
            attributes: le64(e, 48),
        });
    }
    let primary_entries = if lba == 1 { entries_lba } else { 2 };
    Ok(Layout {
        sector_size: sector,
        total_lbas,
        disk_guid: Guid::from_mixed_endian(&h[56..72]),
        entries_lba: primary_entries,
        first_usable: le64(&h, 40),
        last_usable: le64(&h, 48),
        partitions,
    })
}

/// Reads the GPT of a disk of `disk_size` bytes: the primary header, or the backup header at
/// the last LBA when the primary one (or its entry array) is damaged.
pub fn read<R: Read + Seek>(
    r: &mut R,
    sector_size: u64,
    disk_size: u64,
) -> Result<Layout, GptError> {
    if sector_size != 512 && sector_size != 4096 {
        return Err(GptError::SectorSize(sector_size));
    }
    let total = disk_size / sector_size;
    if total < 3 {
        return Err(GptError::Invalid("disk too small".into()));
    }
    match read_with_header(r, sector_size, total, 1) {
        Ok(l) => Ok(l),
        Err(primary) => read_with_header(r, sector_size, total, total - 1)
            .map_err(|backup| GptError::Invalid(format!("primary: {primary}; backup: {backup}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn specs() -> Vec<PartitionSpec> {
        [
            ("EFI", types::ESP, 2101),
            ("BIOS", types::BIOS_BOOT, 1),
            ("BOOT", types::LINUX_DATA, 2000),
            ("META", types::LINUX_DATA, 1),
        ]
        .into_iter()
        .map(|(n, t, mib)| PartitionSpec {
            name: n.into(),
            type_guid: t,
            guid: guid_from_label(n),
            size: mib * MIB,
            attributes: if n == "BIOS" { 1 << 2 } else { 0 },
        })
        .collect()
    }

    #[test]
    fn dual_boot_lbas_match_spec_example() {
        let l = plan(
            4_453_302_272,
            512,
            0,
            guid_from_label("talos-image-disk"),
            &specs(),
        )
        .unwrap();
        let r: Vec<(u64, u64)> = l
            .partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect();
        assert_eq!(
            r,
            vec![
                (2048, 4304895),
                (4304896, 4306943),
                (4306944, 8402943),
                (8402944, 8404991)
            ]
        );
        assert_eq!(l.first_usable, 34);
        assert_eq!(l.last_usable, 4_453_302_272 / 512 - 34);
    }

    #[test]
    fn sector_4k_and_skip() {
        let l = plan(3000 * MIB, 4096, 0, Guid::NIL, &specs()[..1]).unwrap();
        assert_eq!(l.first_usable, 6);
        assert_eq!(l.partitions[0].first_lba, 256);
        let l = plan(3000 * MIB, 512, 20480, Guid::NIL, &specs()[..1]).unwrap();
        assert_eq!(l.entries_lba, 20482);
        assert_eq!(l.partitions[0].first_lba, 22528);
    }

    #[test]
    fn rest_takes_everything_up_to_the_last_usable_lba() {
        let mut s = specs();
        let data = |name: &str, size| PartitionSpec {
            name: name.into(),
            type_guid: types::LINUX_DATA,
            guid: guid_from_label(name),
            size,
            attributes: 0,
        };
        s.push(data("STATE", 100 * MIB));
        s.push(data("EPHEMERAL", REST));
        for sector in [512, 4096] {
            let l = plan(8 << 30, sector, 0, Guid::NIL, &s).unwrap();
            let e = &l.partitions[5];
            assert_eq!(e.last_lba, l.last_usable);
            assert_eq!(e.first_lba, l.partitions[4].last_lba + 1);
            assert_eq!(l.partitions[4].size(sector), 100 * MIB);
        }
        // no room left for it: named
        let e = plan(4205 * MIB, 512, 0, Guid::NIL, &s).unwrap_err();
        assert!(e.to_string().contains("\"EPHEMERAL\""), "{e}");
        // only last
        s.swap(4, 5);
        let e = plan(8 << 30, 512, 0, Guid::NIL, &s).unwrap_err();
        assert!(e.to_string().contains("rest of the disk"), "{e}");
    }

    /// Rewrites the CRCs of the header at `lba` (and of its array).
    fn fix_crcs(disk: &mut [u8], lba: usize) {
        let h = lba * 512;
        let arr = u64::from_le_bytes(disk[h + 72..h + 80].try_into().unwrap());
        if let Some(arr) = arr.checked_mul(512).map(|a| a as usize)
            && arr.saturating_add(16384) <= disk.len()
        {
            let crc = crc32fast::hash(&disk[arr..arr + 16384]);
            disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
        }
        disk[h + 16..h + 20].fill(0);
        let crc = crc32fast::hash(&disk[h..h + 92]);
        disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn crafted_tables_are_refused_not_wrapped() {
        // found by the gpt fuzz target: an entry array LBA whose byte offset overflows
        let size = 8 * MIB;
        let l = plan(size, 512, 0, Guid::NIL, &specs()[1..2]).unwrap();
        let mut c = io::Cursor::new(vec![0u8; size as usize]);
        l.write(&mut c).unwrap();
        let good = c.into_inner();
        let last = (size / 512 - 1) as usize;
        let mut d = good.clone();
        d[512 + 72..512 + 80].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
        fix_crcs(&mut d, 1);
        // the primary is refused, the backup used
        let r = read(&mut io::Cursor::new(&d), 512, size).unwrap();
        assert_eq!(r.partitions, l.partitions);
        d[last * 512 + 72..last * 512 + 80].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
        fix_crcs(&mut d, last);
        let e = read(&mut io::Cursor::new(&d), 512, size)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the disk"), "{e}");
        // an entry ending before it starts, or past the disk, in both copies
        for (first, end) in [(4096u64, 4095u64), (2048, size / 512)] {
            let mut d = good.clone();
            for (lba, arr) in [(1, 2), (last, last - 32)] {
                let e = arr * 512;
                d[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
                d[e + 40..e + 48].copy_from_slice(&end.to_le_bytes());
                fix_crcs(&mut d, lba);
            }
            let e = read(&mut io::Cursor::new(&d), 512, size)
                .unwrap_err()
                .to_string();
            assert!(e.contains("are not on the disk"), "{e}");
        }
    }

    #[test]
    fn too_small_and_bad_names() {
        let e = plan(1000 * MIB, 512, 0, Guid::NIL, &specs()).unwrap_err();
        assert!(e.to_string().contains("\"EFI\""), "{e}");
        let mut s = specs();
        s[0].name = "x".repeat(37);
        assert!(plan(8000 * MIB, 512, 0, Guid::NIL, &s).is_err());
    }

    #[test]
    fn write_then_read_back_and_backup_fallback() {
        let size = 4_453_302_272u64;
        let l = plan(size, 512, 0, guid_from_label("talos-image-disk"), &specs()).unwrap();
        let mut disk = tempfile::tempfile().unwrap();
        disk.set_len(size).unwrap();
        l.write(&mut disk).unwrap();
        let mut mbr = [0u8; 512];
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.read_exact(&mut mbr).unwrap();
        assert_eq!(&mbr[510..512], &[0x55, 0xAA]);
        assert_eq!(mbr[450], 0xEE);
        let r = read(&mut disk, 512, size).unwrap();
        assert_eq!(r, l);
        assert_eq!(r.by_name("META").unwrap().first_lba, 8402944);
        // damage the primary header: the backup is used
        disk.seek(SeekFrom::Start(512 + 20)).unwrap();
        disk.write_all(&[0x5a]).unwrap();
        let r = read(&mut disk, 512, size).unwrap();
        assert_eq!(r.partitions, l.partitions);
    }
}
