//! A sandbox for foreign code: an overlay's installer program (docs/formats/overlays.md
//! "Sandbox").
//!
//! The program runs in new user, mount, network, IPC and UTS namespaces, in a root of its own:
//! an empty read-only tmpfs holding only the bind mounts it is given (its binary and the
//! overlay's artifacts read-only, a scratch disk file and a staging directory writable), with
//! `no_new_privs`, an empty environment, no network (a new network namespace has only a
//! down loopback), in its own process group killed as a whole when the time runs out, and
//! with its output bounded. Nothing of the host's filesystem is visible to it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, ExitCode, Result};

/// One bind mount into the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    /// The host path (a file or a directory).
    pub host: PathBuf,
    /// Where it appears inside (absolute, one component below `/`).
    pub inside: &'static str,
    /// Writable, or read-only.
    pub writable: bool,
}

/// Bound on what the program may print (stdout and stderr each).
const MAX_OUTPUT: u64 = 1 << 20;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        Error::new(
            ExitCode::Unknown,
            anyhow::anyhow!("a path with a NUL byte: {}", p.display()),
        )
    })
}

/// The locked mount flags of `path`'s mount, which a read-only remount in a user namespace
/// must keep.
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(c) = cstr(path) else { return 0 };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut m = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            m |= ms_flag;
        }
    }
    m
}

/// Runs `program arg` in a sandbox rooted at the empty directory `root`, with `stdin` and
/// the `binds`; returns its stdout. `what` names the program in errors; a failure of the
/// program (exit status, timeout, too much output) is the input's fault (exit code 2), a
/// failure to build the sandbox the environment's.
pub fn run(
    what: &str,
    program: &Path,
    arg: &str,
    stdin: &[u8],
    binds: &[Bind],
    root: &Path,
    timeout: Duration,
) -> Result<Vec<u8>> {
    std::fs::create_dir_all(root).map_err(|e| {
        Error::new(
            ExitCode::Io,
            anyhow::anyhow!("creating {}: {e}", root.display()),
        )
    })?;
    let mut all = vec![Bind {
        host: program.to_path_buf(),
        inside: "/installer",
        writable: false,
    }];
    all.extend(binds.iter().cloned());
    // everything the child needs, allocated before fork
    struct Planned {
        src: CString,
        dst: CString,
        file: bool,
        ro_flags: Option<libc::c_ulong>,
    }
    let mut plans = Vec::new();
    for b in &all {
        plans.push(Planned {
            src: cstr(&b.host)?,
            dst: cstr(&root.join(b.inside.trim_start_matches('/')))?,
            file: !b.host.is_dir(),
            ro_flags: (!b.writable).then(|| locked_flags(&b.host)),
        });
    }
    let root_c = cstr(root)?;
    let uid_map = format!("0 {} 1\n", unsafe { libc::getuid() });
    let gid_map = format!("0 {} 1\n", unsafe { libc::getgid() });
    let mut cmd = Command::new("/installer");
    cmd.arg(arg)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    fn fail() -> std::io::Error {
        std::io::Error::last_os_error()
    }
    fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(fail());
        }
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        unsafe { libc::close(fd) };
        if n < 0 { Err(fail()) } else { Ok(()) }
    }
    // SAFETY: between fork and exec the closure only makes system calls on data prepared
    // above (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(fail());
            }
            if libc::unshare(
                libc::CLONE_NEWUSER
                    | libc::CLONE_NEWNS
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS,
            ) != 0
            {
                return Err(fail());
            }
            // setgroups is absent on old kernels; the maps are not
            let _ = write_file(c"/proc/self/setgroups", b"deny");
            write_file(c"/proc/self/uid_map", uid_map.as_bytes())?;
            write_file(c"/proc/self/gid_map", gid_map.as_bytes())?;
            let null = std::ptr::null();
            if libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            ) != 0
            {
                return Err(fail());
            }
            if libc::mount(
                c"sandbox".as_ptr(),
                root_c.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=64k,mode=0755".as_ptr().cast(),
            ) != 0
            {
                return Err(fail());
            }
            for p in &plans {
                if p.file {
                    let fd = libc::open(
                        p.dst.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o600,
                    );
                    if fd < 0 {
                        return Err(fail());
                    }
                    libc::close(fd);
                } else if libc::mkdir(p.dst.as_ptr(), 0o755) != 0 {
                    return Err(fail());
                }
                if libc::mount(
                    p.src.as_ptr(),
                    p.dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    null.cast(),
                ) != 0
                {
                    return Err(fail());
                }
                if let Some(flags) = p.ro_flags
                    && libc::mount(
                        null,
                        p.dst.as_ptr(),
                        null,
                        libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | flags,
                        null.cast(),
                    ) != 0
                {
                    return Err(fail());
                }
            }
            if libc::chdir(root_c.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                return Err(fail());
            }
            // the root itself (the tmpfs) read-only: only the writable binds take writes
            if libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                null.cast(),
            ) != 0
            {
                return Err(fail());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(fail());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(
            ExitCode::Environment,
            anyhow::anyhow!(
                "{what}: cannot start it in a sandbox (user and mount namespaces): {e}"
            ),
        )
    })?;
    let pid = child.id() as libc::pid_t;
    let input = stdin.to_vec();
    let mut sin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = sin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut over = false;
            if let Some(r) = r {
                let mut r = r.take(MAX_OUTPUT + 1);
                let _ = r.read_to_end(&mut v);
                over = v.len() as u64 > MAX_OUTPUT;
                // drain the rest so the program never blocks on a full pipe
                let _ = std::io::copy(&mut r.into_inner(), &mut std::io::sink());
            }
            (v, over)
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    // wait without reaping (WNOWAIT), so that the group id stays the program's until its
    // group is killed, whatever it left running
    let mut timed_out = false;
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r != 0 {
            return Err(Error::new(
                ExitCode::Environment,
                anyhow::anyhow!(
                    "{what}: waiting for it: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        if unsafe { info.si_pid() } != 0 {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    let status = child.wait().ok().filter(|_| !timed_out);
    let _ = writer.join();
    let (stdout, out_over) = out.join().unwrap_or_default();
    let (stderr, _) = err.join().unwrap_or_default();
    let stderr = crate::error::printable(&String::from_utf8_lossy(&stderr))
        .trim()
        .to_string();
    match status {
        None => Err(Error::invalid(format!(
            "{what} {arg}: did not finish within {} s and was killed",
            timeout.as_secs()
        ))),
        Some(s) if !s.success() => Err(Error::invalid(format!(
            "{what} {arg}: {s}{}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        ))),
        Some(_) if out_over => Err(Error::invalid(format!(
            "{what} {arg}: printed more than {MAX_OUTPUT} bytes"
        ))),
        Some(_) => Ok(stdout),
    }
}
