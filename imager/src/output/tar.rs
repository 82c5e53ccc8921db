//! `--tar-to-stdout`: the output directory's files as one reproducible `.tar.gz` stream.

use crate::error::{ExitCode, Result, WithCode};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `dir`'s regular files (sorted, not recursive) as a .tar.gz to `out`: owner 0,
/// mode 0644, mtime `epoch` (`--tar-to-stdout`).
pub fn tar_gz_dir(dir: &Path, epoch: i64, out: impl Write) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .code(ExitCode::Io, || format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let gz =
        postfmt::ParallelGzEncoder::new(out, 6, 0).code(ExitCode::Io, || "starting gzip".into())?;
    let mut t = tar::Builder::new(gz);
    t.mode(tar::HeaderMode::Deterministic);
    for n in &names {
        let path = dir.join(n);
        let mut f =
            File::open(&path).code(ExitCode::Io, || format!("reading {}", path.display()))?;
        let len = f
            .metadata()
            .code(ExitCode::Io, || format!("stat {}", path.display()))?
            .len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(u64::try_from(epoch).unwrap_or(0));
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, n, &mut f)
            .code(ExitCode::Io, || format!("writing {n} to stdout"))?;
    }
    let gz = t
        .into_inner()
        .code(ExitCode::Io, || "finishing tar".into())?;
    let mut w = gz.finish().code(ExitCode::Io, || "finishing gzip".into())?;
    w.flush().code(ExitCode::Io, || "finishing gzip".into())?;
    Ok(())
}
