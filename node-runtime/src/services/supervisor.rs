//! Supervision of one extension service: dependencies, runs, restarts, logs, state lines.
//!
//! In: a validated [`Service`] and the node's [`Readiness`]. Out: runs of the service (see
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
use super::{Phase, Readiness, say};
use nix::mount::MsFlags;
use std::ffi::CString;
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
const WRITABLE: &[&str] = &["/system", "/run", "/tmp"];
/// PATH given to services that set none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    let mut backoff = Backoff::new();
    let mut restarts = 0u32;
    loop {
        let (success, uptime) = run_once(&svc, &hub, restarts);
        if !svc.restart.again(success) {
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
        Err(r) => return failed(&r),
    };
    let plan = match prepare(svc, stdio) {
        Ok(p) => p,
        Err(r) => return failed(&r),
    };
    let spawned = spawn::spawn(&plan);
    // the parent's copies of the service's stdio: closed, so the log pipe sees EOF
    drop(plan);
    let spawned = match spawned {
        Ok(s) => s,
        Err(r) => return failed(&r),
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

fn open_output(svc: &Service) -> Result<Output, String> {
    let id = svc.id();
    std::fs::create_dir_all(LOG_DIR).map_err(|e| format!("creating {LOG_DIR}: {e}"))?;
    let path = Path::new(LOG_DIR).join(format!("{id}.log"));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let dup = |f: &File| f.try_clone().map_err(|e| format!("dup: {e}"));
    let (go, wait) = std::sync::mpsc::channel::<()>();
    if !svc.log_to_console {
        let err = dup(&log)?;
        return Ok(([null.into(), log.into(), err.into()], None, go));
    }
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let wr2 = wr.try_clone().map_err(|e| format!("dup: {e}"))?;
    let handle = std::thread::Builder::new()
        .name(format!("{id}-log"))
        .spawn(move || {
            // hold back until the run's Running (or Failed) line is out
            let _ = wait.recv();
            copy_lines(&id, File::from(rd), log)
        })
        .map_err(|e| format!("starting the log thread: {e}"))?;
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

fn cstr(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn path_cstr(p: &Path) -> Result<CString, String> {
    use std::os::unix::ffi::OsStrExt;
    cstr(&p.display().to_string(), p.as_os_str().as_bytes())
}

/// `root` + absolute `inner`.
fn inside(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

/// Fails when a component of `dest` inside the container root `lower` is a symlink (the
/// mount would land outside the container).
fn check_no_symlink(lower: &Path, dest: &Path) -> Result<(), String> {
    let mut p = lower.to_path_buf();
    for c in dest.components().skip(1) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "mount destination {} crosses a symlink in the container root",
                    dest.display()
                ));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Reads the deprecated `environmentFile`: `KEY=VALUE` lines (blank lines and `#` comments
/// skipped).
pub fn read_env_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            Some((k, _)) if !k.is_empty() => out.push(l.to_string()),
            _ => return Err(format!("line {} is not KEY=VALUE", i + 1)),
        }
    }
    Ok(out)
}

fn plan_mount(
    m: &Mount,
    lower: &Path,
    root: &Path,
    root_len: usize,
) -> Result<PlannedMount, String> {
    check_no_symlink(lower, &m.destination)?;
    let target = path_cstr(&inside(root, &m.destination))?;
    let extra = MsFlags::from_bits_truncate(m.flags as _);
    let propagation = MsFlags::from_bits_truncate(m.propagation as _);
    if m.bind {
        let src = m.source.as_deref().unwrap_or(Path::new("/"));
        if !src.exists() {
            if WRITABLE.iter().any(|w| src.starts_with(w)) {
                std::fs::create_dir_all(src)
                    .map_err(|e| format!("creating mount source {}: {e}", src.display()))?;
            } else {
                return Err(format!("mount source {} does not exist", src.display()));
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
fn prepare(svc: &Service, stdio: [OwnedFd; 3]) -> Result<Plan, String> {
    let lower = svc.root();
    if !lower.is_dir() {
        return Err(format!("container root {} does not exist", lower.display()));
    }
    let exe = svc.entrypoint_abs();
    let host_exe = inside(&lower, Path::new(&exe));
    match std::fs::symlink_metadata(&host_exe) {
        Err(_) => {
            return Err(format!(
                "entrypoint {} not found in {}",
                svc.entrypoint,
                lower.display()
            ));
        }
        Ok(m) if m.is_dir() => {
            return Err(format!("entrypoint {} is a directory", svc.entrypoint));
        }
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 == 0 {
                return Err(format!("entrypoint {} is not executable", svc.entrypoint));
            }
        }
    }
    let base = Path::new(RUN_DIR).join(&svc.name);
    std::fs::create_dir_all(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
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
        Ok::<_, String>(PlannedMount {
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
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        env.extend(read_env_file(&text).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    let mut argv = vec![svc.entrypoint.clone()];
    argv.extend(svc.args.iter().cloned());
    if argv.len() > spawn::MAX_ARGS || env.len() > spawn::MAX_ARGS {
        return Err(format!(
            "more than {} arguments or environment variables",
            spawn::MAX_ARGS
        ));
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
        hub.set(crate::services::NET_ADDRESSES);
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
        assert!(read_env_file("A=1\nnope\n").unwrap_err().contains("line 2"));
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
