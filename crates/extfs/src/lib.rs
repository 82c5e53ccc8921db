//! A deterministic ext4 formatter: writes an empty, journaled ext4 filesystem (a root
//! directory and `lost+found`) into a byte range of a file or block device, by offset.
//!
//! In: the range, a label, a UUID, a timestamp, and whether the range already reads as zeros.
//! Out: the filesystem, identical bytes for identical inputs. The layout follows the on-disk
//! format of Linux's ext4 (docs/formats/extfs.md): 4 KiB blocks, 32768 blocks per group,
//! 256-byte inodes (one per 16 KiB), superblock backups in groups 0, 1 and the powers of 3, 5
//! and 7 (`sparse_super`), a 32-byte group descriptor table without `64bit`, `filetype`,
//! `extents`, `dir_index`, `ext_attr`, `large_file`, `huge_file`, `dir_nlink`, `extra_isize`,
//! and an internal jbd2 journal in inode 8. Without `metadata_csum` or `uninit_bg`, every
//! bitmap is written whole; inode tables are left to read as zeros (`known_zero`) or zeroed.

use sha2::{Digest, Sha256};
use std::io::{self, Seek, SeekFrom, Write};

/// Block size.
pub const BLOCK: u64 = 4096;
const BLOCKS_PER_GROUP: u64 = 32768;
const INODE_SIZE: u64 = 256;
const BYTES_PER_INODE: u64 = 16384;
const DESC_SIZE: u64 = 32;
const FIRST_INO: u64 = 11;
const ROOT_INO: u64 = 2;
const JOURNAL_INO: u64 = 8;
const LOST_FOUND_INO: u64 = 11;
/// The smallest filesystem written (a journal of 1024 blocks and its metadata fit).
pub const MIN_SIZE: u64 = 16 << 20;
/// The largest: block numbers are 32-bit without the `64bit` feature.
pub const MAX_SIZE: u64 = (u32::MAX as u64) * BLOCK;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const EXTENTS_FL: u32 = 0x8_0000;
const EXTRA_ISIZE: u16 = 32;

/// Errors of the formatter.
#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    /// The range cannot hold a filesystem.
    #[error("{0} bytes are too few for an ext4 filesystem (at least {MIN_SIZE})")]
    TooSmall(u64),
    /// The range is larger than 32-bit block numbers reach.
    #[error("{0} bytes are more than an ext4 filesystem without 64bit holds ({MAX_SIZE})")]
    TooLarge(u64),
    /// The label does not fit or is not printable.
    #[error("ext4 label {0:?}: at most 16 printable bytes")]
    Label(String),
    /// I/O on the target.
    #[error("writing the ext4 filesystem: {0}")]
    Io(#[from] io::Error),
}

/// What to write.
#[derive(Debug, Clone)]
pub struct Options {
    /// Volume label (at most 16 bytes), e.g. `EPHEMERAL`.
    pub label: String,
    /// Filesystem UUID (also the journal's).
    pub uuid: [u8; 16],
    /// Creation and check time (SOURCE_DATE_EPOCH), seconds.
    pub epoch: u32,
    /// Whether the range already reads as zeros (a fresh sparse file): inode tables and the
    /// journal are then not written.
    pub known_zero: bool,
}

impl Options {
    /// Options with a UUID derived from `label` (the same label gives the same UUID, as GPT
    /// GUIDs are derived here).
    pub fn from_label(label: &str, epoch: u32, known_zero: bool) -> Self {
        let d = Sha256::digest(format!("extfs uuid:{label}").as_bytes());
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&d[..16]);
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        Self {
            label: label.to_string(),
            uuid,
            epoch,
            known_zero,
        }
    }
}

/// The filesystem's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks in the filesystem (the range's tail past the last whole group may be unused).
    pub blocks: u64,
    /// Block groups.
    pub groups: u64,
    /// Inodes per group.
    pub inodes_per_group: u64,
    /// Blocks of one group's inode table.
    pub itable_blocks: u64,
    /// Blocks of the group descriptor table.
    pub gdt_blocks: u64,
    /// Journal blocks.
    pub journal_blocks: u64,
}

fn is_power_of(mut n: u64, b: u64) -> bool {
    while n > 1 && n.is_multiple_of(b) {
        n /= b;
    }
    n == 1
}

/// Whether group `g` carries a superblock and descriptor table copy (`sparse_super`).
pub fn has_super(g: u64) -> bool {
    g == 0 || is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)
}

impl Geometry {
    /// The geometry of a filesystem filling `size` bytes.
    pub fn compute(size: u64) -> Result<Self, ExtError> {
        if size < MIN_SIZE {
            return Err(ExtError::TooSmall(size));
        }
        if size > MAX_SIZE {
            return Err(ExtError::TooLarge(size));
        }
        let mut blocks = size / BLOCK;
        let mut groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let mut g = Self {
            blocks,
            groups,
            inodes_per_group: 0,
            itable_blocks: 0,
            gdt_blocks: 0,
            journal_blocks: 0,
        };
        g.fill();
        // a last group too small for its own metadata and some data is dropped (as mke2fs does)
        let last = g.group_blocks(groups - 1);
        if groups > 1 && last < g.overhead(groups - 1) + 64 {
            blocks -= last;
            groups -= 1;
            g.blocks = blocks;
            g.groups = groups;
            g.fill();
        }
        let room = g.group_blocks(0) - g.overhead(0) - 2;
        if g.journal_blocks > room {
            return Err(ExtError::TooSmall(size));
        }
        Ok(g)
    }

    fn fill(&mut self) {
        let per_block = BLOCK / INODE_SIZE;
        let want = (self.blocks * BLOCK / BYTES_PER_INODE).max(FIRST_INO + 1);
        let ipg = want
            .div_ceil(self.groups)
            .div_ceil(per_block)
            .saturating_mul(per_block)
            .min(BLOCKS_PER_GROUP);
        self.inodes_per_group = ipg;
        self.itable_blocks = ipg / per_block;
        self.gdt_blocks = (self.groups * DESC_SIZE).div_ceil(BLOCK);
        self.journal_blocks = match self.blocks {
            0..32_768 => 1024,
            32_768..262_144 => 4096,
            262_144..524_288 => 8192,
            _ => 16_384,
        };
    }

    /// Blocks in group `g`.
    pub fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP)
    }

    /// Metadata blocks at the start of group `g`.
    pub fn overhead(&self, g: u64) -> u64 {
        let sb = if has_super(g) { 1 + self.gdt_blocks } else { 0 };
        sb + 2 + self.itable_blocks
    }

    /// First block of group `g`'s block bitmap (then the inode bitmap, then the inode table).
    fn bitmap(&self, g: u64) -> u64 {
        let sb = if has_super(g) { 1 + self.gdt_blocks } else { 0 };
        g * BLOCKS_PER_GROUP + sb
    }

    /// The root directory's block, `lost+found`'s, then the journal's first.
    fn root_block(&self) -> u64 {
        self.overhead(0)
    }

    fn used_blocks(&self, g: u64) -> u64 {
        self.overhead(g) + if g == 0 { 2 + self.journal_blocks } else { 0 }
    }

    fn free_blocks(&self) -> u64 {
        (0..self.groups)
            .map(|g| self.group_blocks(g) - self.used_blocks(g))
            .sum()
    }

    fn inodes(&self) -> u64 {
        self.inodes_per_group * self.groups
    }
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn lo(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

/// The inode's `i_block`: an extent header and one extent of `len` blocks at `start`.
fn extent_block(start: u64, len: u64) -> [u8; 60] {
    let mut b = [0u8; 60];
    put16(&mut b, 0, 0xF30A);
    put16(&mut b, 2, 1);
    put16(&mut b, 4, 4);
    put16(&mut b, 6, 0);
    put32(&mut b, 12, 0);
    put16(&mut b, 16, len as u16);
    put16(&mut b, 18, (start >> 32) as u16);
    put32(&mut b, 20, lo(start));
    b
}

/// One inode with a single extent.
fn inode(mode: u16, links: u16, size: u64, start: u64, len: u64, epoch: u32) -> [u8; 256] {
    let mut i = [0u8; 256];
    put16(&mut i, 0x00, mode);
    put32(&mut i, 0x04, lo(size));
    put32(&mut i, 0x08, epoch);
    put32(&mut i, 0x0C, epoch);
    put32(&mut i, 0x10, epoch);
    put16(&mut i, 0x1A, links);
    put32(&mut i, 0x1C, lo(len * BLOCK / 512));
    put32(&mut i, 0x20, EXTENTS_FL);
    i[0x28..0x28 + 60].copy_from_slice(&extent_block(start, len));
    put32(&mut i, 0x6C, (size >> 32) as u32);
    put16(&mut i, 0x80, EXTRA_ISIZE);
    put32(&mut i, 0x90, epoch);
    i
}

/// A directory entry with a file type (`filetype`).
fn dirent(b: &mut [u8], off: usize, ino: u64, rec_len: u16, name: &str) {
    put32(b, off, lo(ino));
    put16(b, off + 4, rec_len);
    b[off + 6] = name.len() as u8;
    b[off + 7] = 2;
    b[off + 8..off + 8 + name.len()].copy_from_slice(name.as_bytes());
}

struct Fs<'a> {
    g: Geometry,
    o: &'a Options,
    label: [u8; 16],
}

impl Fs<'_> {
    fn journal_start(&self) -> u64 {
        self.g.root_block() + 2
    }

    fn journal_inode(&self) -> [u8; 256] {
        let j = self.g.journal_blocks;
        inode(
            0o100_600,
            1,
            j * BLOCK,
            self.journal_start(),
            j,
            self.o.epoch,
        )
    }

    /// The superblock (1024 bytes) as group `group` carries it.
    fn superblock(&self, group: u64) -> Vec<u8> {
        let g = &self.g;
        let mut s = vec![0u8; 1024];
        put32(&mut s, 0x00, lo(g.inodes()));
        put32(&mut s, 0x04, lo(g.blocks));
        put32(&mut s, 0x0C, lo(g.free_blocks()));
        put32(&mut s, 0x10, lo(g.inodes() - FIRST_INO));
        put32(&mut s, 0x14, 0);
        put32(&mut s, 0x18, 2);
        put32(&mut s, 0x1C, 2);
        put32(&mut s, 0x20, BLOCKS_PER_GROUP as u32);
        put32(&mut s, 0x24, BLOCKS_PER_GROUP as u32);
        put32(&mut s, 0x28, lo(g.inodes_per_group));
        put32(&mut s, 0x30, self.o.epoch);
        put16(&mut s, 0x36, 0xFFFF);
        put16(&mut s, 0x38, 0xEF53);
        put16(&mut s, 0x3A, 1);
        put16(&mut s, 0x3C, 1);
        put32(&mut s, 0x40, self.o.epoch);
        put32(&mut s, 0x4C, 1);
        put32(&mut s, 0x54, FIRST_INO as u32);
        put16(&mut s, 0x58, INODE_SIZE as u16);
        put16(&mut s, 0x5A, group as u16);
        put32(
            &mut s,
            0x5C,
            COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
        );
        put32(&mut s, 0x60, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS);
        put32(
            &mut s,
            0x64,
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE,
        );
        s[0x68..0x78].copy_from_slice(&self.o.uuid);
        s[0x78..0x88].copy_from_slice(&self.label);
        put32(&mut s, 0xE0, JOURNAL_INO as u32);
        let seed = Sha256::digest(self.o.uuid);
        s[0xEC..0xFC].copy_from_slice(&seed[..16]);
        s[0xFC] = 1; // half_md4
        s[0xFD] = 1; // s_jnl_blocks holds the journal inode's blocks
        put32(&mut s, 0x100, 0x000C); // user_xattr, acl
        put32(&mut s, 0x108, self.o.epoch);
        let ji = self.journal_inode();
        s[0x10C..0x10C + 60].copy_from_slice(&ji[0x28..0x28 + 60]);
        put32(&mut s, 0x10C + 60, 0);
        put32(&mut s, 0x10C + 64, lo(self.g.journal_blocks * BLOCK));
        put16(&mut s, 0x15C, EXTRA_ISIZE);
        put16(&mut s, 0x15E, EXTRA_ISIZE);
        put32(&mut s, 0x160, 1); // signed directory hash
        s
    }

    fn descriptors(&self) -> Vec<u8> {
        let g = &self.g;
        let mut d = vec![0u8; (g.gdt_blocks * BLOCK) as usize];
        for i in 0..g.groups {
            let o = (i * DESC_SIZE) as usize;
            let bb = g.bitmap(i);
            put32(&mut d, o, lo(bb));
            put32(&mut d, o + 4, lo(bb + 1));
            put32(&mut d, o + 8, lo(bb + 2));
            put16(
                &mut d,
                o + 0xC,
                (g.group_blocks(i) - g.used_blocks(i)) as u16,
            );
            let used_inodes = if i == 0 { FIRST_INO } else { 0 };
            put16(&mut d, o + 0xE, (g.inodes_per_group - used_inodes) as u16);
            put16(&mut d, o + 0x10, if i == 0 { 2 } else { 0 });
        }
        d
    }

    /// A bitmap block: `used` bits set from 0, and every bit from `valid` on (padding).
    fn bitmap(used: u64, valid: u64) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK as usize];
        for bit in (0..used).chain(valid..BLOCK * 8) {
            b[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        b
    }

    fn inode_table0(&self) -> Vec<u8> {
        let g = &self.g;
        let mut t = vec![0u8; (g.itable_blocks * BLOCK) as usize];
        let at = |n: u64| ((n - 1) * INODE_SIZE) as usize;
        let e = self.o.epoch;
        let root = g.root_block();
        t[at(ROOT_INO)..at(ROOT_INO) + 256]
            .copy_from_slice(&inode(0o040_755, 3, BLOCK, root, 1, e));
        t[at(JOURNAL_INO)..at(JOURNAL_INO) + 256].copy_from_slice(&self.journal_inode());
        t[at(LOST_FOUND_INO)..at(LOST_FOUND_INO) + 256].copy_from_slice(&inode(
            0o040_700,
            2,
            BLOCK,
            root + 1,
            1,
            e,
        ));
        t
    }

    fn dir_blocks(&self) -> Vec<u8> {
        let mut b = vec![0u8; 2 * BLOCK as usize];
        dirent(&mut b, 0, ROOT_INO, 12, ".");
        dirent(&mut b, 12, ROOT_INO, 12, "..");
        dirent(
            &mut b,
            24,
            LOST_FOUND_INO,
            (BLOCK - 24) as u16,
            "lost+found",
        );
        let l = BLOCK as usize;
        dirent(&mut b, l, LOST_FOUND_INO, 12, ".");
        dirent(&mut b, l + 12, ROOT_INO, (BLOCK - 12) as u16, "..");
        b
    }

    /// The jbd2 superblock (big-endian), version 2, empty.
    fn journal_super(&self) -> Vec<u8> {
        let mut j = vec![0u8; BLOCK as usize];
        let be =
            |j: &mut [u8], off: usize, v: u32| j[off..off + 4].copy_from_slice(&v.to_be_bytes());
        be(&mut j, 0x00, 0xC03B_3998);
        be(&mut j, 0x04, 4);
        be(&mut j, 0x0C, BLOCK as u32);
        be(&mut j, 0x10, lo(self.g.journal_blocks));
        be(&mut j, 0x14, 1);
        be(&mut j, 0x18, 1);
        j[0x30..0x40].copy_from_slice(&self.o.uuid);
        be(&mut j, 0x40, 1);
        j
    }
}

/// Writes `count` zero blocks at byte `at`.
fn zeros<W: Write + Seek>(out: &mut W, at: u64, count: u64) -> io::Result<()> {
    const CHUNK: u64 = 256;
    let buf = vec![0u8; (CHUNK * BLOCK) as usize];
    out.seek(SeekFrom::Start(at))?;
    let mut left = count;
    while left > 0 {
        let n = left.min(CHUNK);
        out.write_all(&buf[..(n * BLOCK) as usize])?;
        left -= n;
    }
    Ok(())
}

/// Formats `[offset, offset + size)` of `out` as ext4; returns the geometry.
pub fn format<W: Write + Seek>(
    out: &mut W,
    offset: u64,
    size: u64,
    o: &Options,
) -> Result<Geometry, ExtError> {
    if o.label.len() > 16 || o.label.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
        return Err(ExtError::Label(o.label.clone()));
    }
    let mut label = [0u8; 16];
    label[..o.label.len()].copy_from_slice(o.label.as_bytes());
    let g = Geometry::compute(size)?;
    let fs = Fs { g, o, label };
    let at = |block: u64| offset + block * BLOCK;
    let gdt = fs.descriptors();
    for grp in 0..g.groups {
        let base = grp * BLOCKS_PER_GROUP;
        if has_super(grp) {
            // group 0's superblock sits at byte 1024 of its first block; the copies at the
            // start of theirs
            let mut first = vec![0u8; BLOCK as usize];
            let pos = if grp == 0 { 1024 } else { 0 };
            first[pos..pos + 1024].copy_from_slice(&fs.superblock(grp));
            out.seek(SeekFrom::Start(at(base)))?;
            out.write_all(&first)?;
            out.write_all(&gdt)?;
        }
        let bb = g.bitmap(grp);
        out.seek(SeekFrom::Start(at(bb)))?;
        out.write_all(&Fs::bitmap(g.used_blocks(grp), g.group_blocks(grp)))?;
        let used_inodes = if grp == 0 { FIRST_INO } else { 0 };
        out.write_all(&Fs::bitmap(used_inodes, g.inodes_per_group))?;
        if grp == 0 {
            out.write_all(&fs.inode_table0())?;
        } else if !o.known_zero {
            zeros(out, at(bb + 2), g.itable_blocks)?;
        }
    }
    out.seek(SeekFrom::Start(at(g.root_block())))?;
    out.write_all(&fs.dir_blocks())?;
    out.write_all(&fs.journal_super())?;
    if !o.known_zero {
        zeros(out, at(fs.journal_start() + 1), g.journal_blocks - 1)?;
    }
    out.flush()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::process::Command;

    #[test]
    fn geometry() {
        let g = Geometry::compute(100 << 20).unwrap();
        assert_eq!(g.blocks, 25600);
        assert_eq!(g.groups, 1);
        assert_eq!(g.inodes_per_group, 6400);
        assert_eq!(g.journal_blocks, 1024);
        let g = Geometry::compute(6 << 30).unwrap();
        assert_eq!(g.groups, 48);
        assert_eq!(g.inodes_per_group, 8192);
        assert_eq!(g.journal_blocks, 16384);
        assert!(
            [1, 3, 5, 7, 9, 25, 27, 49, 81]
                .iter()
                .all(|&n| has_super(n))
        );
        assert!([2, 4, 6, 8, 10, 15, 21].iter().all(|&n| !has_super(n)));
        // a tail smaller than a group's metadata is not a group
        let g = Geometry::compute((32768 + 100) * BLOCK).unwrap();
        assert_eq!((g.groups, g.blocks), (1, 32768));
        assert!(matches!(
            Geometry::compute(MIN_SIZE - 1),
            Err(ExtError::TooSmall(_))
        ));
    }

    fn fsck(path: &std::path::Path) {
        let r = Command::new("e2fsck")
            .args(["-fn"])
            .arg(path)
            .output()
            .expect("e2fsck (e2fsprogs) runs");
        assert!(
            r.status.success(),
            "e2fsck: {}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }

    #[test]
    fn e2fsck_accepts_every_size_and_debugfs_reads_it() {
        let t = tempfile::tempdir().unwrap();
        for (i, size) in [
            MIN_SIZE,
            100 << 20,
            (32768 + 700) * BLOCK,
            (3 * 32768 + 5000) * BLOCK,
            6 << 30,
        ]
        .into_iter()
        .enumerate()
        {
            let p = t.path().join(format!("fs{i}.img"));
            let mut f = std::fs::File::create(&p).unwrap();
            f.set_len(size).unwrap();
            format(
                &mut f,
                0,
                size,
                &Options::from_label("EPHEMERAL", 1_700_000_000, true),
            )
            .unwrap();
            drop(f);
            fsck(&p);
        }
        let p = t.path().join("fs1.img");
        let ls = Command::new("debugfs")
            .args(["-R", "ls -l /"])
            .arg(&p)
            .output()
            .unwrap();
        let ls = String::from_utf8_lossy(&ls.stdout);
        assert!(ls.contains("lost+found"), "{ls}");
        let stats = Command::new("dumpe2fs").arg("-h").arg(&p).output().unwrap();
        let stats = String::from_utf8_lossy(&stats.stdout);
        for want in [
            "Filesystem volume name:   EPHEMERAL",
            "has_journal",
            "extent",
            "Filesystem state:         clean",
            "Inode size:\t          256",
            "Total journal size:       4096k",
        ] {
            assert!(stats.contains(want), "{want}:\n{stats}");
        }
    }

    #[test]
    fn over_garbage_and_at_an_offset_with_the_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let size = (2 * 32768 + 3000) * BLOCK;
        let off = 1 << 20;
        // the target is full of junk: nothing may depend on it reading as zeros
        let dirty = t.path().join("dirty.img");
        let mut f = std::fs::File::create(&dirty).unwrap();
        let junk = vec![0xA5u8; 1 << 20];
        for _ in 0..(off + size).div_ceil(1 << 20) {
            f.write_all(&junk).unwrap();
        }
        let mut o = Options::from_label("STATE", 0, false);
        format(&mut f, off, size, &o).unwrap();
        drop(f);
        let part = t.path().join("part.img");
        let all = std::fs::read(&dirty).unwrap();
        std::fs::write(&part, &all[off as usize..(off + size) as usize]).unwrap();
        fsck(&part);
        // the same filesystem on a zero file, where nothing but metadata is written
        let clean = t.path().join("clean.img");
        let mut f = std::fs::File::create(&clean).unwrap();
        f.set_len(size).unwrap();
        o.known_zero = true;
        format(&mut f, 0, size, &o).unwrap();
        drop(f);
        let c = std::fs::read(&clean).unwrap();
        // every block the formatter owns matches; only data blocks keep the junk
        let g = Geometry::compute(size).unwrap();
        let meta_end = (g.root_block() + 2 + g.journal_blocks) * BLOCK;
        assert_eq!(
            &c[..meta_end as usize],
            &all[off as usize..(off + meta_end) as usize]
        );
        assert!(Options::from_label("x", 0, true).uuid != o.uuid);
        assert!(matches!(
            format(
                &mut std::io::Cursor::new(Vec::new()),
                0,
                size,
                &Options::from_label("seventeen-bytes!!", 0, true)
            ),
            Err(ExtError::Label(_))
        ));
    }
}
