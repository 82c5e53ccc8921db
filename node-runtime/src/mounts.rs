//! The mounts of both stages, in boot order.
//!
//! Stage 1 (initramfs): [`api_filesystems`] mounts /proc, /sys, /dev (devtmpfs) and /run;
//! after the floor modules are loaded, [`mount_root`] attaches `/rootfs.sqsh` (and the
//! extension images named by `/extensions.yaml`, see `docs/formats/extensions.md`) to
//! read-only loop devices and mounts the root at /sysroot — the squashfs alone or a read-only
//! overlay — with the initramfs firmware bind-mounted over /usr/lib/firmware. Stage 1 then
//! moves everything into /sysroot and switches root.
//!
//! Stage 2 (rootfs): [`writable`] mounts /system and /tmp (tmpfs) and bind-mounts
//! /etc/hosts and /etc/resolv.conf from /system/etc, which the network rewrites later.
//!
//! In: the paths above. Out: the mounts, and console lines `rootfs device=…`, `extension
//! name=…`, `rootfs overlay layers=…`, `firmware path=…`.

use crate::console::say;
use crate::sys;
use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use std::path::Path;

/// Where stage 1 keeps the squashfs mounts of an overlay root (inside /run, which moves into
/// the new root with everything mounted under it), and a copy of `extensions.yaml` that
/// stage 2 reads for the ready line.
pub const LAYERS_DIR: &str = "/run/node-runtime";

/// Mounts `fstype` from `src` on `target` (created first if missing).
pub fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target).ok();
    mount(Some(src), target, Some(fstype), flags, data)
        .with_context(|| format!("mounting {fstype} on {target}"))
}

/// Stage 1, first step: the API filesystems /proc, /sys, /dev and /run.
pub fn api_filesystems() -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fs("proc", "/proc", "proc", nodev, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nodev, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// Binds `image` to a read-only loop device and mounts it (squashfs) on `target`; returns
/// the device path.
fn attach_squashfs(image: &str, target: &str) -> Result<String> {
    let dev = sys::loop_attach_ro(Path::new(image))?;
    let dev = dev.to_string_lossy().into_owned();
    mount_fs(&dev, target, "squashfs", MsFlags::MS_RDONLY, None)
        .with_context(|| format!("mounting {image}"))?;
    Ok(dev)
}

/// Mounts the root at /sysroot: `rootfs.sqsh` alone, or — when the initramfs carries
/// `extensions.yaml` — an overlay whose lower layers are the extension images in
/// extensions.yaml order (the first on top) over the rootfs. Firmware moved into the
/// initramfs by the imager is bind-mounted over /usr/lib/firmware and becomes the kernel's
/// firmware search path.
pub fn mount_root() -> Result<()> {
    let Ok(text) = std::fs::read_to_string("/extensions.yaml") else {
        let dev = attach_squashfs("/rootfs.sqsh", "/sysroot")?;
        say(&format!("rootfs device={dev} fstype=squashfs ro"));
        return Ok(());
    };
    let cfg = sysext::Config::parse(&text).context("/extensions.yaml")?;
    let base = format!("{LAYERS_DIR}/rootfs");
    let dev = attach_squashfs("/rootfs.sqsh", &base)?;
    say(&format!("rootfs device={dev} fstype=squashfs ro"));
    let mut lower = Vec::new();
    for (i, l) in cfg.layers.iter().enumerate() {
        let target = format!("{LAYERS_DIR}/layers/{i}");
        let dev = attach_squashfs(&format!("/{}", l.image), &target)?;
        say(&format!(
            "extension name={} version={} image={} device={dev}",
            l.metadata.name, l.metadata.version, l.image
        ));
        lower.push(target);
    }
    lower.push(base);
    let opts = format!("lowerdir={}", lower.join(":"));
    mount_fs(
        "overlay",
        "/sysroot",
        "overlay",
        MsFlags::MS_RDONLY,
        Some(&opts),
    )?;
    std::fs::copy("/extensions.yaml", format!("{LAYERS_DIR}/extensions.yaml"))
        .context("keeping extensions.yaml")?;
    say(&format!("rootfs overlay layers={} ro", cfg.layers.len()));
    extension_firmware();
    Ok(())
}

/// Bind-mounts the initramfs's /usr/lib/firmware (read-only) over the new root's and makes it
/// the kernel's firmware search path. Failures are reported, not fatal.
fn extension_firmware() {
    let fw = "/usr/lib/firmware";
    if !Path::new(fw).is_dir() {
        return;
    }
    let target = format!("/sysroot{fw}");
    let r = mount(
        Some(fw),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    );
    match r {
        Ok(()) => {
            // a read-only bind needs a remount
            let _ = mount(
                None::<&str>,
                target.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            let _ = std::fs::write("/sys/module/firmware_class/parameters/path", fw);
            let n = count_files(Path::new(fw));
            say(&format!("firmware path={fw} files={n}"));
        }
        Err(e) => say(&format!("firmware path={fw} error={:?}", e.to_string())),
    }
}

/// Regular files (and other non-directories) under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => count_files(&e.path()),
                    Ok(_) => 1,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Stage 2, first step: the writable points of the read-only root. /system and /tmp are
/// tmpfs; /etc/hosts and /etc/resolv.conf are bind-mounted from /system/etc (a localhost-only
/// hosts file and an empty resolv.conf until the network writes them).
pub fn writable() -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs("tmpfs", "/system", "tmpfs", nosuid, Some("mode=0755"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", nosuid, Some("mode=1777"))?;
    std::fs::create_dir_all("/system/etc").context("creating /system/etc")?;
    std::fs::write("/system/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")
        .context("writing /system/etc/hosts")?;
    std::fs::write("/system/etc/resolv.conf", "").context("writing /system/etc/resolv.conf")?;
    for f in ["hosts", "resolv.conf"] {
        let (src, dst) = (format!("/system/etc/{f}"), format!("/etc/{f}"));
        mount(
            Some(src.as_str()),
            dst.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {src} on {dst}"))?;
    }
    Ok(())
}
