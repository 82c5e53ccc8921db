//! Starting one run of an extension service: fork, namespaces, mounts, exec.
//!
//! Called by the supervisor for every run of a service. In: a [`Plan`] — everything the
//! child needs, prepared (and allocated) by the supervisor before forking. Out: the pid of
//! the *intermediate* process (the one the supervisor waits for, through the reaper) and,
//! once the entrypoint was exec'd, the host pid of the service process — or the reason it
//! could not be started ([`SpawnError`] if it could not even be forked).
//!
//! Process tree of one run:
//!
//! ```text
//! node-runtime (PID 1)
//! └── intermediate: unshare(CLONE_NEWNS|CLONE_NEWPID), mounts made private, waits for the
//!     │             service and exits with its status (128+N when killed by signal N)
//!     └── service: PID 1 of the new PID namespace; builds the container root and execs
//! ```
//!
//! The container root: a tmpfs at `/run/node-runtime/containers/<name>` (in the private mount
//! namespace only) holds the upper and work directories of an overlay whose lower layer is
//! `/usr/local/lib/containers/<name>`, so mount points can be created and `writeableRootfs`
//! gets an ephemeral writable root (if overlayfs refuses, the root is bind-mounted as is).
//! Then the requested mounts, a fresh /proc, the host /dev (rbind), /sys (read-only unless
//! `writeableSysfs`), masked and read-only paths, the root remounted read-only unless
//! `writeableRootfs`, `pivot_root` (or move + chroot if that is refused), execve.
//!
//! Between fork and exec the children only use what the plan holds, report errors through
//! the status pipe from a stack buffer, and end with `_exit`. The status pipe carries
//! `P<pid>\n` (from the intermediate) and `E<reason>\n` (from either child on failure); it is
//! close-on-exec, so EOF without an `E` means the entrypoint was exec'd.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::ffi::{CStr, CString, c_char};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// One mount, resolved for the child.
pub struct PlannedMount {
    /// Source (`None` for filesystems without one).
    pub source: Option<CString>,
    /// Absolute host path of the target (inside the new root before pivoting).
    pub target: CString,
    /// Length of the new root prefix of `target` (directories below it are created).
    pub root_len: usize,
    /// Filesystem type for non-bind mounts.
    pub fstype: Option<CString>,
    /// Mount flags (`MS_BIND`, `MS_REC`, `MS_NOSUID`…).
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: Option<CString>,
    /// Remount read-only after a bind.
    pub readonly_bind: bool,
    /// Propagation flags to apply afterwards (empty: none).
    pub propagation: MsFlags,
    /// The target is a file (bind of a non-directory), not a directory.
    pub file: bool,
}

/// Everything a run needs, prepared before forking.
pub struct Plan {
    /// The container root on the host (overlay lower layer).
    pub lower: CString,
    /// The tmpfs mount point for the overlay's upper/work directories.
    pub base: CString,
    /// `<base>/upper`, `<base>/work`, `<base>/root`.
    pub upper: CString,
    /// Overlay work directory.
    pub work: CString,
    /// The new root.
    pub root: CString,
    /// `lowerdir=…,upperdir=…,workdir=…`.
    pub overlay_opts: CString,
    /// Requested mounts, then /proc, /dev, /sys.
    pub mounts: Vec<PlannedMount>,
    /// Masked paths, as host paths inside the new root.
    pub masked: Vec<CString>,
    /// Read-only paths, as host paths inside the new root.
    pub readonly: Vec<CString>,
    /// Remount the root read-only.
    pub readonly_root: bool,
    /// Propagation of the new root, if set.
    pub root_propagation: Option<MsFlags>,
    /// The entrypoint inside the container.
    pub exe: CString,
    /// argv (owned).
    pub argv: Vec<CString>,
    /// envp (owned).
    pub envp: Vec<CString>,
    /// stdin, stdout, stderr of the service.
    pub stdio: [OwnedFd; 3],
}

/// Why [`spawn`] could not fork the run.
#[derive(Debug)]
pub enum SpawnError {
    /// The status pipe could not be created.
    Pipe(Errno),
    /// `fork` failed (`None`: no error number).
    Fork(Option<Errno>),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pipe(e) => write!(f, "pipe: {e}"),
            Self::Fork(e) => write!(f, "fork: {}", e.map(|e| e.desc()).unwrap_or("failed")),
        }
    }
}

impl std::error::Error for SpawnError {}

/// The result of [`spawn`].
pub struct Spawned {
    /// The intermediate process (wait for it with the reaper).
    pub intermediate: Pid,
    /// Host pid of the service process, if the intermediate got to fork it.
    pub service: Option<i32>,
    /// Why the entrypoint was not exec'd, if it was not.
    pub error: Option<String>,
}

/// A message in a stack buffer (no allocation between fork and exec).
struct Msg {
    buf: [u8; 1024],
    len: usize,
}

impl Msg {
    fn new() -> Self {
        Self {
            buf: [0; 1024],
            len: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn lossy(c: &[u8]) -> &str {
    std::str::from_utf8(c).unwrap_or("<non-UTF-8 path>")
}

/// Ends a forked child at once (no atexit handlers, no stdio flushing).
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only terminates the calling process.
    unsafe { libc::_exit(code) }
}

/// Reports `what path: errno` on the status pipe and exits 127.
fn fail(status: BorrowedFd<'_>, what: &str, path: &[u8], e: Errno) -> ! {
    let mut m = Msg::new();
    let _ = write!(m, "E{what}");
    if !path.is_empty() {
        let _ = write!(m, " {}", lossy(path));
    }
    let _ = writeln!(m, ": {}", e.desc());
    let _ = nix::unistd::write(status, m.bytes());
    exit_now(127)
}

/// Starts one run. Never blocks longer than the child takes to exec (or fail).
pub fn spawn(plan: &Plan) -> Result<Spawned, SpawnError> {
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let mut fork_err = None;
    let pid = super::reaper::fork_watched(|| {
        // SAFETY: the child only calls async-signal-safe functions (raw syscalls through nix
        // on data prepared before the fork, writes from a stack buffer) and ends in execve or
        // _exit; it never returns into the caller.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => intermediate(plan, wr),
            Ok(ForkResult::Parent { child }) => Some(child),
            Err(e) => {
                fork_err = Some(e);
                None
            }
        }
    });
    // (`wr` moved into the closure and is closed here in the parent)
    let Some(intermediate) = pid else {
        return Err(SpawnError::Fork(fork_err));
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match nix::unistd::read(&rd, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.len() < 8192 {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out);
    let mut s = Spawned {
        intermediate,
        service: None,
        error: None,
    };
    for l in text.lines() {
        if let Some(p) = l.strip_prefix('P') {
            s.service = p.parse().ok();
        } else if let Some(e) = l.strip_prefix('E') {
            s.error.get_or_insert_with(|| e.to_string());
        }
    }
    if s.service.is_none() && s.error.is_none() {
        s.error = Some("the service process was not started".into());
    }
    Ok(s)
}

/// Closes every descriptor from 3 up except `keep`.
fn close_others(keep: i32) {
    let keep = keep as u32;
    // SAFETY: close_range only closes descriptors; the ones closed here are not used again
    // by this (forked, single-threaded) process.
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, u32::MAX, 0);
    }
}

/// The intermediate process (child of node-runtime).
fn intermediate(plan: &Plan, status: OwnedFd) -> ! {
    let st = status.as_fd();
    let [i, o, e] = &plan.stdio;
    if let Err(err) = nix::unistd::dup2_stdin(i)
        .and_then(|_| nix::unistd::dup2_stdout(o))
        .and_then(|_| nix::unistd::dup2_stderr(e))
    {
        fail(st, "dup2", b"", err);
    }
    close_others(st.as_raw_fd());
    if let Err(err) = nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_NEWPID,
    ) {
        fail(st, "unshare", b"", err);
    }
    if let Err(err) = mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&CStr>,
    ) {
        fail(st, "making mounts private", b"", err);
    }
    // SAFETY: as above — this process is single-threaded, and the grandchild execs or exits.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => service(plan, st),
        Ok(ForkResult::Parent { child }) => child,
        Err(err) => fail(st, "fork", b"", err),
    };
    let mut m = Msg::new();
    let _ = writeln!(m, "P{}", child.as_raw());
    let _ = nix::unistd::write(st, m.bytes());
    drop(status);
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => exit_now(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => exit_now(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => exit_now(126),
        }
    }
}

/// `mkdir -p` of the directories of `path` below `root_len` bytes (the new root), and of
/// `path` itself unless `file` (then an empty file is created).
fn make_target(path: &[u8], root_len: usize, file: bool) -> Result<(), Errno> {
    let mut i = root_len + 1;
    while i < path.len() {
        if path[i] == b'/' {
            mkdir_exist_ok(&path[..i])?;
        }
        i += 1;
    }
    if file {
        match nix::sys::stat::stat(path) {
            Ok(_) => Ok(()),
            Err(_) => nix::fcntl::open(
                path,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop),
        }
    } else {
        mkdir_exist_ok(path)
    }
}

fn mkdir_exist_ok(p: &[u8]) -> Result<(), Errno> {
    match nix::unistd::mkdir(p, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => {
            // a read-only layer refuses even existing directories with EROFS on some paths
            if nix::sys::stat::stat(p).is_ok() {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

fn is_dir(p: &CStr) -> Option<bool> {
    nix::sys::stat::stat(p)
        .ok()
        .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The service process: PID 1 of its PID namespace.
fn service(plan: &Plan, st: BorrowedFd<'_>) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: restoring the default disposition installs no handler (Rust's runtime set
    // SIGPIPE to ignored in node-runtime, and ignored dispositions survive execve).
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = nix::unistd::setsid();

    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Err(e) = mount(
        Some(c"tmpfs"),
        plan.base.as_c_str(),
        Some(c"tmpfs"),
        nodev,
        Some(c"mode=0700"),
    ) {
        fail(st, "mounting tmpfs on", plan.base.as_bytes(), e);
    }
    for d in [&plan.upper, &plan.work, &plan.root] {
        if let Err(e) = mkdir_exist_ok(d.as_bytes()) {
            fail(st, "mkdir", d.as_bytes(), e);
        }
    }
    let overlay = mount(
        Some(c"overlay"),
        plan.root.as_c_str(),
        Some(c"overlay"),
        MsFlags::empty(),
        Some(plan.overlay_opts.as_c_str()),
    );
    if overlay.is_err()
        && let Err(e) = mount(
            Some(plan.lower.as_c_str()),
            plan.root.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&CStr>,
        )
    {
        fail(
            st,
            "bind-mounting the container root",
            plan.lower.as_bytes(),
            e,
        );
    }

    for m in &plan.mounts {
        if let Err(e) = make_target(m.target.as_bytes(), m.root_len, m.file) {
            fail(st, "creating mount point", m.target.as_bytes(), e);
        }
        if let Err(e) = mount(
            m.source.as_deref(),
            m.target.as_c_str(),
            m.fstype.as_deref(),
            m.flags,
            m.data.as_deref(),
        ) {
            fail(st, "mounting", m.target.as_bytes(), e);
        }
        if m.readonly_bind
            && let Err(e) = mount(
                None::<&CStr>,
                m.target.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | m.flags,
                None::<&CStr>,
            )
        {
            fail(st, "remounting read-only", m.target.as_bytes(), e);
        }
        if !m.propagation.is_empty()
            && let Err(e) = mount(
                None::<&CStr>,
                m.target.as_c_str(),
                None::<&CStr>,
                m.propagation,
                None::<&CStr>,
            )
        {
            fail(st, "setting propagation of", m.target.as_bytes(), e);
        }
    }

    for p in &plan.masked {
        let r = match is_dir(p) {
            None => Ok(()),
            Some(true) => mount(
                Some(c"tmpfs"),
                p.as_c_str(),
                Some(c"tmpfs"),
                MsFlags::MS_RDONLY | nodev | MsFlags::MS_NOEXEC,
                None::<&CStr>,
            ),
            Some(false) => mount(
                Some(c"/dev/null"),
                p.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND,
                None::<&CStr>,
            ),
        };
        if let Err(e) = r {
            fail(st, "masking", p.as_bytes(), e);
        }
    }
    for p in &plan.readonly {
        if is_dir(p).is_none() {
            continue;
        }
        let r = mount(
            Some(p.as_c_str()),
            p.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&CStr>,
        )
        .and_then(|()| {
            mount(
                None::<&CStr>,
                p.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&CStr>,
            )
        });
        if let Err(e) = r {
            fail(st, "making read-only", p.as_bytes(), e);
        }
    }

    if plan.readonly_root
        && let Err(e) = mount(
            None::<&CStr>,
            plan.root.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&CStr>,
        )
    {
        fail(st, "remounting the root read-only", plan.root.as_bytes(), e);
    }

    if let Err(e) = nix::unistd::chdir(plan.root.as_c_str()) {
        fail(st, "chdir", plan.root.as_bytes(), e);
    }
    if nix::unistd::pivot_root(c".", c".").is_ok() {
        // the old root is stacked on the new one: detach it
        if let Err(e) = umount2(c".", MntFlags::MNT_DETACH) {
            fail(st, "detaching the old root", b"", e);
        }
    } else {
        // pivot_root refused (e.g. a shared ancestor): move the new root over / and chroot
        if let Err(e) = mount(
            Some(c"."),
            c"/",
            None::<&CStr>,
            MsFlags::MS_MOVE,
            None::<&CStr>,
        )
        .and_then(|()| nix::unistd::chroot(c"."))
        {
            fail(st, "entering the container root", plan.root.as_bytes(), e);
        }
    }
    if let Err(e) = nix::unistd::chdir(c"/") {
        fail(st, "chdir", b"/", e);
    }
    if let Some(p) = plan.root_propagation
        && let Err(e) = mount(None::<&CStr>, c"/", None::<&CStr>, p, None::<&CStr>)
    {
        fail(st, "setting rootfs propagation", b"/", e);
    }

    let argv: ArgvPtrs = ptrs(&plan.argv);
    let envp: ArgvPtrs = ptrs(&plan.envp);
    // SAFETY: exe, argv and envp are NUL-terminated strings owned by the plan, and the
    // pointer arrays are NULL-terminated; execve only returns on failure.
    unsafe {
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(st, "exec", plan.exe.as_bytes(), Errno::last())
}

/// Most arguments (or environment entries) a plan may hold: the pointer arrays are built on
/// the stack after the fork, with a terminating NULL.
pub const MAX_ARGS: usize = 1023;

type ArgvPtrs = [*const c_char; MAX_ARGS + 1];

fn ptrs(v: &[CString]) -> ArgvPtrs {
    let mut a: ArgvPtrs = [std::ptr::null(); MAX_ARGS + 1];
    for (slot, s) in a.iter_mut().take(MAX_ARGS).zip(v) {
        *slot = s.as_ptr();
    }
    a
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn make_target_creates_parents_and_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        let t = format!("{root}/a/b/c");
        make_target(t.as_bytes(), root.len(), false).unwrap();
        assert!(std::path::Path::new(&t).is_dir());
        let f = format!("{root}/x/y/file");
        make_target(f.as_bytes(), root.len(), true).unwrap();
        assert!(std::path::Path::new(&f).is_file());
        // idempotent
        make_target(f.as_bytes(), root.len(), true).unwrap();
        make_target(t.as_bytes(), root.len(), false).unwrap();
    }

    #[test]
    fn argv_pointers_are_null_terminated() {
        let v = vec![CString::new("a").unwrap(), CString::new("b").unwrap()];
        let p = ptrs(&v);
        assert_eq!(p[0], v[0].as_ptr());
        assert_eq!(p[1], v[1].as_ptr());
        assert!(p[2].is_null());
    }

    #[test]
    fn msg_truncates() {
        let mut m = Msg::new();
        for _ in 0..200 {
            let _ = write!(m, "0123456789");
        }
        assert_eq!(m.bytes().len(), 1024);
    }
}
