//! Benchmark driver: `post <xz|gz|zst|tar.gz> IN OUT THREADS` compresses IN into OUT with the
//! Talos defaults (xz -0, gzip -6, zstd -18, tar member `disk.raw`, epoch from
//! `SOURCE_DATE_EPOCH` or 0) and prints the elapsed seconds on stderr.

use std::process::ExitCode;
use std::time::Instant;

use postfmt::{Format, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: post <xz|gz|zst|tar.gz> IN OUT THREADS");
        ExitCode::from(2)
    };
    let [_, fmt, src, dst, threads] = args.as_slice() else {
        return usage();
    };
    let (Some(fmt), Ok(threads)) = (Format::from_suffix(fmt), threads.parse::<usize>()) else {
        return usage();
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let opts = Options {
        epoch,
        threads,
        ..Options::default()
    };
    let start = Instant::now();
    let result = std::fs::File::create(dst)
        .map_err(|e| e.to_string())
        .and_then(|mut f| {
            postfmt::compress(fmt, src.as_ref(), &mut f, &opts).map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => {
            eprintln!("{:.3}", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("post: {e}");
            ExitCode::FAILURE
        }
    }
}
