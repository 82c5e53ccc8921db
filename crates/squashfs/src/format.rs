//! On-disk structures of SquashFS 4.0: the superblock, metadata blocks and the size words of
//! data blocks, as `fs/squashfs/squashfs_fs.h` in Linux and squashfs-tools define them. In:
//! table contents built by `meta`; out: little-endian bytes. Everything here is pure and
//! unit-tested against the constants of the format.

use crate::SquashfsError;
use crate::compress::BlockCompressor;

/// `hsqs`
pub const MAGIC: u32 = 0x7371_7368;
/// Size of the superblock.
pub const SUPERBLOCK_SIZE: usize = 96;
/// Uncompressed size of a metadata block.
pub const METADATA_SIZE: usize = 8192;
/// Metadata block header bit: the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// Data block / fragment size word bit: the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// "No such table" / "no fragment" / "no xattrs".
pub const INVALID_BLK: u64 = u64::MAX;
pub const INVALID_FRAG: u32 = u32::MAX;
pub const INVALID_XATTR: u32 = u32::MAX;

/// Compression ids.
pub const COMP_XZ: u16 = 4;
pub const COMP_ZSTD: u16 = 6;

/// Superblock flags.
pub const FLAG_ALWAYS_FRAGMENTS: u16 = 0x0020;
pub const FLAG_DUPLICATES: u16 = 0x0040;
pub const FLAG_EXPORTABLE: u16 = 0x0080;
pub const FLAG_NO_XATTRS: u16 = 0x0200;
pub const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;

/// Inode types (basic and extended).
pub const BASIC_DIR: u16 = 1;
pub const BASIC_FILE: u16 = 2;
pub const BASIC_SYMLINK: u16 = 3;
pub const EXT_DIR: u16 = 8;
pub const EXT_FILE: u16 = 9;
pub const EXT_SYMLINK: u16 = 10;

/// Entries per directory header.
pub const DIR_HEADER_MAX: usize = 256;
/// Longest name in a directory entry.
pub const NAME_MAX: usize = 256;

/// Xattr name prefixes and their type ids.
pub const XATTR_PREFIXES: [(&str, u16); 3] = [("user.", 0), ("trusted.", 1), ("security.", 2)];

/// The superblock (all offsets from the start of the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compression_id: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_id_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

impl Superblock {
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = Vec::with_capacity(SUPERBLOCK_SIZE);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&self.inode_count.to_le_bytes());
        b.extend_from_slice(&self.mkfs_time.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.fragment_count.to_le_bytes());
        b.extend_from_slice(&self.compression_id.to_le_bytes());
        // block_log: block_size is a validated power of two
        b.extend_from_slice(&(self.block_size.trailing_zeros() as u16).to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.id_count.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes()); // version 4.0
        b.extend_from_slice(&0u16.to_le_bytes());
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table_start,
            self.xattr_id_table_start,
            self.inode_table_start,
            self.directory_table_start,
            self.fragment_table_start,
            self.export_table_start,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0u8; SUPERBLOCK_SIZE];
        out.copy_from_slice(&b);
        out
    }
}

/// The size word of a data block or fragment: the stored size, with bit 24 set when the block
/// is stored uncompressed. A sparse (all-zero) data block has the word 0.
pub fn data_size_word(stored_len: usize, compressed: bool) -> u32 {
    // stored_len <= block_size <= 1 MiB < 2^24
    let len = stored_len as u32;
    if compressed {
        len
    } else {
        len | DATA_UNCOMPRESSED
    }
}

/// The 16-bit header of a metadata block.
pub fn metadata_header(stored_len: usize, compressed: bool) -> u16 {
    // stored_len <= METADATA_SIZE (8192) fits 15 bits
    let len = stored_len as u16;
    if compressed {
        len
    } else {
        len | METADATA_UNCOMPRESSED
    }
}

/// A reference to a position in a metadata table: the start of the (compressed) metadata block
/// relative to the table start, shifted left 16, or'ed with the offset in the uncompressed
/// block.
pub fn meta_ref(block: u64, offset: u16) -> u64 {
    (block << 16) | u64::from(offset)
}

/// A stream of metadata blocks: bytes go in, 8 KiB blocks are compressed (or stored when
/// compression does not make them smaller) as they fill. Positions are known as soon as the
/// bytes are written because every earlier block is already compressed.
pub struct MetaWriter {
    out: Vec<u8>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// compressed start of every flushed block
    starts: Vec<u64>,
}

impl MetaWriter {
    pub fn new() -> Self {
        MetaWriter {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE),
            scratch: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// (start of the current block relative to the table, offset in it)
    pub fn pos(&self) -> (u64, u16) {
        // buf.len() < METADATA_SIZE after every write
        (self.out.len() as u64, self.buf.len() as u16)
    }

    /// Total uncompressed bytes written so far.
    pub fn uncompressed_len(&self) -> u64 {
        (self.starts.len() * METADATA_SIZE + self.buf.len()) as u64
    }

    /// Compressed start of the block holding uncompressed position `upos`, which must be at
    /// most `uncompressed_len()`.
    pub fn block_start_of(&self, upos: u64) -> u64 {
        let n = (upos / METADATA_SIZE as u64) as usize;
        self.starts.get(n).copied().unwrap_or(self.out.len() as u64)
    }

    pub fn write(
        &mut self,
        comp: &mut BlockCompressor,
        mut data: &[u8],
    ) -> Result<(), SquashfsError> {
        while !data.is_empty() {
            let n = (METADATA_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == METADATA_SIZE {
                self.flush(comp)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, comp: &mut BlockCompressor) -> Result<(), SquashfsError> {
        self.starts.push(self.out.len() as u64);
        let compressed = comp.compress(&self.buf, &mut self.scratch)?;
        let data = if compressed { &self.scratch } else { &self.buf };
        self.out
            .extend_from_slice(&metadata_header(data.len(), compressed).to_le_bytes());
        self.out.extend_from_slice(data);
        self.buf.clear();
        Ok(())
    }

    /// The compressed table.
    pub fn finish(mut self, comp: &mut BlockCompressor) -> Result<Vec<u8>, SquashfsError> {
        if !self.buf.is_empty() {
            self.flush(comp)?;
        }
        Ok(self.out)
    }
}

/// A table stored as metadata blocks followed by an index of their absolute positions (the
/// fragment, export and id tables, and the xattr id table): `entries` laid out back to back,
/// `table_pos` where the blocks will be written. Returns the bytes and the absolute position of
/// the index (the value the superblock stores).
pub fn indexed_table(
    entries: &[u8],
    table_pos: u64,
    comp: &mut BlockCompressor,
) -> Result<(Vec<u8>, u64), SquashfsError> {
    let mut mw = MetaWriter::new();
    mw.write(comp, entries)?;
    let starts = {
        let n = entries.len().div_ceil(METADATA_SIZE);
        (0..n)
            .map(|i| mw.block_start_of((i * METADATA_SIZE) as u64))
            .collect::<Vec<_>>()
    };
    let mut out = mw.finish(comp)?;
    let index_pos = table_pos + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&(table_pos + s).to_le_bytes());
    }
    Ok((out, index_pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compression;

    #[test]
    fn superblock_layout() {
        let sb = Superblock {
            inode_count: 7,
            mkfs_time: 1_700_000_000,
            block_size: 131_072,
            fragment_count: 3,
            compression_id: COMP_ZSTD,
            flags: FLAG_DUPLICATES | FLAG_EXPORTABLE | FLAG_NO_XATTRS,
            id_count: 1,
            root_inode: meta_ref(0x1234, 0x56),
            bytes_used: 0x0102_0304_0506,
            id_table_start: 11,
            xattr_id_table_start: INVALID_BLK,
            inode_table_start: 13,
            directory_table_start: 14,
            fragment_table_start: 15,
            export_table_start: 16,
        };
        let b = sb.to_bytes();
        assert_eq!(&b[0..4], b"hsqs");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 131_072);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 3);
        assert_eq!(u16::from_le_bytes(b[20..22].try_into().unwrap()), 6);
        assert_eq!(u16::from_le_bytes(b[22..24].try_into().unwrap()), 17); // block_log
        assert_eq!(u16::from_le_bytes(b[24..26].try_into().unwrap()), 0x02c0);
        assert_eq!(u16::from_le_bytes(b[26..28].try_into().unwrap()), 1);
        assert_eq!(&b[28..32], &[4, 0, 0, 0]); // 4.0
        assert_eq!(
            u64::from_le_bytes(b[32..40].try_into().unwrap()),
            0x1234_0056
        );
        assert_eq!(
            u64::from_le_bytes(b[40..48].try_into().unwrap()),
            0x0102_0304_0506
        );
        assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 11);
        assert_eq!(&b[56..64], &[0xff; 8]);
        assert_eq!(u64::from_le_bytes(b[64..72].try_into().unwrap()), 13);
        assert_eq!(u64::from_le_bytes(b[72..80].try_into().unwrap()), 14);
        assert_eq!(u64::from_le_bytes(b[80..88].try_into().unwrap()), 15);
        assert_eq!(u64::from_le_bytes(b[88..96].try_into().unwrap()), 16);
    }

    #[test]
    fn size_words_and_headers() {
        assert_eq!(data_size_word(1000, true), 1000);
        assert_eq!(data_size_word(131_072, false), 0x0102_0000);
        assert_eq!(metadata_header(8192, false), 0xa000);
        assert_eq!(metadata_header(300, true), 300);
        assert_eq!(meta_ref(0, 8191), 8191);
        assert_eq!(meta_ref(1, 0), 1 << 16);
    }

    #[test]
    fn metadata_blocks() {
        let mut comp = BlockCompressor::new(&Compression::Zstd { level: 3 }, 131_072).unwrap();
        let mut mw = MetaWriter::new();
        // compressible: first block compressed
        mw.write(&mut comp, &[7u8; METADATA_SIZE]).unwrap();
        assert_eq!(mw.uncompressed_len(), 8192);
        let (blk, off) = mw.pos();
        assert_eq!(off, 0);
        assert!(blk > 2 && blk < 200, "{blk}");
        // incompressible second block: stored
        let mut x = 1u32;
        let noise: Vec<u8> = (0..METADATA_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        mw.write(&mut comp, &noise).unwrap();
        mw.write(&mut comp, b"tail").unwrap();
        assert_eq!(mw.block_start_of(8192), blk);
        assert_eq!(mw.block_start_of(16384), blk + 2 + 8192);
        let out = mw.finish(&mut comp).unwrap();
        let h0 = u16::from_le_bytes([out[0], out[1]]);
        assert_eq!(
            u64::from(h0) + 2,
            blk,
            "first header is the compressed length"
        );
        assert_eq!(h0 & METADATA_UNCOMPRESSED, 0);
        let b = blk as usize;
        let h1 = u16::from_le_bytes([out[b], out[b + 1]]);
        assert_eq!(h1, 0x8000 | 8192);
        assert_eq!(&out[b + 2..b + 2 + 8192], &noise[..]);
        let c = b + 2 + 8192;
        let h2 = u16::from_le_bytes([out[c], out[c + 1]]);
        // "tail" does not compress below 4 bytes with a zstd frame header: stored
        assert_eq!(h2, 0x8000 | 4);
        assert_eq!(&out[c + 2..], b"tail");
    }

    #[test]
    fn indexed_table_points_at_blocks() {
        let mut comp = BlockCompressor::new(&Compression::Zstd { level: 3 }, 131_072).unwrap();
        let entries = vec![0u8; METADATA_SIZE + 16];
        let (bytes, index) = indexed_table(&entries, 1000, &mut comp).unwrap();
        assert_eq!(index, 1000 + bytes.len() as u64 - 16);
        let i0 = u64::from_le_bytes(bytes[bytes.len() - 16..bytes.len() - 8].try_into().unwrap());
        let i1 = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap());
        assert_eq!(i0, 1000);
        let first_len = u16::from_le_bytes([bytes[0], bytes[1]]) & 0x7fff;
        assert_eq!(i1, 1000 + 2 + u64::from(first_len));
    }
}
