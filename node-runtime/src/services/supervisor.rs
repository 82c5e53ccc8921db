//! Supervision of one extension service: dependencies, runs, restarts, logs, state lines.
//!
//! One thread per valid service, started by [`super::start`] at the end of stage 2. In: a
//! validated [`Service`] and the node's [`Readiness`]. Out: runs of the service (see
//! [`super::spawn`]) and one console line per state change:
//!
//! `node-runtime: service id=ext-<name> state=<Waiting|Preparing|Running|Finished|Failed> [reason="…"] [exit=N] [pid=N] [restarts=N]`
//!
//! `Waiting` (dependencies not met, or a restart backoff) → `Preparing` → `Running` (the
//! entrypoint was exec'd; `pid` is its host pid) → `Finished` (exit 0) or `Failed` (non-zero
//! exit, or it could not be started: `reason`). `restarts` counts the restarts before the
//! current run (omitted when 0). Restarts follow the policy with an exponential backoff
//! ([`Backoff`]); dependencies are waited for once, before the first run.

use super::config::{Dependency, Mount, Service};
use super::reaper::{self, Exit};
use super::spawn::{self, Plan, PlannedMount};
use crate::console::say;
use crate::readiness::{Phase, Readiness};
use nix::mount::MsFlags;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the per-run tmpfs (overlay upper/work and the new root) is mounted, in the
/// service's private mount namespace.
const RUN_DIR: &str = "/run/node-runtime/containers";
/// Where the logs go: `<LOG_DIR>/ext-<name>.log`.
pub const LOG_DIR: &str = "/system/log";
/// Host paths under which missing bind-mount sources are created.
const WRITABLE: &[&str] = &["/system", "/run", "/tmp", "/var"];
/// PATH given to services that set none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a run could not be started: the `reason` of its `Failed` line (one line of text).
#[derive(Debug)]
pub enum RunError {
    /// A file operation failed.
    Io {
        /// What was done, with the path (`opening /system/log/ext-a.log`).
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// A system call failed.
    Sys {
        /// Which one.
        what: &'static str,
        /// The error.
        errno: nix::errno::Errno,
    },
    /// A string handed to the child contains a NUL byte (`what` names it).
    Nul(String),
    /// A mount destination crosses a symlink in the container root.
    SymlinkDestination(PathBuf),
    /// A bind-mount source is missing (and not under a writable directory).
    MissingSource(PathBuf),
    /// The container root does not exist.
    NoRoot(PathBuf),
    /// The entrypoint is not in the container root.
    NoEntrypoint {
        /// The entrypoint as configured.
        entrypoint: String,
        /// The container root.
        root: PathBuf,
    },
    /// The entrypoint is a directory.
    EntrypointIsDir(String),
    /// The entrypoint is not executable.
    EntrypointNotExecutable(String),
    /// A line of the `environmentFile` is not `KEY=VALUE`.
    EnvFile {
        /// The file.
        file: PathBuf,
        /// The line.
        error: BadEnvLine,
    },
    /// More arguments or environment variables than [`spawn::MAX_ARGS`].
    TooManyArgs,
    /// Forking the run failed.
    Spawn(spawn::SpawnError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Sys { what, errno } => write!(f, "{what}: {errno}"),
            Self::Nul(what) => write!(f, "{what} contains a NUL byte"),
            Self::SymlinkDestination(d) => write!(
                f,
                "mount destination {} crosses a symlink in the container root",
                d.display()
            ),
            Self::MissingSource(s) => write!(f, "mount source {} does not exist", s.display()),
            Self::NoRoot(r) => write!(f, "container root {} does not exist", r.display()),
            Self::NoEntrypoint { entrypoint, root } => {
                write!(f, "entrypoint {entrypoint} not found in {}", root.display())
            }
            Self::EntrypointIsDir(e) => write!(f, "entrypoint {e} is a directory"),
            Self::EntrypointNotExecutable(e) => write!(f, "entrypoint {e} is not executable"),
            Self::EnvFile { file, error } => write!(f, "{}: {error}", file.display()),
            Self::TooManyArgs => write!(
                f,
                "more than {} arguments or environment variables",
                spawn::MAX_ARGS
            ),
            Self::Spawn(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<spawn::SpawnError> for RunError {
    fn from(e: spawn::SpawnError) -> Self {
        Self::Spawn(e)
    }
}

/// A file operation's error with what was done.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    move |error| RunError::Io {
        what: what.into(),
        error,
    }
}

/// A line of an `environmentFile` that is not `KEY=VALUE` (1-based).
#[derive(Debug)]
pub struct BadEnvLine(pub usize);

impl fmt::Display for BadEnvLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} is not KEY=VALUE", self.0)
    }
}

impl std::error::Error for BadEnvLine {}

/// Restart backoff: 1 s, doubling up to 30 s; back to 1 s after a run that lasted 30 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First delay.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(30);
    /// A run at least this long resets the delay.
    pub const RESET_AFTER: Duration = Duration::from_secs(30);

    /// A fresh schedule.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before restarting a run that lasted `uptime`.
    pub fn delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= Self::RESET_AFTER {
            self.next = Self::FIRST;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

/// One state line.
fn report(
    id: &str,
    state: &str,
    reason: Option<&str>,
    exit: Option<i32>,
    pid: Option<i32>,
    restarts: u32,
) {
    let mut l = format!("service id={id} state={state}");
    if let Some(r) = reason {
        l.push_str(&format!(" reason={r:?}"));
    }
    if let Some(e) = exit {
        l.push_str(&format!(" exit={e}"));
    }
    if let Some(p) = pid {
        l.push_str(&format!(" pid={p}"));
    }
    if restarts > 0 {
        l.push_str(&format!(" restarts={restarts}"));
    }
    if let Ok(mut m) = super::STATUS.lock() {
        m.insert(
            id.to_string(),
            super::Status {
                state: state.to_string(),
                reason: reason.map(str::to_string),
                exit,
                pid,
                restarts,
            },
        );
    }
    say(&l);
}

/// The service id a `service:` dependency names: `ext-<x>` as is; a bare name of a known
/// extension service gets the prefix; anything else (Talos's own services) as is.
pub fn dependency_id(name: &str, known: &[String]) -> String {
    if name.starts_with("ext-") {
        return name.to_string();
    }
    let ext = format!("ext-{name}");
    if known.contains(&ext) {
        ext
    } else {
        name.to_string()
    }
}

/// The dependencies of `svc` that are not met, described.
fn unmet(svc: &Service, hub: &Readiness, known: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for d in &svc.depends {
        match d {
            Dependency::Service(s) => {
                let id = dependency_id(s, known);
                if !hub.service_ok(&id) {
                    out.push(format!("service {id}"));
                }
            }
            Dependency::Path(p) => {
                if !p.exists() {
                    out.push(format!("path {}", p.display()));
                }
            }
            Dependency::Ready(k) => {
                if !hub.is_set(k) {
                    out.push(k.to_string());
                }
            }
            Dependency::Configuration => out.push("configuration".into()),
        }
    }
    if let Some(p) = &svc.environment_file
        && !p.exists()
    {
        out.push(format!("path {}", p.display()));
    }
    out
}

/// Blocks until every dependency is met, reporting `Waiting` whenever the unmet set changes.
fn wait_for_dependencies(svc: &Service, hub: &Readiness, known: &[String]) {
    let id = svc.id();
    let polls_paths = svc.environment_file.is_some()
        || svc.depends.iter().any(|d| matches!(d, Dependency::Path(_)));
    let timeout = if polls_paths {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(30)
    };
    let mut last = String::new();
    loop {
        let generation = hub.generation();
        let missing = unmet(svc, hub, known);
        if missing.is_empty() {
            return;
        }
        let reason = format!("waiting for {}", missing.join(", "));
        if reason != last {
            report(&id, "Waiting", Some(&reason), None, None, 0);
            last = reason;
        }
        hub.wait_change(generation, timeout);
    }
}

/// Supervises `svc` until its restart policy says stop (for `always`: forever).
pub fn supervise(svc: Service, hub: Arc<Readiness>, known: Arc<Vec<String>>) {
    let id = svc.id();
    wait_for_dependencies(&svc, &hub, &known);
    if super::STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let mut backoff = Backoff::new();
    let mut restarts = 0u32;
    loop {
        let (success, uptime) = run_once(&svc, &hub, restarts);
        if super::STOPPING.load(std::sync::atomic::Ordering::SeqCst) || !svc.restart.again(success)
        {
            return;
        }
        restarts += 1;
        let delay = backoff.delay(uptime);
        report(
            &id,
            "Waiting",
            Some(&format!("restarting in {}s", delay.as_secs())),
            None,
            None,
            restarts,
        );
        std::thread::sleep(delay);
        if super::STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
    }
}

/// One run: returns (exited 0, how long it ran).
fn run_once(svc: &Service, hub: &Readiness, restarts: u32) -> (bool, Duration) {
    let id = svc.id();
    report(&id, "Preparing", None, None, None, restarts);
    hub.set_phase(&id, Phase::Other);
    let failed = |reason: &str| {
        report(&id, "Failed", Some(reason), None, None, restarts);
        (false, Duration::ZERO)
    };
    let (stdio, logger, go) = match open_output(svc) {
        Ok(x) => x,
        Err(r) => return failed(&r.to_string()),
    };
    let plan = match prepare(svc, stdio) {
        Ok(p) => p,
        Err(r) => return failed(&r.to_string()),
    };
    let spawned = spawn::spawn(&plan);
    // the parent's copies of the service's stdio: closed, so the log pipe sees EOF
    drop(plan);
    let spawned = match spawned {
        Ok(s) => s,
        Err(r) => return failed(&RunError::from(r).to_string()),
    };
    if let Some(err) = spawned.error {
        let _ = reaper::wait(spawned.intermediate);
        drop(go);
        if let Some(h) = logger {
            let _ = h.join();
        }
        return failed(&err);
    }
    let started = Instant::now();
    report(&id, "Running", None, None, spawned.service, restarts);
    // the output comes after the Running line
    drop(go);
    hub.set_phase(&id, Phase::Running);
    let exit = reaper::wait(spawned.intermediate);
    let uptime = started.elapsed();
    // the output up to the exit comes before the exit line
    if let Some(h) = logger {
        let _ = h.join();
    }
    match exit {
        Some(Exit::Code(0)) => {
            hub.set_phase(&id, Phase::Succeeded);
            report(&id, "Finished", None, Some(0), None, restarts);
            (true, uptime)
        }
        Some(Exit::Code(c)) => {
            hub.set_phase(&id, Phase::Other);
            report(&id, "Failed", None, Some(c), None, restarts);
            (false, uptime)
        }
        Some(Exit::Signal(s)) => {
            hub.set_phase(&id, Phase::Other);
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| s.to_string());
            report(
                &id,
                "Failed",
                Some(&format!("killed by {name}")),
                None,
                None,
                restarts,
            );
            (false, uptime)
        }
        None => {
            hub.set_phase(&id, Phase::Other);
            report(
                &id,
                "Failed",
                Some("lost track of the process"),
                None,
                None,
                restarts,
            );
            (false, uptime)
        }
    }
}

/// The service's stdin (/dev/null), stdout and stderr (the log file, or a pipe to a thread
/// that copies lines to the log file and, prefixed with the id, to the console), the thread,
/// and what holds it back until dropped.
type Output = (
    [OwnedFd; 3],
    Option<std::thread::JoinHandle<()>>,
    std::sync::mpsc::Sender<()>,
);

fn open_output(svc: &Service) -> Result<Output, RunError> {
    let id = svc.id();
    std::fs::create_dir_all(LOG_DIR).map_err(io(format!("creating {LOG_DIR}")))?;
    let path = Path::new(LOG_DIR).join(format!("{id}.log"));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    let null = File::open("/dev/null").map_err(io("opening /dev/null"))?;
    let dup = |f: &File| f.try_clone().map_err(io("dup"));
    let (go, wait) = std::sync::mpsc::channel::<()>();
    if !svc.log_to_console {
        let err = dup(&log)?;
        return Ok(([null.into(), log.into(), err.into()], None, go));
    }
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| RunError::Sys {
            what: "pipe",
            errno,
        })?;
    let wr2 = wr.try_clone().map_err(io("dup"))?;
    let handle = std::thread::Builder::new()
        .name(format!("{id}-log"))
        .spawn(move || {
            // hold back until the run's Running (or Failed) line is out
            let _ = wait.recv();
            copy_lines(&id, File::from(rd), log)
        })
        .map_err(io("starting the log thread"))?;
    Ok(([null.into(), wr, wr2], Some(handle), go))
}

/// Copies the output of a run to the log file and the console until EOF.
fn copy_lines(id: &str, from: File, mut log: File) {
    let mut r = std::io::BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let _ = log.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{id}: {}",
                    text.trim_end_matches(['\n', '\r'])
                );
            }
        }
    }
}

fn cstr(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Nul(what.to_string()))
}

fn path_cstr(p: &Path) -> Result<CString, RunError> {
    use std::os::unix::ffi::OsStrExt;
    cstr(&p.display().to_string(), p.as_os_str().as_bytes())
}

/// `root` + absolute `inner`.
fn inside(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

/// Fails when a component of `dest` inside the container root `lower` is a symlink (the
/// mount would land outside the container).
fn check_no_symlink(lower: &Path, dest: &Path) -> Result<(), RunError> {
    let mut p = lower.to_path_buf();
    for c in dest.components().skip(1) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RunError::SymlinkDestination(dest.to_path_buf()));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Reads the deprecated `environmentFile`: `KEY=VALUE` lines (blank lines and `#` comments
/// skipped).
pub fn read_env_file(text: &str) -> Result<Vec<String>, BadEnvLine> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            Some((k, _)) if !k.is_empty() => out.push(l.to_string()),
            _ => return Err(BadEnvLine(i + 1)),
        }
    }
    Ok(out)
}

fn plan_mount(
    m: &Mount,
    lower: &Path,
    root: &Path,
    root_len: usize,
) -> Result<PlannedMount, RunError> {
    check_no_symlink(lower, &m.destination)?;
    let target = path_cstr(&inside(root, &m.destination))?;
    let extra = MsFlags::from_bits_truncate(m.flags as _);
    let propagation = MsFlags::from_bits_truncate(m.propagation as _);
    if m.bind {
        let src = m.source.as_deref().unwrap_or(Path::new("/"));
        if !src.exists() {
            if WRITABLE.iter().any(|w| src.starts_with(w)) {
                std::fs::create_dir_all(src)
                    .map_err(io(format!("creating mount source {}", src.display())))?;
            } else {
                return Err(RunError::MissingSource(src.to_path_buf()));
            }
        }
        let mut flags = MsFlags::MS_BIND | extra;
        if m.recursive {
            flags |= MsFlags::MS_REC;
        }
        Ok(PlannedMount {
            source: Some(path_cstr(src)?),
            target,
            root_len,
            fstype: None,
            flags,
            data: None,
            readonly_bind: m.readonly,
            propagation,
            file: !src.is_dir(),
        })
    } else {
        let mut flags = extra;
        if m.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        let source = match &m.source {
            Some(s) => path_cstr(s)?,
            None => cstr("type", m.fstype.as_str())?,
        };
        Ok(PlannedMount {
            source: Some(source),
            target,
            root_len,
            fstype: Some(cstr("type", m.fstype.as_str())?),
            flags,
            data: if m.data.is_empty() {
                None
            } else {
                Some(cstr("options", m.data.as_str())?)
            },
            readonly_bind: false,
            propagation,
            file: false,
        })
    }
}

/// Checks the container root and the entrypoint, creates missing writable mount sources,
/// and prepares the plan of one run.
fn prepare(svc: &Service, stdio: [OwnedFd; 3]) -> Result<Plan, RunError> {
    let lower = svc.root();
    if !lower.is_dir() {
        return Err(RunError::NoRoot(lower));
    }
    let exe = svc.entrypoint_abs();
    let host_exe = inside(&lower, Path::new(&exe));
    match std::fs::symlink_metadata(&host_exe) {
        Err(_) => {
            return Err(RunError::NoEntrypoint {
                entrypoint: svc.entrypoint.clone(),
                root: lower,
            });
        }
        Ok(m) if m.is_dir() => {
            return Err(RunError::EntrypointIsDir(svc.entrypoint.clone()));
        }
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 == 0 {
                return Err(RunError::EntrypointNotExecutable(svc.entrypoint.clone()));
            }
        }
    }
    let base = Path::new(RUN_DIR).join(&svc.name);
    std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
    let (upper, work, root) = (base.join("upper"), base.join("work"), base.join("root"));
    let root_len = root.as_os_str().len();
    let overlay_opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );

    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let special = |dest: &str, source: &str, fstype: Option<&str>, flags: MsFlags| {
        Ok::<_, RunError>(PlannedMount {
            source: Some(cstr(dest, source)?),
            target: path_cstr(&inside(&root, Path::new(dest)))?,
            root_len,
            fstype: fstype.map(|t| cstr(dest, t)).transpose()?,
            flags,
            data: None,
            readonly_bind: false,
            propagation: MsFlags::empty(),
            file: false,
        })
    };
    let mut sys_flags = nodev;
    if !svc.writeable_sysfs {
        sys_flags |= MsFlags::MS_RDONLY;
    }
    let mut mounts = vec![
        special("/proc", "proc", Some("proc"), nodev)?,
        special("/dev", "/dev", None, MsFlags::MS_BIND | MsFlags::MS_REC)?,
        special("/sys", "sysfs", Some("sysfs"), sys_flags)?,
    ];
    for m in &svc.mounts {
        mounts.push(plan_mount(m, &lower, &root, root_len)?);
    }

    let mut env = svc.environment.clone();
    if let Some(f) = &svc.environment_file {
        let text = std::fs::read_to_string(f).map_err(io(format!("reading {}", f.display())))?;
        env.extend(read_env_file(&text).map_err(|error| RunError::EnvFile {
            file: f.clone(),
            error,
        })?);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    let mut argv = vec![svc.entrypoint.clone()];
    argv.extend(svc.args.iter().cloned());
    if argv.len() > spawn::MAX_ARGS || env.len() > spawn::MAX_ARGS {
        return Err(RunError::TooManyArgs);
    }
    let paths = |v: &[PathBuf]| {
        v.iter()
            .map(|p| path_cstr(&inside(&root, p)))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Plan {
        lower: path_cstr(&lower)?,
        base: path_cstr(&base)?,
        upper: path_cstr(&upper)?,
        work: path_cstr(&work)?,
        overlay_opts: cstr("overlay options", overlay_opts)?,
        masked: paths(&svc.masked_paths)?,
        readonly: paths(&svc.readonly_paths)?,
        root: path_cstr(&root)?,
        mounts,
        readonly_root: !svc.writeable_rootfs,
        root_propagation: svc
            .rootfs_propagation
            .map(|p| MsFlags::from_bits_truncate(p as _)),
        exe: cstr("entrypoint", exe)?,
        argv: argv
            .into_iter()
            .map(|a| cstr("an argument", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .into_iter()
            .map(|e| cstr("an environment variable", e))
            .collect::<Result<_, _>>()?,
        stdio,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::config::Restart;
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let s = |n| Duration::from_secs(n);
        let got: Vec<u64> = (0..8).map(|_| b.delay(s(0)).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        // a long run resets the schedule
        assert_eq!(b.delay(s(30)), s(1));
        assert_eq!(b.delay(s(29)), s(2));
        assert_eq!(b.delay(s(5)), s(4));
        assert_eq!(b.delay(s(3600)), s(1));
    }

    #[test]
    fn restart_policies() {
        assert!(!Restart::Never.again(true) && !Restart::Never.again(false));
        assert!(Restart::Always.again(true) && Restart::Always.again(false));
        assert!(!Restart::UntilSuccess.again(true) && Restart::UntilSuccess.again(false));
    }

    #[test]
    fn dependency_ids() {
        let known = vec!["ext-a".to_string()];
        assert_eq!(dependency_id("ext-a", &known), "ext-a");
        assert_eq!(dependency_id("a", &known), "ext-a");
        assert_eq!(dependency_id("cri", &known), "cri");
        assert_eq!(dependency_id("ext-zz", &known), "ext-zz");
    }

    #[test]
    fn unmet_dependencies_are_described() {
        let hub = Readiness::new();
        let svc = super::super::config::parse(
            Path::new("/x.yaml"),
            "name: a\ncontainer:\n  entrypoint: ./a\nrestart: never\ndepends:\n  - service: b\n  - path: /nonexistent/x\n  - path: /\n  - network: [addresses]\n  - time: true\n  - configuration: true\n",
        )
        .unwrap();
        let known = vec!["ext-b".to_string()];
        assert_eq!(
            unmet(&svc, &hub, &known),
            [
                "service ext-b",
                "path /nonexistent/x",
                "network.addresses",
                "time",
                "configuration"
            ]
        );
        hub.set(crate::readiness::NET_ADDRESSES);
        hub.set_phase("ext-b", Phase::Running);
        assert_eq!(
            unmet(&svc, &hub, &known),
            ["path /nonexistent/x", "time", "configuration"]
        );
        // a one-shot dependency that finished successfully still counts
        hub.set_phase("ext-b", Phase::Succeeded);
        assert!(!unmet(&svc, &hub, &known).contains(&"service ext-b".to_string()));
        hub.set_phase("ext-b", Phase::Other);
        assert!(unmet(&svc, &hub, &known).contains(&"service ext-b".to_string()));
    }

    #[test]
    fn env_file() {
        assert_eq!(
            read_env_file("# c\n\nA=1\n B=x=y \n").unwrap(),
            ["A=1", "B=x=y"]
        );
        assert!(
            read_env_file("A=1\nnope\n")
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }

    /// The errors are console text (`state=Failed reason="…"`): exact strings.
    #[test]
    fn run_error_texts() {
        use nix::errno::Errno;
        let io = |what: &str| RunError::Io {
            what: what.into(),
            error: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        let fork_eagain = format!("fork: {}", Errno::EAGAIN.desc());
        let cases: Vec<(RunError, &str)> = vec![
            (
                io("opening /dev/null"),
                "opening /dev/null: No such file or directory (os error 2)",
            ),
            (
                RunError::Sys {
                    what: "pipe",
                    errno: Errno::EMFILE,
                },
                "pipe: EMFILE: Too many open files",
            ),
            (
                RunError::Nul("an argument".into()),
                "an argument contains a NUL byte",
            ),
            (
                RunError::SymlinkDestination("/etc/x".into()),
                "mount destination /etc/x crosses a symlink in the container root",
            ),
            (
                RunError::MissingSource("/s".into()),
                "mount source /s does not exist",
            ),
            (
                RunError::NoRoot("/usr/local/lib/containers/a".into()),
                "container root /usr/local/lib/containers/a does not exist",
            ),
            (
                RunError::NoEntrypoint {
                    entrypoint: "./missing".into(),
                    root: "/usr/local/lib/containers/no-entry".into(),
                },
                "entrypoint ./missing not found in /usr/local/lib/containers/no-entry",
            ),
            (
                RunError::EntrypointIsDir("./d".into()),
                "entrypoint ./d is a directory",
            ),
            (
                RunError::EntrypointNotExecutable("./f".into()),
                "entrypoint ./f is not executable",
            ),
            (
                RunError::EnvFile {
                    file: "/e".into(),
                    error: BadEnvLine(2),
                },
                "/e: line 2 is not KEY=VALUE",
            ),
            (
                RunError::TooManyArgs,
                "more than 1023 arguments or environment variables",
            ),
            (
                spawn::SpawnError::Pipe(Errno::EMFILE).into(),
                "pipe: EMFILE: Too many open files",
            ),
            (
                spawn::SpawnError::Fork(Some(Errno::EAGAIN)).into(),
                &fork_eagain,
            ),
            (spawn::SpawnError::Fork(None).into(), "fork: failed"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn symlinked_destinations_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        assert!(check_no_symlink(d.path(), Path::new("/real/dir/x")).is_ok());
        assert!(check_no_symlink(d.path(), Path::new("/missing/x")).is_ok());
        assert!(check_no_symlink(d.path(), Path::new("/link/x")).is_err());
        assert!(check_no_symlink(d.path(), Path::new("/link")).is_err());
    }
}
