//! The few system calls that need `unsafe`: loop device and watchdog ioctls. Everything else
//! goes through `nix`'s safe wrappers.
//!
//! In: a backing file. Out: a read-only loop block device bound to it (LOOP_CONFIGURE, Linux ≥5.8).
#![allow(unsafe_code)]

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Binds `backing` to a free loop device, read-only, and returns the device path.
pub fn loop_attach_ro(backing: &Path) -> Result<PathBuf> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (is the loop module loaded?)")?;
    let file = File::open(backing).with_context(|| format!("opening {}", backing.display()))?;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index or -1.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            bail!("LOOP_CTL_GET_FREE: {}", std::io::Error::last_os_error());
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let lo = OpenOptions::new()
            .read(true)
            .open(&dev)
            .with_context(|| format!("opening {}", dev.display()))?;
        let mut cfg = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        let name = backing.as_os_str().as_encoded_bytes();
        let l = name.len().min(LO_NAME_SIZE - 1);
        cfg.info.lo_file_name[..l].copy_from_slice(&name[..l]);
        // SAFETY: cfg is a properly initialised `struct loop_config` that outlives the call.
        let r = unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok(dev);
        }
        let err = std::io::Error::last_os_error();
        // another user grabbed the device between GET_FREE and CONFIGURE: try the next one
        if err.raw_os_error() != Some(libc::EBUSY) {
            bail!("LOOP_CONFIGURE {}: {err}", dev.display());
        }
    }
    bail!("no free loop device for {}", backing.display())
}

/// Runs `path` with `args` (argv without argv\[0\]) and the environment `env` in a private
/// mount namespace (mounts it makes stay its own), stdout and stderr on the console, and
/// waits for it through PID 1's reaper. Returns its exit.
pub fn run_in_mount_ns(
    path: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<crate::services::reaper::Exit> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    // everything the child touches is allocated before the fork
    let prog = CString::new(path.as_os_str().as_bytes()).context("program path")?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(CString::new(a.as_str()).context("argument")?);
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .context("environment")?;
    let argv_p: Vec<*const libc::c_char> = argv
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_p: Vec<*const libc::c_char> = envp
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let pid = crate::services::reaper::fork_watched(|| {
        // SAFETY: the child only makes async-signal-safe system calls on data prepared above
        // and ends in execve or _exit
        match unsafe { libc::fork() } {
            0 => unsafe {
                let null = std::ptr::null();
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        null,
                        c"/".as_ptr(),
                        null,
                        libc::MS_REC | libc::MS_PRIVATE,
                        null.cast(),
                    ) != 0
                {
                    libc::_exit(126);
                }
                libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
                libc::_exit(127)
            },
            p if p > 0 => Some(nix::unistd::Pid::from_raw(p)),
            _ => None,
        }
    })
    .ok_or_else(|| anyhow::anyhow!("fork: {}", std::io::Error::last_os_error()))?;
    crate::services::reaper::wait(pid).ok_or_else(|| anyhow::anyhow!("{pid} was not watched"))
}

// <linux/watchdog.h>
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);

/// WDIOC_SETTIMEOUT: asks `secs`; returns what the driver took.
pub fn watchdog_set_timeout(dev: &File, secs: i32) -> nix::Result<i32> {
    let mut t: libc::c_int = secs;
    // SAFETY: `dev` is open and `t` a valid int the driver reads and writes
    unsafe { wdioc_settimeout(dev.as_raw_fd(), &mut t) }?;
    Ok(t)
}

/// WDIOC_GETTIMEOUT.
pub fn watchdog_get_timeout(dev: &File) -> nix::Result<i32> {
    let mut t: libc::c_int = 0;
    // SAFETY: as above; the driver writes the timeout into `t`
    unsafe { wdioc_gettimeout(dev.as_raw_fd(), &mut t) }?;
    Ok(t)
}

/// WDIOC_KEEPALIVE.
pub fn watchdog_keepalive(dev: &File) -> nix::Result<()> {
    let mut dummy: libc::c_int = 0;
    // SAFETY: as above
    unsafe { wdioc_keepalive(dev.as_raw_fd(), &mut dummy) }.map(|_| ())
}
