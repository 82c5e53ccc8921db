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
            // held until the exit: no directory of this process is created or dropped after
            // this point (a thread that tries waits on the lock)
            let active = ACTIVE.lock();
            if let Ok(a) = &active {
                remove_while_running(a);
                eprintln!("imager: interrupted (signal {sig}); temporary files removed");
            }
            std::process::exit(128 + sig);
        }
    });
}

/// How long a removed directory's place is held by a plain file, so that the threads still
/// writing into it fail instead of creating it again.
const TOMBSTONE_HOLD: Duration = Duration::from_millis(50);

/// Removes `dirs` while the build's threads may still be writing into them. Each directory is
/// first renamed away (`<dir>.gone<N>`, still a build directory's name, so a later build's
/// sweep finds what a crash here would leave) and a plain file takes its place at once, so
/// that the threads' paths under it fail from then on rather than making it again (a rename
/// is retried if one did in between); the renamed trees are then removed, and after
/// [`TOMBSTONE_HOLD`] the plain files too.
fn remove_while_running(dirs: &[PathBuf]) {
    let mut stones = Vec::new();
    let mut gone = Vec::new();
    for d in dirs {
        for n in 0..100 {
            let mut away = d.clone().into_os_string();
            away.push(format!(".gone{n}"));
            match std::fs::rename(d, &away) {
                Ok(()) => gone.push(PathBuf::from(away)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => continue,
            }
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(d)
                .is_ok()
            {
                stones.push(d);
                break;
            }
        }
    }
    for g in &gone {
        // a thread may still add an entry through a descriptor it holds
        for _ in 0..10 {
            if std::fs::remove_dir_all(g).is_ok() {
                break;
            }
        }
    }
    std::thread::sleep(TOMBSTONE_HOLD);
    for s in stones {
        let _ = std::fs::remove_file(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that keeps making directories and files under a build directory while it is
    /// removed: afterwards nothing is left, and the thread failed instead of making it again.
    #[test]
    fn removal_while_a_thread_writes_leaves_nothing() {
        let mut total = 0;
        for round in 0..20 {
            let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let d = t.path().join(".imager-build.x");
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("{e}"));
            let started = std::sync::Arc::new(std::sync::Barrier::new(2));
            // (only a removal that never stops the writer needs this)
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let d = d.clone();
                let (started, stop) = (started.clone(), stop.clone());
                std::thread::spawn(move || {
                    started.wait();
                    for i in 0u64.. {
                        let sub = d.join(format!("staging/{}/{}", i % 7, i % 13));
                        if stop.load(std::sync::atomic::Ordering::SeqCst)
                            || std::fs::create_dir_all(&sub).is_err()
                            || std::fs::write(sub.join(format!("f{i}")), b"x").is_err()
                        {
                            return i;
                        }
                    }
                    unreachable!()
                })
            };
            started.wait();
            std::thread::sleep(Duration::from_millis(2 + round % 5));
            remove_while_running(std::slice::from_ref(&d));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let wrote = writer.join().unwrap_or_else(|_| panic!("writer panicked"));
            total += wrote;
            let left = dir_names(t.path());
            assert!(
                left.is_empty(),
                "round {round}: {left:?} left behind after {wrote} writes"
            );
        }
        assert!(total > 0, "the writer never wrote");
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
