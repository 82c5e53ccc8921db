//! Metadata: the tree and where the data went in, the inode table, directory table and the
//! entries of the fragment, export and xattr tables out.
//!
//! Inodes are written in post-order of a walk sorted by name bytes (a directory's children,
//! subtrees inlined, then the directory), as `mksquashfs` does, so that a directory's listing
//! and inode can refer to positions that are already known. Inode numbers follow the same
//! order (1 = the first inode written, the root is the last). A hard-linked inode is written
//! where the walk first meets it.

use std::collections::HashMap;
use std::collections::btree_map;

use crate::compress::BlockCompressor;
use crate::data::DataResult;
use crate::format::{self, MetaWriter, meta_ref};
use crate::{Kind, Node, Options, Result, SquashfsError};

/// Files in the order their data is read: a pre-order walk sorted by name, each inode once.
pub fn data_order(nodes: &[Node]) -> Vec<usize> {
    let mut seen = vec![false; nodes.len()];
    let mut order = Vec::new();
    let mut stack: Vec<btree_map::Iter<'_, String, usize>> = Vec::new();
    if let Kind::Dir { children } = &nodes[0].kind {
        stack.push(children.iter());
    }
    while let Some(it) = stack.last_mut() {
        let Some((_, &id)) = it.next() else {
            stack.pop();
            continue;
        };
        match &nodes[id].kind {
            Kind::Dir { children } => stack.push(children.iter()),
            Kind::File { .. } if !seen[id] => {
                seen[id] = true;
                order.push(id);
            }
            _ => {}
        }
    }
    order
}

/// Inode numbers in post-order (index = node id; 0 = unreachable) and their count.
fn number(nodes: &[Node]) -> (Vec<u32>, u32) {
    let mut ino = vec![0u32; nodes.len()];
    let mut next = 0u32;
    let mut stack: Vec<(usize, btree_map::Iter<'_, String, usize>)> = Vec::new();
    if let Kind::Dir { children } = &nodes[0].kind {
        stack.push((0, children.iter()));
    }
    while let Some((dir, it)) = stack.last_mut() {
        match it.next() {
            Some((_, &id)) => match &nodes[id].kind {
                Kind::Dir { children } => stack.push((id, children.iter())),
                _ if ino[id] == 0 => {
                    next += 1;
                    ino[id] = next;
                }
                _ => {}
            },
            None => {
                next += 1;
                ino[*dir] = next;
                stack.pop();
            }
        }
    }
    (ino, next)
}

pub struct Tables {
    /// compressed inode table
    pub inodes: Vec<u8>,
    /// compressed directory table
    pub dirs: Vec<u8>,
    /// uncompressed entries (16 bytes per fragment block)
    pub fragment_entries: Vec<u8>,
    /// uncompressed entries (8 bytes per inode number)
    pub export_entries: Vec<u8>,
    /// compressed xattr key/value metadata (empty when no xattrs)
    pub xattr_kv: Vec<u8>,
    /// uncompressed xattr id entries (16 bytes each)
    pub xattr_ids: Vec<u8>,
    pub inode_count: u32,
    pub root_ref: u64,
}

struct Entry<'a> {
    name: &'a str,
    block: u64,
    offset: u16,
    ino: u32,
    kind: u16,
}

struct Frame<'a> {
    id: usize,
    name: &'a str,
    it: btree_map::Iter<'a, String, usize>,
    entries: Vec<Entry<'a>>,
    subdirs: u32,
}

/// Xattr sets written so far: the key/value metadata and the id entries.
struct Xattrs<'a> {
    kv: MetaWriter,
    ids: Vec<u8>,
    known: HashMap<&'a [(String, Vec<u8>)], u32>,
}

impl<'a> Xattrs<'a> {
    fn id(&mut self, set: &'a [(String, Vec<u8>)], comp: &mut BlockCompressor) -> Result<u32> {
        if set.is_empty() {
            return Ok(format::INVALID_XATTR);
        }
        if let Some(&id) = self.known.get(set) {
            return Ok(id);
        }
        let (blk, off) = self.kv.pos();
        let mut b = Vec::new();
        for (name, value) in set {
            // names were checked when added: one of the prefixes matches
            let (prefix, ty) = format::XATTR_PREFIXES
                .iter()
                .find(|(p, _)| name.starts_with(p))
                .copied()
                .unwrap_or(("", 0));
            let short = &name[prefix.len()..];
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&(short.len() as u16).to_le_bytes());
            b.extend_from_slice(short.as_bytes());
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value);
        }
        self.kv.write(comp, &b)?;
        let id = (self.ids.len() / 16) as u32;
        self.ids
            .extend_from_slice(&meta_ref(blk, off).to_le_bytes());
        self.ids
            .extend_from_slice(&(set.len() as u32).to_le_bytes());
        self.ids.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.known.insert(set, id);
        Ok(id)
    }
}

fn header(b: &mut Vec<u8>, ty: u16, mode: u16, mtime: u32, ino: u32) {
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&mode.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // uid index: id 0
    b.extend_from_slice(&0u16.to_le_bytes()); // gid index: id 0
    b.extend_from_slice(&mtime.to_le_bytes());
    b.extend_from_slice(&ino.to_le_bytes());
}

fn u32_of(v: u64, path: &str, reason: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| SquashfsError::Limit {
        path: path.to_string(),
        reason,
    })
}

/// A directory listing: headers of at most 256 entries sharing an inode metadata block and
/// within an i16 inode-number delta of the header's, a new header (and an index entry) every
/// 8 KiB of listing as `mksquashfs` does. Returns the bytes and the index entries (position
/// in the listing, first name).
/// Index entries of a directory: position in the listing and the first name of the header.
type DirIndex<'a> = Vec<(u32, &'a str)>;

fn listing<'a>(entries: &[Entry<'a>], path: &str) -> Result<(Vec<u8>, DirIndex<'a>)> {
    let mut out = Vec::new();
    let mut index = Vec::new();
    let mut hdr: Option<(usize, u64, u32)> = None; // position, inode block, base inode number
    let mut count = 0u32;
    let mut last_index = 0usize;
    for e in entries {
        let esize = 8 + e.name.len();
        let need_index = out.len() + esize - last_index > format::METADATA_SIZE;
        let new = match hdr {
            None => true,
            Some((_, blk, base)) => {
                let delta = i64::from(e.ino) - i64::from(base);
                count as usize == format::DIR_HEADER_MAX
                    || blk != e.block
                    || !(i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&delta)
                    || need_index
            }
        };
        if new {
            if let Some((at, _, _)) = hdr {
                out[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
                if need_index {
                    index.push((out.len() as u32, e.name));
                    last_index = out.len();
                }
            }
            hdr = Some((out.len(), e.block, e.ino));
            count = 0;
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(
                &u32_of(e.block, path, "inode table larger than 4 GiB")?.to_le_bytes(),
            );
            out.extend_from_slice(&e.ino.to_le_bytes());
        }
        let base = hdr.map_or(0, |h| h.2);
        out.extend_from_slice(&e.offset.to_le_bytes());
        // within i16 by the header rule above
        out.extend_from_slice(&((i64::from(e.ino) - i64::from(base)) as i16).to_le_bytes());
        out.extend_from_slice(&e.kind.to_le_bytes());
        out.extend_from_slice(&((e.name.len() - 1) as u16).to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        count += 1;
    }
    if let Some((at, _, _)) = hdr {
        out[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
    }
    Ok((out, index))
}

pub fn write_tables(
    nodes: &[Node],
    order: &[usize],
    data: &DataResult,
    opts: &Options,
    comp: &mut BlockCompressor,
) -> Result<Tables> {
    let mtime = opts.mtime;
    let (inos, count) = number(nodes);
    let mut file_pos = vec![usize::MAX; nodes.len()];
    for (i, &id) in order.iter().enumerate() {
        file_pos[id] = i;
    }
    let mut inode_mw = MetaWriter::new();
    let mut dir_mw = MetaWriter::new();
    let mut xattrs = Xattrs {
        kv: MetaWriter::new(),
        ids: Vec::new(),
        known: HashMap::new(),
    };
    let mut refs = vec![0u64; count as usize];
    let mut written: Vec<Option<(u64, u16)>> = vec![None; nodes.len()];
    let mut b = Vec::new();

    let Kind::Dir { children } = &nodes[0].kind else {
        return Err(SquashfsError::Internal("the root is not a directory"));
    };
    let mut stack = vec![Frame {
        id: 0,
        name: "",
        it: children.iter(),
        entries: Vec::new(),
        subdirs: 0,
    }];
    let mut root_ref = 0;
    while let Some(frame) = stack.last_mut() {
        if let Some((name, &id)) = frame.it.next() {
            let node = &nodes[id];
            if let Kind::Dir { children } = &node.kind {
                frame.subdirs += 1;
                stack.push(Frame {
                    id,
                    name,
                    it: children.iter(),
                    entries: Vec::new(),
                    subdirs: 0,
                });
                continue;
            }
            let kind = match node.kind {
                Kind::Symlink { .. } => format::BASIC_SYMLINK,
                _ => format::BASIC_FILE,
            };
            let (blk, off) = match written[id] {
                Some(p) => p,
                None => {
                    b.clear();
                    let xid = xattrs.id(&node.xattrs, comp)?;
                    let ino = inos[id];
                    match &node.kind {
                        Kind::Symlink { target } => {
                            let ext = xid != format::INVALID_XATTR;
                            let ty = if ext {
                                format::EXT_SYMLINK
                            } else {
                                format::BASIC_SYMLINK
                            };
                            header(&mut b, ty, node.mode, mtime, ino);
                            b.extend_from_slice(&node.nlink.to_le_bytes());
                            b.extend_from_slice(&(target.len() as u32).to_le_bytes());
                            b.extend_from_slice(target.as_bytes());
                            if ext {
                                b.extend_from_slice(&xid.to_le_bytes());
                            }
                        }
                        _ => {
                            let fd = data
                                .files
                                .get(file_pos[id])
                                .ok_or(SquashfsError::Internal("file without data"))?;
                            let (frag, frag_off) = fd.frag.unwrap_or((format::INVALID_FRAG, 0));
                            let ext = fd.start > u64::from(u32::MAX)
                                || fd.size > u64::from(u32::MAX)
                                || node.nlink > 1
                                || xid != format::INVALID_XATTR
                                || fd.sparse > 0;
                            if ext {
                                header(&mut b, format::EXT_FILE, node.mode, mtime, ino);
                                b.extend_from_slice(&fd.start.to_le_bytes());
                                b.extend_from_slice(&fd.size.to_le_bytes());
                                b.extend_from_slice(&fd.sparse.to_le_bytes());
                                b.extend_from_slice(&node.nlink.to_le_bytes());
                                b.extend_from_slice(&frag.to_le_bytes());
                                b.extend_from_slice(&frag_off.to_le_bytes());
                                b.extend_from_slice(&xid.to_le_bytes());
                            } else {
                                header(&mut b, format::BASIC_FILE, node.mode, mtime, ino);
                                b.extend_from_slice(&(fd.start as u32).to_le_bytes());
                                b.extend_from_slice(&frag.to_le_bytes());
                                b.extend_from_slice(&frag_off.to_le_bytes());
                                b.extend_from_slice(&(fd.size as u32).to_le_bytes());
                            }
                            for w in &fd.blocks {
                                b.extend_from_slice(&w.to_le_bytes());
                            }
                        }
                    }
                    let p = inode_mw.pos();
                    inode_mw.write(comp, &b)?;
                    written[id] = Some(p);
                    refs[(ino - 1) as usize] = meta_ref(p.0, p.1);
                    p
                }
            };
            frame.entries.push(Entry {
                name,
                block: blk,
                offset: off,
                ino: inos[id],
                kind,
            });
            continue;
        }

        // the directory is complete: its listing, then its inode
        let Some(frame) = stack.pop() else { break };
        let node = &nodes[frame.id];
        let (bytes, index) = listing(&frame.entries, &node.path)?;
        let upos = dir_mw.uncompressed_len();
        let (dblk, doff) = dir_mw.pos();
        dir_mw.write(comp, &bytes)?;
        let xid = xattrs.id(&node.xattrs, comp)?;
        let ino = inos[frame.id];
        let parent = stack.last().map_or(count + 1, |p| inos[p.id]);
        let nlink = 2 + frame.subdirs;
        let file_size = bytes.len() as u64 + 3;
        let dblk32 = u32_of(dblk, &node.path, "directory table larger than 4 GiB")?;
        b.clear();
        if xid == format::INVALID_XATTR && index.is_empty() && file_size <= 0xffff {
            header(&mut b, format::BASIC_DIR, node.mode, mtime, ino);
            b.extend_from_slice(&dblk32.to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u16).to_le_bytes());
            b.extend_from_slice(&doff.to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
        } else {
            header(&mut b, format::EXT_DIR, node.mode, mtime, ino);
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(
                &u32_of(file_size, &node.path, "directory listing larger than 4 GiB")?
                    .to_le_bytes(),
            );
            b.extend_from_slice(&dblk32.to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
            let n = u16::try_from(index.len()).map_err(|_| SquashfsError::Limit {
                path: node.path.clone(),
                reason: "directory too large for its index",
            })?;
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&doff.to_le_bytes());
            b.extend_from_slice(&xid.to_le_bytes());
            for (at, name) in index {
                let start = dir_mw.block_start_of(upos + u64::from(at));
                b.extend_from_slice(&at.to_le_bytes());
                b.extend_from_slice(
                    &u32_of(start, &node.path, "directory table too large")?.to_le_bytes(),
                );
                b.extend_from_slice(&((name.len() - 1) as u32).to_le_bytes());
                b.extend_from_slice(name.as_bytes());
            }
        }
        let (iblk, ioff) = inode_mw.pos();
        inode_mw.write(comp, &b)?;
        refs[(ino - 1) as usize] = meta_ref(iblk, ioff);
        match stack.last_mut() {
            Some(parent) => {
                parent.entries.push(Entry {
                    name: frame.name,
                    block: iblk,
                    offset: ioff,
                    ino,
                    kind: format::BASIC_DIR,
                });
            }
            None => root_ref = meta_ref(iblk, ioff),
        }
    }

    let mut fragment_entries = Vec::with_capacity(data.fragments.len() * 16);
    for &(start, word) in &data.fragments {
        fragment_entries.extend_from_slice(&start.to_le_bytes());
        fragment_entries.extend_from_slice(&word.to_le_bytes());
        fragment_entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let export_entries = refs.iter().flat_map(|r| r.to_le_bytes()).collect();
    let xattr_kv = if xattrs.ids.is_empty() {
        Vec::new()
    } else {
        xattrs.kv.finish(comp)?
    };
    Ok(Tables {
        inodes: inode_mw.finish(comp)?,
        dirs: dir_mw.finish(comp)?,
        fragment_entries,
        export_entries,
        xattr_kv,
        xattr_ids: xattrs.ids,
        inode_count: count,
        root_ref,
    })
}
