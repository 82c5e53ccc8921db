//! Layout and serialization: turns an [`IsoBuilder`] into image bytes.
//!
//! In: the builder's sorted tree and boot options. Out: the image, written sequentially into
//! a `Write + Seek` sink (the system area is written last, by seeking back to 0): volume
//! descriptors (ECMA-119 §8), path tables (§9.4), directory records with Rock Ridge SUSP
//! entries (SP, PX, TF, NM, CE, ER), the El Torito boot catalog, file data (streamed), the
//! appended ESP, padding, and the MBR/GPT of the system area (docs/formats/iso.md).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::names::{assign, sort_key};
use crate::tree::{DirNode, FileNode, IsoBuilder, Node};
use crate::{IsoError, IsoStats, PartitionTable, Source};

const BLOCK: u64 = 2048;
/// Block of the partition start and of the second superblock set (`-partition_offset 16`).
const PART_OFFSET: u32 = 16;
/// xorriso's default tail padding (`-pad`): 300 KiB.
const PAD_BLOCKS: u32 = 150;
/// Cylinder alignment: 64 heads × 32 sectors × 512 bytes = 1 MiB = 512 blocks.
const CYL_BLOCKS: u32 = 512;
const BASIC_DATA: gpt::Guid = gpt::Guid::from_str_const("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DES: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER \
IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

fn out_err(source: std::io::Error) -> IsoError {
    IsoError::Io {
        path: "<output>".into(),
        source,
    }
}

// ---------------------------------------------------------------- dates and encodings

/// Civil date (UTC) from Unix seconds: (year, month, day, hour, minute, second).
pub(crate) fn civil(ts: i64) -> (i64, u32, u32, u32, u32, u32) {
    let d = civil::from_unix(ts);
    (d.year, d.month, d.day, d.hour, d.minute, d.second)
}

/// 7-byte directory record date (§9.1.5), offset 0.
fn date7(ts: i64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(ts);
    let y = (y - 1900).clamp(0, 255) as u8;
    [y, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// 17-byte volume descriptor date (§8.4.26.1), offset 0.
fn date17(ts: i64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = civil(ts);
    let txt = format!("{:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00", y.clamp(0, 9999));
    let mut b = [0u8; 17];
    b[..16].copy_from_slice(txt.as_bytes());
    b
}

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn padded(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

// ---------------------------------------------------------------- flattened tree

struct FlatFile<'a> {
    src: &'a Source,
    size: u32,
    path: String,
    lba: u32,
}

enum Target {
    Dir(usize),
    File(usize),
}

/// One directory record, LBAs not yet known.
struct Rec {
    id: Vec<u8>,
    target: Target,
    /// System use bytes kept in the record (with a 28-byte CE placeholder at `ce_at` if `ce`; a
    /// trailing zero byte keeps the record length even).
    su: Vec<u8>,
    /// Bytes moved to a continuation area.
    ce: Option<Vec<u8>>,
    /// Position of the continuation area: (block relative to the CE region, byte offset).
    ce_pos: (u32, u32),
    /// Offset of the CE entry in `su`.
    ce_at: usize,
}

impl Rec {
    fn len(&self) -> usize {
        let base = 33 + self.id.len();
        base + (base % 2) + self.su.len()
    }
}

struct FlatDir {
    parent: usize,
    id: Vec<u8>,
    recs: Vec<Rec>,
    size: u32,
}

fn px(mode: u32, nlink: u32, ino: u32) -> Vec<u8> {
    let mut v = vec![b'P', b'X', 44, 1];
    v.extend_from_slice(&both32(mode));
    v.extend_from_slice(&both32(nlink));
    v.extend_from_slice(&both32(0));
    v.extend_from_slice(&both32(0));
    v.extend_from_slice(&both32(ino));
    v
}

fn tf(ts: i64) -> Vec<u8> {
    let mut v = vec![b'T', b'F', 26, 1, 0x0E];
    for _ in 0..3 {
        v.extend_from_slice(&date7(ts));
    }
    v
}

fn nm(name: &str) -> Vec<Vec<u8>> {
    let bytes = name.as_bytes();
    let chunks: Vec<&[u8]> = bytes.chunks(250).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = vec![b'N', b'M', (5 + c.len()) as u8, 1, u8::from(i + 1 < n)];
            v.extend_from_slice(c);
            v
        })
        .collect()
}

fn er() -> Vec<u8> {
    let mut v = vec![
        b'E',
        b'R',
        (8 + ER_ID.len() + ER_DES.len() + ER_SRC.len()) as u8,
        1,
        ER_ID.len() as u8,
        ER_DES.len() as u8,
        ER_SRC.len() as u8,
        1,
    ];
    v.extend_from_slice(ER_ID);
    v.extend_from_slice(ER_DES);
    v.extend_from_slice(ER_SRC);
    v
}

/// Makes a record from its SUSP entries, spilling to a continuation area when needed.
fn make_rec(id: Vec<u8>, target: Target, entries: Vec<Vec<u8>>, force_ce_from: usize) -> Rec {
    let base = 33 + id.len() + (33 + id.len()) % 2;
    let total: usize = entries.iter().map(Vec::len).sum();
    let mut rec = Rec {
        id,
        target,
        su: Vec::new(),
        ce: None,
        ce_pos: (0, 0),
        ce_at: 0,
    };
    if base + total <= 254 && force_ce_from >= entries.len() {
        rec.su = entries.concat();
        if rec.su.len() % 2 == 1 {
            rec.su.push(0); // records have an even length (SUSP §5.3)
        }
        return rec;
    }
    let mut used = base + 28;
    let mut split = 0;
    for (i, e) in entries.iter().enumerate() {
        if i >= force_ce_from || used + e.len() > 254 {
            break;
        }
        used += e.len();
        split = i + 1;
    }
    rec.su = entries[..split].concat();
    rec.ce_at = rec.su.len();
    rec.su.extend_from_slice(&[b'C', b'E', 28, 1]);
    rec.su.extend_from_slice(&[0u8; 24]);
    if rec.su.len() % 2 == 1 {
        rec.su.push(0);
    }
    rec.ce = Some(entries[split..].concat());
    rec
}

/// A child of a directory: ISO identifier, original name, target, permission bits.
type Child = (Vec<u8>, String, Target, u32);

struct Flat<'a> {
    dirs: Vec<FlatDir>,
    files: Vec<FlatFile<'a>>,
    ce_blocks: u32,
}

/// Flattens the tree; `extra` is an additional root entry (the visible boot catalog).
fn flatten<'a>(root: &'a DirNode, ts: i64, extra: Option<(&'a str, &'a Node)>) -> Flat<'a> {
    // BFS over directories: the order of the path table.
    let mut nodes: Vec<(&'a DirNode, usize, Vec<u8>, String)> =
        vec![(root, 0, vec![0u8], String::new())];
    let mut files: Vec<FlatFile<'a>> = Vec::new();
    let mut children_of: Vec<Vec<Child>> = Vec::new();
    let mut i = 0;
    while i < nodes.len() {
        let (dir, _, _, path) = (
            nodes[i].0,
            nodes[i].1,
            nodes[i].2.clone(),
            nodes[i].3.clone(),
        );
        let mut entries: Vec<(&'a str, &'a Node)> = dir
            .entries
            .iter()
            .map(|(n, node)| (n.as_str(), node))
            .collect();
        if i == 0 {
            entries.extend(extra);
            entries.sort_by(|a, b| a.0.cmp(b.0));
        }
        let list: Vec<(&str, bool)> = entries
            .iter()
            .map(|(n, node)| (*n, matches!(node, Node::Dir(_))))
            .collect();
        let ids = assign(&list);
        let mut kids: Vec<(Vec<u8>, &str, &'a Node)> = entries
            .into_iter()
            .zip(ids)
            .map(|((n, node), id)| (id.into_bytes(), n, node))
            .collect();
        kids.sort_by(|a, b| {
            sort_key(&String::from_utf8_lossy(&a.0)).cmp(&sort_key(&String::from_utf8_lossy(&b.0)))
        });
        let mut mine = Vec::new();
        for (id, name, node) in kids {
            let full = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}/{name}")
            };
            match node {
                Node::Dir(d) => {
                    nodes.push((d, i, id.clone(), full));
                    mine.push((id, name.to_string(), Target::Dir(nodes.len() - 1), d.mode));
                }
                Node::File(f) => {
                    files.push(FlatFile {
                        src: &f.src,
                        size: f.size,
                        path: full,
                        lba: 0,
                    });
                    mine.push((id, name.to_string(), Target::File(files.len() - 1), f.mode));
                }
            }
        }
        children_of.push(mine);
        i += 1;
    }
    let ndirs = nodes.len();
    let subdirs: Vec<u32> = children_of
        .iter()
        .map(|c| c.iter().filter(|k| matches!(k.2, Target::Dir(_))).count() as u32)
        .collect();
    let dir_px = |d: usize| px(0o040000 | nodes[d].0.mode, 2 + subdirs[d], d as u32 + 1);
    let mut dirs = Vec::with_capacity(ndirs);
    for (d, kids) in children_of.into_iter().enumerate() {
        let parent = nodes[d].1;
        let mut recs = Vec::new();
        let mut dot = vec![dir_px(d), tf(ts)];
        if d == 0 {
            dot.insert(0, vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
            dot.push(er());
            recs.push(make_rec(vec![0], Target::Dir(d), dot, 3));
        } else {
            recs.push(make_rec(vec![0], Target::Dir(d), dot, usize::MAX));
        }
        recs.push(make_rec(
            vec![1],
            Target::Dir(parent),
            vec![dir_px(parent), tf(ts)],
            usize::MAX,
        ));
        for (id, name, target, mode) in kids {
            let p = match target {
                Target::Dir(c) => dir_px(c),
                Target::File(f) => px(0o100000 | mode, 1, (ndirs + f) as u32 + 1),
            };
            let mut e = vec![p, tf(ts)];
            e.extend(nm(&name));
            recs.push(make_rec(id, target, e, usize::MAX));
        }
        // sizes: records never cross a block boundary
        let mut size = 0u32;
        for r in &recs {
            let l = r.len() as u32;
            if size % 2048 + l > 2048 {
                size = size.div_ceil(2048) * 2048;
            }
            size += l;
        }
        dirs.push(FlatDir {
            parent,
            id: nodes[d].2.clone(),
            recs,
            size: size.div_ceil(2048) * 2048,
        });
    }
    // continuation areas, packed without crossing blocks
    let mut pos = 0u32;
    for d in &mut dirs {
        for r in &mut d.recs {
            if let Some(ce) = &r.ce {
                let l = ce.len() as u32;
                if pos % 2048 + l > 2048 {
                    pos = pos.div_ceil(2048) * 2048;
                }
                r.ce_pos = (pos / 2048, pos % 2048);
                pos += l;
            }
        }
    }
    Flat {
        dirs,
        files,
        ce_blocks: pos.div_ceil(2048),
    }
}

fn path_table(dirs: &[FlatDir], lbas: &[u32], bias: u32, big: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for (d, lba) in dirs.iter().zip(lbas) {
        v.push(d.id.len() as u8);
        v.push(0);
        let l = lba - bias;
        v.extend_from_slice(&if big {
            l.to_be_bytes()
        } else {
            l.to_le_bytes()
        });
        let p = (d.parent + 1) as u16;
        v.extend_from_slice(&if big {
            p.to_be_bytes()
        } else {
            p.to_le_bytes()
        });
        v.extend_from_slice(&d.id);
        if d.id.len() % 2 == 1 {
            v.push(0);
        }
    }
    v
}

fn path_table_size(dirs: &[FlatDir]) -> u32 {
    dirs.iter()
        .map(|d| 8 + d.id.len() as u32 + (d.id.len() as u32 % 2))
        .sum()
}

/// Block positions of one superblock's metadata copy.
struct Copy {
    bias: u32,
    pt_l: u32,
    pt_m: u32,
    dirs: Vec<u32>,
    ce: u32,
}

fn record_bytes(r: &Rec, extent: u32, len: u32, dir: bool, ts: i64, ce_block: u32) -> Vec<u8> {
    let l = r.len();
    let mut v = vec![0u8; l];
    v[0] = l as u8;
    v[2..10].copy_from_slice(&both32(extent));
    v[10..18].copy_from_slice(&both32(len));
    v[18..25].copy_from_slice(&date7(ts));
    v[25] = if dir { 2 } else { 0 };
    v[28..32].copy_from_slice(&both16(1));
    v[32] = r.id.len() as u8;
    v[33..33 + r.id.len()].copy_from_slice(&r.id);
    let su_at = l - r.su.len();
    v[su_at..].copy_from_slice(&r.su);
    if let Some(ce) = &r.ce {
        let c = l - r.su.len() + r.ce_at;
        v[c + 4..c + 12].copy_from_slice(&both32(ce_block + r.ce_pos.0));
        v[c + 12..c + 20].copy_from_slice(&both32(r.ce_pos.1));
        v[c + 20..c + 28].copy_from_slice(&both32(ce.len() as u32));
    }
    v
}

// ---------------------------------------------------------------- the system area

fn chs(lba: u64) -> [u8; 3] {
    let c = lba / 2048;
    if c > 1023 {
        return [63, 32 | (3 << 6), 0xFF];
    }
    let h = (lba / 32) % 64;
    let s = lba % 32 + 1;
    [
        h as u8,
        (s as u8) | (((c >> 8) as u8) << 6),
        (c & 0xFF) as u8,
    ]
}

fn mbr_entry(kind: u8, start: u64, len: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[1..4].copy_from_slice(&chs(start));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs(start + len - 1));
    e[8..12].copy_from_slice(&(start.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(len.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    e
}

// ---------------------------------------------------------------- streaming

fn open(src: &Source) -> Result<Box<dyn Read + '_>, IsoError> {
    match src {
        Source::Bytes(b) => Ok(Box::new(&b[..])),
        Source::Path(p) => File::open(p)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|source| IsoError::Io {
                path: p.display().to_string(),
                source,
            }),
    }
}

fn src_name(src: &Source) -> String {
    match src {
        Source::Path(p) => p.display().to_string(),
        Source::Bytes(_) => "<bytes>".into(),
    }
}

/// Copies exactly `size` bytes of `src` and pads with zeros to a whole block. All-zero chunks
/// are skipped with a seek, so the output stays sparse (it starts empty, see [`IsoBuilder::write`]).
fn stream<W: Write + Seek>(
    out: &mut W,
    src: &Source,
    size: u64,
    buf: &mut [u8],
) -> Result<(), IsoError> {
    let mut r = open(src)?;
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want]).map_err(|source| IsoError::Io {
            path: src_name(src),
            source,
        })?;
        if n == 0 {
            return Err(IsoError::SourceChanged {
                path: src_name(src),
            });
        }
        if sparse::is_zero(&buf[..n]) {
            zeros(out, n as u64)?;
        } else {
            out.write_all(&buf[..n]).map_err(out_err)?;
        }
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if matches!(src, Source::Path(_)) && r.read(&mut probe).map_err(out_err)? != 0 {
        return Err(IsoError::SourceChanged {
            path: src_name(src),
        });
    }
    zeros(out, (BLOCK - size % BLOCK) % BLOCK)
}

/// Skips `n` zero bytes (the output reads as zeros there: it starts empty and the last byte of
/// the image is written explicitly, see [`IsoBuilder::write`]).
fn zeros<W: Seek>(out: &mut W, n: u64) -> Result<(), IsoError> {
    let n = i64::try_from(n).map_err(|_| out_err(io::Error::other("seek too far")))?;
    out.seek(SeekFrom::Current(n)).map_err(out_err)?;
    Ok(())
}

fn read_all(src: &Source) -> Result<Vec<u8>, IsoError> {
    let mut v = Vec::new();
    open(src)?
        .read_to_end(&mut v)
        .map_err(|source| IsoError::Io {
            path: src_name(src),
            source,
        })?;
    Ok(v)
}

/// Patches a boot info table (El Torito / mkisofs `-boot-info-table`) into a boot image.
pub fn patch_boot_info_table(image: &mut [u8], pvd_lba: u32, file_lba: u32) {
    if image.len() < 64 {
        return;
    }
    let mut sum = 0u32;
    for c in image[64..].chunks(4) {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum = sum.wrapping_add(u32::from_le_bytes(w));
    }
    let len = image.len() as u32;
    image[8..12].copy_from_slice(&pvd_lba.to_le_bytes());
    image[12..16].copy_from_slice(&file_lba.to_le_bytes());
    image[16..20].copy_from_slice(&len.to_le_bytes());
    image[20..24].copy_from_slice(&sum.to_le_bytes());
    image[24..64].fill(0);
}

// ---------------------------------------------------------------- the writer

impl IsoBuilder {
    /// Writes the image to `out` (from its current start, byte 0) and returns its layout.
    ///
    /// The sink must be empty (e.g. a new file): zero regions are skipped with seeks, not
    /// written, which keeps the image sparse on disk.
    pub fn write<W: Write + Seek>(&self, out: &mut W) -> Result<IsoStats, IsoError> {
        let ts = self.opts.timestamp;
        let eltorito = self.bios.is_some() || self.efi.is_some();
        let cat_node = Node::File(FileNode {
            src: Source::Bytes(Vec::new()),
            size: 2048,
            mode: 0o444,
        });
        let cat_name = self.catalog_name.as_deref().filter(|_| eltorito);
        if let Some(n) = cat_name {
            if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                return Err(IsoError::InvalidPath {
                    path: n.to_string(),
                    reason: "boot catalog name must be one non-empty component",
                });
            }
            if self.root.entries.contains_key(n) {
                return Err(IsoError::Duplicate {
                    path: n.to_string(),
                });
            }
        }
        let mut flat = flatten(&self.root, ts, cat_name.map(|n| (n, &cat_node)));
        let cat_file = cat_name.and_then(|n| flat.files.iter().position(|f| f.path == n));
        if flat.dirs.len() > usize::from(u16::MAX) {
            return Err(IsoError::InvalidPath {
                path: "/".into(),
                reason: "more than 65535 directories (path table parent numbers are 16-bit)",
            });
        }
        let table = self.table;
        let offset_copy = table != PartitionTable::None;

        // the BIOS boot file
        let bios_file = match &self.bios {
            None => None,
            Some(b) => {
                let want = b.path.trim_matches('/');
                let idx = flat
                    .files
                    .iter()
                    .position(|f| f.path == want)
                    .ok_or_else(|| {
                        IsoError::Boot(format!(
                            "BIOS boot image '{want}' is not a file of the tree"
                        ))
                    })?;
                Some(idx)
            }
        };
        if self.mbr_code.is_some() && bios_file.is_none() {
            return Err(IsoError::Boot(
                "a hybrid MBR needs a BIOS El Torito image".into(),
            ));
        }

        // ---- block allocation
        let mut next: u64 = 16;
        let pvd = next;
        next += 1;
        let brvd = if eltorito {
            next += 1;
            Some(next - 1)
        } else {
            None
        };
        next += 1; // terminator
        let mut biases = vec![0u32];
        if offset_copy {
            next = u64::from(PART_OFFSET) + 16 + 2;
            biases.push(PART_OFFSET);
        }
        let pt_size = path_table_size(&flat.dirs);
        let pt_blocks = u64::from(pt_size.div_ceil(2048));
        let mut copies = Vec::new();
        for bias in biases {
            let pt_l = next as u32;
            next += pt_blocks;
            let pt_m = next as u32;
            next += pt_blocks;
            let mut dirs = Vec::with_capacity(flat.dirs.len());
            for d in &flat.dirs {
                dirs.push(next as u32);
                next += u64::from(d.size / 2048);
            }
            let ce = next as u32;
            next += u64::from(flat.ce_blocks);
            copies.push(Copy {
                bias,
                pt_l,
                pt_m,
                dirs,
                ce,
            });
        }
        let meta_end = next;
        let hidden_cat = eltorito && cat_file.is_none();
        let mut catalog = if hidden_cat {
            next += 1;
            Some(next as u32 - 1)
        } else {
            None
        };
        for f in &mut flat.files {
            f.lba = u32::try_from(next).map_err(|_| IsoError::ImageTooLarge)?;
            next += u64::from(f.size).div_ceil(BLOCK);
        }
        if let Some(i) = cat_file {
            catalog = Some(flat.files[i].lba);
        }
        let iso_blocks = next;
        let mut end = iso_blocks;
        if offset_copy || self.efi.is_some() {
            end = end.div_ceil(u64::from(CYL_BLOCKS)) * u64::from(CYL_BLOCKS);
        }
        let part1_blocks = end - u64::from(PART_OFFSET);
        let esp = self.efi.as_ref().map(|(_, size)| (end * BLOCK, *size));
        if let Some((_, size)) = esp {
            end += size.div_ceil(BLOCK);
        }
        end += u64::from(PAD_BLOCKS);
        if table == PartitionTable::Gpt {
            end += 9; // 36 sectors: backup entry array (32) and header (1) at the very end
        }
        let total_blocks = u32::try_from(end).map_err(|_| IsoError::ImageTooLarge)?;

        // ---- El Torito
        let mut boot_image = None;
        if let (Some(b), Some(idx)) = (&self.bios, bios_file) {
            let f = &flat.files[idx];
            let mut img = read_all(f.src)?;
            if img.len() as u64 != u64::from(f.size) {
                return Err(IsoError::SourceChanged {
                    path: f.path.clone(),
                });
            }
            if b.grub2_boot_info {
                if img.len() < 2556 {
                    return Err(IsoError::Boot(
                        "BIOS boot image too short for grub2 boot info (2556 bytes)".into(),
                    ));
                }
                let v = u64::from(f.lba) * 4 + 5;
                img[2548..2556].copy_from_slice(&v.to_le_bytes());
            }
            if b.boot_info_table {
                if img.len() < 64 {
                    return Err(IsoError::Boot(
                        "BIOS boot image shorter than 64 bytes".into(),
                    ));
                }
                patch_boot_info_table(&mut img, pvd as u32, f.lba);
            }
            // the checksum covers the grub2 patch: the table describes the bytes on disc
            boot_image = Some((idx, img));
        }
        let mut cat = vec![0u8; 2048];
        if eltorito {
            let mut entries: Vec<(u8, u16, u32)> = Vec::new();
            if let (Some(b), Some(idx)) = (&self.bios, bios_file) {
                entries.push((0x00, b.load_size, flat.files[idx].lba));
            }
            if let Some((off, size)) = esp {
                let sectors = size / 512;
                let count = if sectors > 0xFFFF { 0 } else { sectors as u16 };
                entries.push((0xEF, count, (off / BLOCK) as u32));
            }
            cat[0] = 1;
            cat[1] = entries[0].0;
            cat[30] = 0x55;
            cat[31] = 0xAA;
            let mut sum = 0u16;
            for c in cat[..32].chunks(2) {
                sum = sum.wrapping_add(u16::from_le_bytes([c[0], c[1]]));
            }
            cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
            let entry = |e: &mut [u8], (_, count, lba): (u8, u16, u32)| {
                e[0] = 0x88;
                e[6..8].copy_from_slice(&count.to_le_bytes());
                e[8..12].copy_from_slice(&lba.to_le_bytes());
            };
            entry(&mut cat[32..64], entries[0]);
            if let Some(second) = entries.get(1) {
                cat[64] = 0x91;
                cat[65] = second.0;
                cat[66..68].copy_from_slice(&1u16.to_le_bytes());
                entry(&mut cat[96..128], *second);
            }
        }

        // ---- metadata blocks 16..first file
        let mut meta = vec![0u8; ((meta_end - 16) * BLOCK) as usize];
        let at = |lba: u64| ((lba - 16) * BLOCK) as usize;
        let file_len = |t: &Target, flat: &Flat, c: &Copy| -> (u32, u32, bool) {
            match t {
                Target::Dir(d) => (c.dirs[*d] - c.bias, flat.dirs[*d].size, true),
                Target::File(f) => {
                    let ff = &flat.files[*f];
                    (ff.lba - c.bias, ff.size, false)
                }
            }
        };
        for c in &copies {
            let vd = u64::from(16 + c.bias);
            // PVD
            let p = &mut meta[at(vd)..at(vd) + 2048];
            p[0] = 1;
            p[1..6].copy_from_slice(b"CD001");
            p[6] = 1;
            padded(&mut p[8..40], "");
            padded(&mut p[40..72], &self.opts.volume_id);
            let vol = if c.bias == 0 {
                total_blocks
            } else {
                part1_blocks as u32
            };
            p[80..88].copy_from_slice(&both32(vol));
            p[120..124].copy_from_slice(&both16(1));
            p[124..128].copy_from_slice(&both16(1));
            p[128..132].copy_from_slice(&both16(2048));
            p[132..140].copy_from_slice(&both32(pt_size));
            p[140..144].copy_from_slice(&(c.pt_l - c.bias).to_le_bytes());
            p[148..152].copy_from_slice(&(c.pt_m - c.bias).to_be_bytes());
            let rr = Rec {
                id: vec![0],
                target: Target::Dir(0),
                su: Vec::new(),
                ce: None,
                ce_pos: (0, 0),
                ce_at: 0,
            };
            let r = record_bytes(&rr, c.dirs[0] - c.bias, flat.dirs[0].size, true, ts, 0);
            p[156..190].copy_from_slice(&r);
            padded(&mut p[190..318], &self.opts.volume_set_id);
            padded(&mut p[318..446], "");
            padded(&mut p[446..574], &self.opts.preparer_id);
            padded(&mut p[574..702], "");
            padded(&mut p[702..813], "");
            p[813..830].copy_from_slice(&date17(ts));
            p[830..847].copy_from_slice(&date17(ts));
            p[847..863].fill(b'0');
            p[864..881].copy_from_slice(&date17(ts));
            p[881] = 1;
            let mut term = vd + 1;
            if let (0, Some(b), Some(cl)) = (c.bias, brvd, catalog) {
                let q = &mut meta[at(b)..at(b) + 2048];
                q[1..6].copy_from_slice(b"CD001");
                q[6] = 1;
                q[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
                q[71..75].copy_from_slice(&cl.to_le_bytes());
                term = b + 1;
            }
            let t = &mut meta[at(term)..at(term) + 2048];
            t[0] = 255;
            t[1..6].copy_from_slice(b"CD001");
            t[6] = 1;
            // path tables
            let l = path_table(&flat.dirs, &c.dirs, c.bias, false);
            let m = path_table(&flat.dirs, &c.dirs, c.bias, true);
            meta[at(c.pt_l.into())..at(c.pt_l.into()) + l.len()].copy_from_slice(&l);
            meta[at(c.pt_m.into())..at(c.pt_m.into()) + m.len()].copy_from_slice(&m);
            // directories and continuation areas
            for (d, dir) in flat.dirs.iter().enumerate() {
                let mut pos = at(c.dirs[d].into());
                let start = pos;
                for r in &dir.recs {
                    let (ext, len, isdir) = file_len(&r.target, &flat, c);
                    let b = record_bytes(r, ext, len, isdir, ts, c.ce - c.bias);
                    if (pos - start) % 2048 + b.len() > 2048 {
                        pos = start + (pos - start).div_ceil(2048) * 2048;
                    }
                    meta[pos..pos + b.len()].copy_from_slice(&b);
                    pos += b.len();
                    if let Some(ce) = &r.ce {
                        let o = at(c.ce.into()) + r.ce_pos.0 as usize * 2048 + r.ce_pos.1 as usize;
                        meta[o..o + ce.len()].copy_from_slice(ce);
                    }
                }
            }
        }

        // ---- write sequentially
        out.seek(SeekFrom::Start(0)).map_err(out_err)?;
        zeros(out, 16 * BLOCK)?;
        out.write_all(&meta).map_err(out_err)?;
        let mut written = meta_end;
        if let (Some(cl), true) = (catalog, hidden_cat) {
            zeros(out, (u64::from(cl) - written) * BLOCK)?;
            out.write_all(&cat).map_err(out_err)?;
            written = u64::from(cl) + 1;
        }
        let mut buf = vec![0u8; 1 << 20];
        for (i, f) in flat.files.iter().enumerate() {
            if f.size == 0 {
                continue;
            }
            zeros(out, (u64::from(f.lba) - written) * BLOCK)?;
            match &boot_image {
                _ if cat_file == Some(i) => out.write_all(&cat).map_err(out_err)?,
                Some((idx, img)) if *idx == i => {
                    out.write_all(img).map_err(out_err)?;
                    zeros(out, (BLOCK - img.len() as u64 % BLOCK) % BLOCK)?;
                }
                _ => stream(out, f.src, u64::from(f.size), &mut buf)?,
            }
            written = u64::from(f.lba) + u64::from(f.size).div_ceil(BLOCK);
        }
        if let (Some((src, size)), Some((off, _))) = (&self.efi, esp) {
            zeros(out, off - written * BLOCK)?;
            stream(out, src, *size, &mut buf)?;
            written = (off + size).div_ceil(BLOCK);
        }
        zeros(out, (end - written) * BLOCK)?;
        // the image's last byte, so that the skipped zeros before it are part of the file
        out.seek(SeekFrom::Start(end * BLOCK - 1))
            .map_err(out_err)?;
        out.write_all(&[0]).map_err(out_err)?;

        // ---- system area
        let total_sectors = end * 4;
        let mut mbr = [0u8; 512];
        if let Some(code) = &self.mbr_code {
            mbr[..446].copy_from_slice(code);
            if let Some(idx) = bios_file {
                let v = u64::from(flat.files[idx].lba) * 4 + 4;
                mbr[432..440].copy_from_slice(&v.to_le_bytes());
            }
        }
        let p1_start = u64::from(PART_OFFSET) * 4;
        let p1_len = part1_blocks * 4;
        match table {
            PartitionTable::None => {}
            PartitionTable::Mbr => {
                mbr[446..462].copy_from_slice(&mbr_entry(0x83, p1_start, p1_len));
                if let Some((off, size)) = esp {
                    mbr[462..478].copy_from_slice(&mbr_entry(0xEF, off / 512, size.div_ceil(512)));
                }
            }
            PartitionTable::Gpt => {
                let label = &self.opts.volume_id;
                let mut parts = vec![gpt::Partition {
                    number: 1,
                    name: "ISO9660".into(),
                    type_guid: BASIC_DATA,
                    guid: gpt::guid_from_label(&format!("{label}/ISO9660")),
                    first_lba: p1_start,
                    last_lba: p1_start + p1_len - 1,
                    attributes: 0x1000_0000_0000_0001,
                }];
                if let Some((off, size)) = esp {
                    parts.push(gpt::Partition {
                        number: 2,
                        name: "Appended2".into(),
                        type_guid: gpt::types::ESP,
                        guid: gpt::guid_from_label(&format!("{label}/Appended2")),
                        first_lba: off / 512,
                        last_lba: (off + size).div_ceil(512) - 1,
                        attributes: 0,
                    });
                }
                let layout = gpt::Layout {
                    sector_size: 512,
                    total_lbas: total_sectors,
                    disk_guid: gpt::guid_from_label(&format!("{label}/disk")),
                    entries_lba: 2,
                    first_usable: 34,
                    last_usable: total_sectors - 34,
                    partitions: parts,
                };
                layout.write(out)?;
                mbr[446..462].copy_from_slice(&mbr_entry(0xEE, 1, total_sectors - 1));
            }
        }
        if self.mbr_code.is_some() || table != PartitionTable::None {
            mbr[510] = 0x55;
            mbr[511] = 0xAA;
            out.seek(SeekFrom::Start(0)).map_err(out_err)?;
            out.write_all(&mbr).map_err(out_err)?;
        }
        out.seek(SeekFrom::Start(end * BLOCK)).map_err(out_err)?;
        out.flush().map_err(out_err)?;
        Ok(IsoStats {
            size: end * BLOCK,
            iso_blocks: iso_blocks as u32,
            catalog_lba: catalog,
            bios_image_lba: bios_file.map(|i| flat.files[i].lba),
            esp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(&date17(1_700_000_000)[..16], b"2023111422132000");
        assert_eq!(date7(951_782_400), [100, 2, 29, 0, 0, 0, 0]);
    }

    #[test]
    fn chs_values() {
        assert_eq!(chs(64), [2, 1, 0]);
        assert_eq!(chs(2047), [63, 32, 0]);
        assert_eq!(chs(2048), [0, 1, 1]);
        assert_eq!(chs(101_015), [20, 24, 49]);
    }
}
