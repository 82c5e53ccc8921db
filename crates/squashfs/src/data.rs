//! The data pipeline: file contents in walk order in, data blocks and fragment blocks out,
//! appended to the image in a fixed order, plus where every block went.
//!
//! - One reader thread hashes each file (SHA-256; small files are read once and kept, large
//!   ones are read twice from the page cache and checked not to have changed), drops
//!   duplicates before any compression, cuts the rest into blocks (all-zero full blocks become
//!   sparse), packs tail ends into fragment blocks, and numbers every block it sends (`seq`).
//! - `threads` workers compress blocks, each with its own reused compressor context.
//! - The calling thread writes finished blocks strictly in `seq` order, so the image does not
//!   depend on which worker finished first.
//!
//! Memory is bounded by a pool of `4 × threads + 4` block buffers: the reader takes a buffer
//! for every block it sends, the writer gives it back once the block is on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use sha2::{Digest, Sha256};

use crate::compress::BlockCompressor;
use crate::format::data_size_word;
use crate::{Options, Result, Source, SquashfsError};

/// Where a file's content went.
#[derive(Debug, Clone, Default)]
pub struct FileData {
    pub size: u64,
    /// position of the first stored block (0 when none)
    pub start: u64,
    /// size word per full block (0 = sparse)
    pub blocks: Vec<u32>,
    /// fragment index and offset in it
    pub frag: Option<(u32, u32)>,
    /// bytes in sparse blocks
    pub sparse: u64,
}

pub struct DataResult {
    /// per entry of the data order
    pub files: Vec<FileData>,
    /// per fragment block: position and size word
    pub fragments: Vec<(u64, u32)>,
    /// end of the data area
    pub end: u64,
    pub data_blocks: u64,
    pub duplicate_files: u32,
}

struct Job {
    seq: u64,
    buf: Vec<u8>,
}

struct Done {
    seq: u64,
    buf: Vec<u8>,
    compressed: bool,
}

#[derive(Default)]
struct Layout {
    size: u64,
    /// per full block: the seq of its job, or None when sparse
    blocks: Vec<Option<u64>>,
    frag: Option<(u32, u32)>,
    dup_of: Option<usize>,
}

struct ReaderOut {
    layouts: Vec<Layout>,
    frag_seqs: Vec<u64>,
    duplicates: u32,
}

/// Reads `buf` full up to `want` bytes or to EOF.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    r.take(want as u64).read_to_end(buf)
}

struct Reader {
    bs: usize,
    keep: usize,
    pool: Receiver<Vec<u8>>,
    jobs: Sender<Job>,
    spare: Option<Vec<u8>>,
    seq: u64,
    frag: Option<Vec<u8>>,
    frag_seqs: Vec<u64>,
}

fn aborted() -> SquashfsError {
    SquashfsError::Internal("the image writer stopped")
}

impl Reader {
    fn buf(&mut self) -> Result<Vec<u8>> {
        let mut b = match self.spare.take() {
            Some(b) => b,
            None => self.pool.recv().map_err(|_| aborted())?,
        };
        b.clear();
        Ok(b)
    }

    fn send(&mut self, buf: Vec<u8>) -> Result<u64> {
        let seq = self.seq;
        self.seq += 1;
        self.jobs.send(Job { seq, buf }).map_err(|_| aborted())?;
        Ok(seq)
    }

    /// One full block: sparse when all zero, else sent for compression.
    fn block(&mut self, buf: Vec<u8>) -> Result<Option<u64>> {
        if sparse::is_zero(&buf) {
            self.spare = Some(buf);
            Ok(None)
        } else {
            self.send(buf).map(Some)
        }
    }

    /// Packs a tail end into the current fragment block.
    fn tail(&mut self, data: &[u8]) -> Result<(u32, u32)> {
        if self
            .frag
            .as_ref()
            .is_some_and(|f| f.len() + data.len() > self.bs)
        {
            self.flush_frag()?;
        }
        let mut f = match self.frag.take() {
            Some(f) => f,
            None => self.buf()?,
        };
        let at = (self.frag_seqs.len() as u32, f.len() as u32);
        f.extend_from_slice(data);
        self.frag = Some(f);
        Ok(at)
    }

    fn flush_frag(&mut self) -> Result<()> {
        if let Some(f) = self.frag.take() {
            let seq = self.send(f)?;
            self.frag_seqs.push(seq);
        }
        Ok(())
    }

    /// Blocks and tail of content held in memory.
    fn mem(&mut self, data: &[u8], lay: &mut Layout) -> Result<()> {
        let mut chunks = data.chunks_exact(self.bs);
        for c in chunks.by_ref() {
            if sparse::is_zero(c) {
                lay.blocks.push(None);
            } else {
                let mut b = self.buf()?;
                b.extend_from_slice(c);
                let seq = self.send(b)?;
                lay.blocks.push(Some(seq));
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            lay.frag = Some(self.tail(rest)?);
        }
        Ok(())
    }

    fn run(mut self, sources: Vec<(Option<Source>, String)>) -> Result<ReaderOut> {
        let mut seen: HashMap<(u64, [u8; 32]), usize> = HashMap::new();
        let mut layouts = Vec::with_capacity(sources.len());
        let mut duplicates = 0;
        let mut small = Vec::new();
        for (i, (src, ipath)) in sources.into_iter().enumerate() {
            let mut lay = Layout::default();
            let Some(src) = src else {
                layouts.push(lay);
                continue;
            };
            let label = match &src {
                Source::Path(p) => format!("{ipath} (from {})", p.display()),
                Source::Bytes(_) => ipath.clone(),
            };
            let io_err = |what: &'static str| {
                let label = &label;
                move |source| SquashfsError::Io {
                    path: label.clone(),
                    what,
                    source,
                }
            };
            // 1. hash the content (keeping it when small)
            let mut file = None;
            let (size, hash) = match &src {
                Source::Bytes(b) => (b.len() as u64, Sha256::digest(b)),
                Source::Path(p) => {
                    let mut f = File::open(p).map_err(io_err("opening the source file"))?;
                    small.clear();
                    let n = fill(&mut f, &mut small, self.keep + 1)
                        .map_err(io_err("reading the source file"))?;
                    if n <= self.keep {
                        (n as u64, Sha256::digest(&small))
                    } else {
                        let mut h = Sha256::new();
                        h.update(&small);
                        let mut total = n as u64;
                        loop {
                            small.clear();
                            let n = fill(&mut f, &mut small, self.keep)
                                .map_err(io_err("reading the source file"))?;
                            if n == 0 {
                                break;
                            }
                            h.update(&small);
                            total += n as u64;
                        }
                        small.clear();
                        file = Some(f);
                        (total, h.finalize())
                    }
                }
            };
            lay.size = size;
            if size > 0 {
                let key = (size, <[u8; 32]>::from(hash));
                if let Some(&first) = seen.get(&key) {
                    lay.dup_of = Some(first);
                    duplicates += 1;
                    layouts.push(lay);
                    continue;
                }
                seen.insert(key, i);
            }
            // 2. blocks and tail
            match (&src, file) {
                (Source::Bytes(b), _) => self.mem(b, &mut lay)?,
                (Source::Path(_), None) => {
                    let data = std::mem::take(&mut small);
                    let r = self.mem(&data, &mut lay);
                    small = data;
                    r?;
                }
                (Source::Path(_), Some(mut f)) => {
                    f.rewind().map_err(io_err("reading the source file"))?;
                    let mut h = Sha256::new();
                    let mut total = 0u64;
                    loop {
                        let mut b = self.buf()?;
                        let n = fill(&mut f, &mut b, self.bs)
                            .map_err(io_err("reading the source file"))?;
                        h.update(&b);
                        total += n as u64;
                        if n == self.bs {
                            let seq = self.block(b)?;
                            lay.blocks.push(seq);
                        } else {
                            if n > 0 {
                                lay.frag = Some(self.tail(&b)?);
                            }
                            self.spare = Some(b);
                            break;
                        }
                    }
                    if total != size || h.finalize() != hash {
                        return Err(SquashfsError::Io {
                            path: label,
                            what: "source file changed while being read",
                            source: io::Error::from(io::ErrorKind::InvalidData),
                        });
                    }
                }
            }
            layouts.push(lay);
        }
        self.flush_frag()?;
        Ok(ReaderOut {
            layouts,
            frag_seqs: self.frag_seqs,
            duplicates,
        })
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, done: Sender<Result<Done>>, mut comp: BlockCompressor) {
    let mut scratch = Vec::new();
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let Job { seq, mut buf } = job;
        let r = comp.compress(&buf, &mut scratch).map(|compressed| {
            if compressed {
                buf.clear();
                buf.extend_from_slice(&scratch);
            }
            Done {
                seq,
                buf,
                compressed,
            }
        });
        let failed = r.is_err();
        if done.send(r).is_err() || failed {
            return;
        }
    }
}

/// In-order writer: returns (position, size word) per seq and the end position.
fn write_in_order<W: Write>(
    out: &mut W,
    mut pos: u64,
    done: Receiver<Result<Done>>,
    pool: Sender<Vec<u8>>,
) -> Result<(Vec<(u64, u32)>, u64)> {
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut placed = Vec::new();
    for d in done {
        let d = d?;
        pending.insert(d.seq, d);
        while let Some(d) = pending.remove(&(placed.len() as u64)) {
            out.write_all(&d.buf).map_err(SquashfsError::Write)?;
            placed.push((pos, data_size_word(d.buf.len(), d.compressed)));
            pos += d.buf.len() as u64;
            // the reader may have finished: a closed pool is fine
            let _ = pool.send(d.buf);
        }
    }
    if !pending.is_empty() {
        return Err(SquashfsError::Internal("a block went missing"));
    }
    Ok((placed, pos))
}

/// Runs the pipeline over `sources` (one per entry of the data order; `None` for entries that
/// are not files), writing blocks to `out` from image position `start`.
pub fn write_data<W: Write>(
    opts: &Options,
    threads: usize,
    sources: Vec<(Option<Source>, String)>,
    out: &mut W,
    start: u64,
) -> Result<DataResult> {
    let bs = opts.block_size as usize;
    let (pool_tx, pool_rx) = mpsc::channel();
    for _ in 0..4 * threads + 4 {
        let _ = pool_tx.send(Vec::with_capacity(bs));
    }
    let (job_tx, job_rx) = mpsc::channel();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel();
    let comps = (0..threads)
        .map(|_| BlockCompressor::new(&opts.compression, opts.block_size))
        .collect::<Result<Vec<_>>>()?;

    let (written, reader_out) = std::thread::scope(|s| {
        let reader = Reader {
            bs,
            keep: 8 * bs,
            pool: pool_rx,
            jobs: job_tx,
            spare: None,
            seq: 0,
            frag: None,
            frag_seqs: Vec::new(),
        };
        let reader = s.spawn(move || reader.run(sources));
        let workers = comps
            .into_iter()
            .map(|c| {
                let done = done_tx.clone();
                let jobs = &job_rx;
                s.spawn(move || worker(jobs, done, c))
            })
            .collect::<Vec<_>>();
        drop(done_tx);
        let written = write_in_order(out, start, done_rx, pool_tx);
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        let r = reader.join();
        let reader_out = match r {
            Ok(r) => r,
            Err(_) => Err(SquashfsError::Internal("the reader thread panicked")),
        };
        if panicked {
            return (
                Err(SquashfsError::Internal("a compressor thread panicked")),
                reader_out,
            );
        }
        (written, reader_out)
    });
    // an error of the writer (or a worker) explains a reader stopped by it
    match (written, reader_out) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(w), Ok(r)) => Ok(assemble(w, r, opts.block_size)),
    }
}

fn assemble((placed, end): (Vec<(u64, u32)>, u64), r: ReaderOut, block_size: u32) -> DataResult {
    let mut files: Vec<FileData> = Vec::with_capacity(r.layouts.len());
    for lay in &r.layouts {
        let fd = match lay.dup_of.and_then(|j| files.get(j)) {
            Some(orig) => orig.clone(),
            None => {
                let mut fd = FileData {
                    size: lay.size,
                    frag: lay.frag,
                    ..FileData::default()
                };
                let mut stored = false;
                for b in &lay.blocks {
                    match b.and_then(|s| placed.get(s as usize)) {
                        Some(&(at, word)) => {
                            if !stored {
                                fd.start = at;
                                stored = true;
                            }
                            fd.blocks.push(word);
                        }
                        None => {
                            fd.blocks.push(0);
                            fd.sparse += u64::from(block_size);
                        }
                    }
                }
                fd
            }
        };
        files.push(fd);
    }
    let fragments = r
        .frag_seqs
        .iter()
        .filter_map(|&s| placed.get(s as usize).copied())
        .collect::<Vec<_>>();
    DataResult {
        data_blocks: (placed.len() - fragments.len()) as u64,
        files,
        fragments,
        end,
        duplicate_files: r.duplicates,
    }
}
