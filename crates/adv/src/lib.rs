//! The Talos ADV ("META") format: a small key-value store in a 1 MiB raw partition.
//!
//! In: tag/value pairs (tags `u8`, values bytes). Out: the partition bytes, and back.
//! Follows docs/formats/meta.md:
//!
//! - two copies of a 256 KiB block, copy A at offset 0 and copy B at offset 256 KiB;
//! - each copy is big-endian: `u32 magic1 = 0x5A4B3C2D`, then `{u32 tag; u32 size; value}`
//!   records (tag 0 or zero padding ends them), then zero padding, then a SHA-256 over the whole
//!   block (with the hash field zeroed) at `len - 36`, then `u32 magic2 = 0xA5B4C3D2` at `len - 4`;
//! - the last 1024 bytes of the partition belong to the legacy syslinux ADV, which this module
//!   never writes (a fresh partition leaves them zero, a rewrite keeps them).
//!
//! Unlike Talos (Go map order) tags are always written sorted, so any set of values encodes to
//! one byte sequence.

pub mod env;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Size of the META partition.
pub const PARTITION_SIZE: usize = 1024 * 1024;
/// Size of one copy of the Talos ADV.
pub const COPY_SIZE: usize = 256 * 1024;
/// Offset of copy B inside the partition.
pub const COPY_B_OFFSET: usize = COPY_SIZE;
/// Magic at the start of each copy.
pub const MAGIC1: u32 = 0x5A4B_3C2D;
/// Magic at the end of each copy.
pub const MAGIC2: u32 = 0xA5B4_C3D2;
/// Capacity for records: Σ(8 + len(value)) must not exceed this.
pub const DATA_CAPACITY: usize = COPY_SIZE - 40;
/// Size of the legacy syslinux ADV area at the end of the partition.
pub const LEGACY_AREA: usize = 1024;

const HASH_OFFSET: usize = COPY_SIZE - 36;
const MAGIC2_OFFSET: usize = COPY_SIZE - 4;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvError {
    /// The values do not fit into one 256 KiB copy.
    #[error(
        "META values need {needed} bytes but one ADV copy holds {capacity} (tag 0x{tag:02x} does not fit)"
    )]
    TooLarge {
        /// The tag whose insertion overflowed.
        tag: u8,
        /// Bytes the records would need.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
    /// Tag 0 ends the record list of a copy: it cannot hold a value.
    #[error("META key 0x00 is reserved (it ends the list of values)")]
    ReservedTag,
    /// A buffer of the wrong size was given.
    #[error("META partition buffer must be {expected} bytes, got {got}")]
    BadLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// Why one copy was rejected while reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// First magic wrong.
    #[error("bad magic1 {0:#010x}")]
    Magic1(u32),
    /// Last magic wrong.
    #[error("bad magic2 {0:#010x}")]
    Magic2(u32),
    /// SHA-256 mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// A record runs past the data area or has a tag above 0xff.
    #[error("malformed record at offset {0}")]
    Record(usize),
}

/// Where the values were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Copy A was valid.
    CopyA,
    /// Copy A was invalid (reason given) and copy B was used.
    CopyB(CopyError),
    /// Neither copy was valid: the store is empty (Talos tolerates this, e.g. a zeroed partition).
    Empty {
        /// Why copy A was rejected.
        a: CopyError,
        /// Why copy B was rejected.
        b: CopyError,
    },
}

/// The key-value contents of a META partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adv {
    tags: BTreeMap<u8, Vec<u8>>,
}

impl Adv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Value of `tag`, if set.
    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.tags.get(&tag).map(Vec::as_slice)
    }

    /// Sets `tag` (replacing an earlier value), refusing values that would overflow one copy.
    pub fn set(&mut self, tag: u8, value: &[u8]) -> Result<(), AdvError> {
        if tag == 0 {
            return Err(AdvError::ReservedTag);
        }
        let old = self.tags.get(&tag).map_or(0, |v| 8 + v.len());
        let needed = self.used() - old + 8 + value.len();
        if needed > DATA_CAPACITY {
            return Err(AdvError::TooLarge {
                tag,
                needed,
                capacity: DATA_CAPACITY,
            });
        }
        self.tags.insert(tag, value.to_vec());
        Ok(())
    }

    /// Removes `tag`; returns whether it was present.
    pub fn delete(&mut self, tag: u8) -> bool {
        self.tags.remove(&tag).is_some()
    }

    /// All tags and values, sorted by tag.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.tags.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether no tag is set.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Bytes the records occupy in one copy.
    pub fn used(&self) -> usize {
        self.tags.values().map(|v| 8 + v.len()).sum()
    }

    /// Encodes one 256 KiB copy.
    pub fn encode_copy(&self) -> Vec<u8> {
        let mut buf = vec![0u8; COPY_SIZE];
        buf[0..4].copy_from_slice(&MAGIC1.to_be_bytes());
        let mut off = 4;
        for (tag, value) in &self.tags {
            buf[off..off + 4].copy_from_slice(&u32::from(*tag).to_be_bytes());
            // Values are bounded by DATA_CAPACITY in `set`, so the length fits in u32.
            let len = value.len() as u32;
            buf[off + 4..off + 8].copy_from_slice(&len.to_be_bytes());
            buf[off + 8..off + 8 + value.len()].copy_from_slice(value);
            off += 8 + value.len();
        }
        buf[MAGIC2_OFFSET..].copy_from_slice(&MAGIC2.to_be_bytes());
        let hash = Sha256::digest(&buf);
        buf[HASH_OFFSET..HASH_OFFSET + 32].copy_from_slice(&hash);
        buf
    }

    /// Writes copy A and copy B into a partition-sized buffer, leaving everything else (in
    /// particular the legacy syslinux area at the end) as it was.
    pub fn write_into(&self, partition: &mut [u8]) -> Result<(), AdvError> {
        if partition.len() != PARTITION_SIZE {
            return Err(AdvError::BadLength {
                expected: PARTITION_SIZE,
                got: partition.len(),
            });
        }
        let copy = self.encode_copy();
        partition[..COPY_SIZE].copy_from_slice(&copy);
        partition[COPY_B_OFFSET..COPY_B_OFFSET + COPY_SIZE].copy_from_slice(&copy);
        Ok(())
    }

    /// A fresh partition image (zeroes elsewhere) holding these values.
    pub fn to_partition(&self) -> Vec<u8> {
        let mut p = vec![0u8; PARTITION_SIZE];
        let copy = self.encode_copy();
        p[..COPY_SIZE].copy_from_slice(&copy);
        p[COPY_B_OFFSET..COPY_B_OFFSET + COPY_SIZE].copy_from_slice(&copy);
        p
    }

    /// Decodes one 256 KiB copy.
    pub fn decode_copy(buf: &[u8]) -> Result<Self, CopyError> {
        let be32 = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        if buf.len() != COPY_SIZE {
            return Err(CopyError::Record(0));
        }
        let m1 = be32(0);
        if m1 != MAGIC1 {
            return Err(CopyError::Magic1(m1));
        }
        let m2 = be32(MAGIC2_OFFSET);
        if m2 != MAGIC2 {
            return Err(CopyError::Magic2(m2));
        }
        let mut h = Sha256::new();
        h.update(&buf[..HASH_OFFSET]);
        h.update([0u8; 32]);
        h.update(&buf[HASH_OFFSET + 32..]);
        if h.finalize().as_slice() != &buf[HASH_OFFSET..HASH_OFFSET + 32] {
            return Err(CopyError::Checksum);
        }
        let end = HASH_OFFSET;
        let mut tags = BTreeMap::new();
        let mut off = 4;
        while off + 8 <= end {
            let tag = be32(off);
            if tag == 0 {
                break;
            }
            let size = be32(off + 4) as usize;
            let start = off + 8;
            if tag > 0xff || size > end - start {
                return Err(CopyError::Record(off));
            }
            tags.insert(tag as u8, buf[start..start + size].to_vec());
            off = start + size;
        }
        Ok(Self { tags })
    }

    /// Reads a whole partition: copy A, else copy B, else an empty store (as Talos does).
    pub fn from_partition(buf: &[u8]) -> Result<(Self, Source), AdvError> {
        if buf.len() < 2 * COPY_SIZE {
            return Err(AdvError::BadLength {
                expected: PARTITION_SIZE,
                got: buf.len(),
            });
        }
        let a = match Self::decode_copy(&buf[..COPY_SIZE]) {
            Ok(adv) => return Ok((adv, Source::CopyA)),
            Err(e) => e,
        };
        match Self::decode_copy(&buf[COPY_B_OFFSET..COPY_B_OFFSET + COPY_SIZE]) {
            Ok(adv) => Ok((adv, Source::CopyB(a))),
            Err(b) => Ok((Self::new(), Source::Empty { a, b })),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Adv {
        let mut a = Adv::new();
        a.set(0x0a, b"{\"hostnames\":[]}").unwrap();
        a.set(0x0c, b"user").unwrap();
        a
    }

    #[test]
    fn layout_magics_big_endian_and_hash_position() {
        let p = sample().to_partition();
        assert_eq!(p.len(), 1_048_576);
        assert_eq!(&p[0..4], &[0x5A, 0x4B, 0x3C, 0x2D]);
        // first record: tag 0x0a, big-endian u32 tag and size
        assert_eq!(&p[4..8], &[0, 0, 0, 0x0a]);
        assert_eq!(&p[8..12], &[0, 0, 0, 16]);
        assert_eq!(&p[12..28], b"{\"hostnames\":[]}");
        assert_eq!(&p[28..32], &[0, 0, 0, 0x0c]);
        assert_eq!(&p[COPY_SIZE - 4..COPY_SIZE], &[0xA5, 0xB4, 0xC3, 0xD2]);
        // SHA-256 over the copy with the hash field zeroed, at len - 0x24
        let mut z = p[..COPY_SIZE].to_vec();
        z[COPY_SIZE - 36..COPY_SIZE - 4].fill(0);
        assert_eq!(
            &p[COPY_SIZE - 36..COPY_SIZE - 4],
            Sha256::digest(&z).as_slice()
        );
        // copy B identical, legacy area and the rest zero
        assert_eq!(&p[..COPY_SIZE], &p[COPY_SIZE..2 * COPY_SIZE]);
        assert!(p[2 * COPY_SIZE..].iter().all(|b| *b == 0));
    }

    #[test]
    fn tags_sorted_regardless_of_insert_order() {
        let mut a = Adv::new();
        a.set(0x0c, b"x").unwrap();
        a.set(0x0a, b"y").unwrap();
        let mut b = Adv::new();
        b.set(0x0a, b"y").unwrap();
        b.set(0x0c, b"x").unwrap();
        assert_eq!(a.to_partition(), b.to_partition());
        assert_eq!(&a.encode_copy()[4..8], &[0, 0, 0, 0x0a]);
    }

    #[test]
    fn roundtrip_copy_a() {
        let s = sample();
        let (r, src) = Adv::from_partition(&s.to_partition()).unwrap();
        assert_eq!(src, Source::CopyA);
        assert_eq!(r, s);
        assert_eq!(r.get(0x0c), Some(&b"user"[..]));
    }

    #[test]
    fn falls_back_to_copy_b() {
        let s = sample();
        let mut p = s.to_partition();
        p[20] ^= 0xff; // corrupt a value byte in copy A
        let (r, src) = Adv::from_partition(&p).unwrap();
        assert_eq!(src, Source::CopyB(CopyError::Checksum));
        assert_eq!(r, s);
        let mut p = s.to_partition();
        p[0] = 0; // magic
        assert!(matches!(
            Adv::from_partition(&p).unwrap().1,
            Source::CopyB(CopyError::Magic1(_))
        ));
    }

    #[test]
    fn both_bad_is_empty() {
        let p = vec![0u8; PARTITION_SIZE];
        let (r, src) = Adv::from_partition(&p).unwrap();
        assert!(r.is_empty());
        assert!(matches!(src, Source::Empty { .. }));
    }

    #[test]
    fn capacity_enforced() {
        let mut a = Adv::new();
        a.set(1, &vec![7u8; DATA_CAPACITY - 8]).unwrap();
        assert_eq!(a.used(), DATA_CAPACITY);
        assert!(matches!(
            a.set(2, b""),
            Err(AdvError::TooLarge { tag: 2, .. })
        ));
        // replacing the value with one of the same size is fine
        a.set(1, &vec![8u8; DATA_CAPACITY - 8]).unwrap();
        let mut b = Adv::new();
        assert_eq!(b.set(0, b"x"), Err(AdvError::ReservedTag));
        let e = b.set(0x0a, &vec![0u8; 256 * 1024]).unwrap_err();
        assert!(e.to_string().contains("0x0a"), "{e}");
        // full copy roundtrips
        let (r, _) = Adv::from_partition(&a.to_partition()).unwrap();
        assert_eq!(r, a);
    }

    #[test]
    fn malformed_record_rejected_even_with_valid_hash() {
        let mut copy = Adv::new().encode_copy();
        copy[4..8].copy_from_slice(&0x1ffu32.to_be_bytes());
        copy[8..12].copy_from_slice(&1u32.to_be_bytes());
        copy[COPY_SIZE - 36..COPY_SIZE - 4].fill(0);
        let h = Sha256::digest(&copy);
        copy[COPY_SIZE - 36..COPY_SIZE - 4].copy_from_slice(&h);
        assert_eq!(Adv::decode_copy(&copy), Err(CopyError::Record(4)));
    }

    #[test]
    fn write_into_preserves_legacy_area() {
        let mut p = vec![0u8; PARTITION_SIZE];
        p[PARTITION_SIZE - LEGACY_AREA..].fill(0x5a);
        sample().write_into(&mut p).unwrap();
        assert!(p[PARTITION_SIZE - LEGACY_AREA..].iter().all(|b| *b == 0x5a));
        assert!(Adv::new().write_into(&mut [0u8; 10]).is_err());
    }
}
