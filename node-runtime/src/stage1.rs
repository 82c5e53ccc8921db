//! Stage 1: `/init` in the initramfs, from the kernel's hand to `/sbin/init` of the root.
//!
//! In boot order: the API filesystems (/proc, /sys, /dev, /run); PCR 11 extended with
//! `enter-initrd` (when there is a TPM); the `init stage=initramfs` line; the floor kernel modules (dependencies first); the root at /sysroot — `rootfs.sqsh`
//! on a read-only loop device, or, when the imager added system extensions
//! (`/extensions.yaml`, see `docs/formats/extensions.md`), a read-only overlay of the
//! extension images (the first on top) over it, with the extension firmware of the initramfs
//! as the kernel's firmware search path; PCR 11 extended with `leave-initrd`; then switch_root: the API filesystems move into
//! /sysroot, /sysroot moves over / (move-mount + chroot, as an initramfs cannot pivot_root)
//! and `/sbin/init` — node-runtime again, as stage 2 — is exec'd.
//!
//! In: the boot clock at `/init` (`start_ns`). Out: the mounted root and the exec, with
//! `start_ns` handed over in [`START_ENV`]; returns only on error.

use crate::console::{START_ENV, say};
use crate::{modules, mounts, security};
use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::ffi::CString;

/// Runs stage 1.
pub fn run(start_ns: u64) -> Result<()> {
    mounts::api_filesystems()?;
    security::measure_phase(security::ENTER_INITRD);
    let kver = modules::kernel_release()?;
    say(&format!("init stage=initramfs kernel={kver}"));
    modules::load_floor(&kver)?;
    mounts::mount_root()?;
    security::measure_phase(security::LEAVE_INITRD);
    switch_root(start_ns)
}

/// Moves /dev, /proc, /sys and /run into /sysroot, makes /sysroot the root and execs
/// `/sbin/init` with the boot clock in [`START_ENV`].
fn switch_root(start_ns: u64) -> Result<()> {
    for m in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("/sysroot{m}");
        mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .with_context(|| format!("moving {m} to {target}"))?;
    }
    std::env::set_current_dir("/sysroot").context("chdir /sysroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving /sysroot to /")?;
    nix::unistd::chroot(".").context("chroot")?;
    std::env::set_current_dir("/").context("chdir /")?;
    let init = CString::new("/sbin/init")?;
    let env = [CString::new(format!("{START_ENV}={start_ns}"))?];
    nix::unistd::execve(&init, std::slice::from_ref(&init), &env).context("exec /sbin/init")?;
    Ok(())
}
