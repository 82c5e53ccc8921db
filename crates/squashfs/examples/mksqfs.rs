//! `mksqfs SRC_DIR OUT [--comp zstd|xz] [--level N] [--threads N] [--mtime N] [--block-size N]`:
//! writes SRC_DIR as a SquashFS image with `Builder::add_dir_tree` and prints the stats and the
//! wall time (used by `bench/squashfs.sh`).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use squashfs::{Builder, Compression, Options};

fn usage() -> ExitCode {
    eprintln!(
        "usage: mksqfs SRC_DIR OUT [--comp zstd|xz] [--level N] [--threads N] [--mtime N] [--block-size N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut comp = "zstd".to_string();
    let mut level = 18i32;
    let mut opts = Options::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Option<u64> {
            let v = it.next()?;
            match v.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    eprintln!("{name}: not a number: {v}");
                    None
                }
            }
        };
        match a.as_str() {
            "--comp" => match it.next() {
                Some(c) => comp = c,
                None => return usage(),
            },
            "--level" => match num("--level").and_then(|n| i32::try_from(n).ok()) {
                Some(n) => level = n,
                None => return usage(),
            },
            "--threads" => match num("--threads").and_then(|n| usize::try_from(n).ok()) {
                Some(n) => opts.threads = n,
                None => return usage(),
            },
            "--mtime" => match num("--mtime").and_then(|n| u32::try_from(n).ok()) {
                Some(n) => opts.mtime = n,
                None => return usage(),
            },
            "--block-size" => match num("--block-size").and_then(|n| u32::try_from(n).ok()) {
                Some(n) => opts.block_size = n,
                None => return usage(),
            },
            _ if a.starts_with("--") => return usage(),
            _ => pos.push(a),
        }
    }
    let [src, out] = &pos[..] else {
        return usage();
    };
    opts.compression = match comp.as_str() {
        "zstd" => Compression::Zstd { level },
        "xz" => Compression::Xz,
        _ => return usage(),
    };
    let t = Instant::now();
    let run = || -> Result<squashfs::Stats, Box<dyn std::error::Error>> {
        let mut b = Builder::new(opts);
        b.add_dir_tree(&PathBuf::from(src), "")?;
        let f = File::create(out)?;
        Ok(b.write(BufWriter::with_capacity(1 << 20, f))?)
    };
    match run() {
        Ok(s) => {
            println!(
                "{out}: {} bytes, {} inodes, {} data blocks, {} fragments, {} duplicate files, {:.3} s",
                s.bytes,
                s.inodes,
                s.data_blocks,
                s.fragments,
                s.duplicate_files,
                t.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
