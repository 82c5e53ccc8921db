//! The build's private directory: `<output>/.imager-build.<random>/`, where every temporary
//! file, the staging tree and half-written artifacts live until they are renamed into place.
//!
//! - Nothing temporary sits beside the artifacts, so nothing can be mistaken for one.
//! - The build holds an exclusive `flock` on `<dir>/lock` for its whole life. A later build
//!   removes every `.imager-build.*` directory whose lock it can take (its owner is gone,
//!   e.g. SIGKILLed), and never one whose lock is held (a concurrent build).
//! - SIGINT, SIGTERM and SIGHUP remove the directories of the running build before the process
//!   exits (with 128 + the signal number); a normal return or an error removes them on drop.

use crate::error::{ExitCode, Result, WithCode};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Prefix of build directories.
pub const PREFIX: &str = ".imager-build.";

/// A directory without its lock file yet is left alone this long (its build may be between
/// creating the directory and locking it, a matter of microseconds).
const UNLOCKED_GRACE: Duration = Duration::from_secs(5);

/// Directories of builds running in this process (removed by the signal handler).
static ACTIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A build's private directory; removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    dir: Scratch,
    _lock: File,
}

impl WorkDir {
    /// Creates the output directory if needed, removes what dead builds left, and creates and
    /// locks this build's directory.
    pub fn create(out: &Path) -> Result<Self> {
        std::fs::create_dir_all(out).code(ExitCode::Io, || {
            format!("creating output directory {}", out.display())
        })?;
        sweep(out);
        let dir = Scratch::create(out, PREFIX).code(ExitCode::Io, || {
            format!("creating a build directory in {}", out.display())
        })?;
        let lock_path = dir.path().join("lock");
        let lock = File::create(&lock_path)
            .code(ExitCode::Io, || format!("creating {}", lock_path.display()))?;
        lock.lock()
            .code(ExitCode::Io, || format!("locking {}", lock_path.display()))?;
        Ok(Self { dir, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A private directory, removed when dropped and on SIGINT, SIGTERM and SIGHUP: a build's
/// own directory inside the output directory ([`WorkDir`]), or the output directory of
/// `--tar-to-stdout` without `--output`.
#[derive(Debug)]
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    /// Creates `<parent>/<prefix>XXXXXX` (mode 0700).
    pub fn create(parent: &Path, prefix: &str) -> std::io::Result<Self> {
        let d = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        if let Ok(mut a) = ACTIVE.lock() {
            a.push(d.path().to_path_buf());
        }
        Ok(Self(Some(d)))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new("."), |d| d.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            if let Ok(mut a) = ACTIVE.lock() {
                a.retain(|p| p != d.path());
            }
            drop(d);
        }
    }
}

/// Removes the directories of dead builds in `out` (best effort: a failure leaves them for
/// the next build).
fn sweep(out: &Path) {
    let Ok(rd) = std::fs::read_dir(out) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // never follow a link out of the output directory
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        let stale = match File::open(dir.join("lock")) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Starts the thread that cleans up on SIGINT, SIGTERM and SIGHUP, then exits with
/// 128 + the signal number.
pub fn handle_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            if let Ok(a) = ACTIVE.lock() {
                for d in a.iter() {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
            eprintln!("imager: interrupted (signal {sig}); temporary files removed");
            std::process::exit(128 + sig);
        }
    });
}
