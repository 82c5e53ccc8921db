//! node-runtime: PID 1 of the images built by the imager.
//!
//! Stage 1 runs as `/init` from the initramfs: it mounts /proc, /sys, /dev (devtmpfs) and /run,
//! loads the floor kernel modules (dependencies first), attaches `/rootfs.sqsh` to a read-only
//! loop device, mounts it at /sysroot, moves the API filesystems over and switches root
//! (move-mount + chroot, as an initramfs cannot pivot_root) into `/sbin/init` of the squashfs.
//!
//! Stage 2 runs as `/sbin/init` in the read-only rootfs: it mounts the writable points
//! (/system and /tmp on tmpfs, /etc/hosts and /etc/resolv.conf bind-mounted from /system/etc),
//! reads META from the boot disk, and prints one machine-readable line per step on the
//! console, ending with the ready line:
//!
//! `node-runtime: ready meta=0x0a:<sha256 of value>[,0x..:..] boot_ms=<ms since /init>`
//!
//! With `node_runtime.test_poweroff` on the kernel cmdline it powers the machine off once
//! ready (or after a fatal error), which lets tests and the quickstart end QEMU cleanly.

mod cmdline;
mod meta;
mod modules;
mod sys;

use anyhow::{Context, Result};
use cmdline::Cmdline;
use nix::mount::{MsFlags, mount};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

const POWEROFF_FLAG: &str = "node_runtime.test_poweroff";
const START_ENV: &str = "NODE_RUNTIME_START_NS";

fn say(line: &str) {
    // stdout is /dev/console (the kernel opens it for init)
    println!("node-runtime: {line}");
}

fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn mount_fs(
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

fn read_cmdline() -> Cmdline {
    Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

fn kernel_release() -> Result<String> {
    Ok(nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned())
}

fn stage1(start_ns: u64) -> Result<()> {
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
    let kver = kernel_release()?;
    say(&format!("init stage=initramfs kernel={kver}"));

    let list = std::fs::read_to_string("/etc/modules-load.d/floor.conf").unwrap_or_default();
    let names = kmod::parse_list(&list);
    let rep = modules::load(&Path::new("/lib/modules").join(&kver), &names)?;
    for (m, e) in &rep.failed {
        say(&format!("module-failed name={m} error={e:?}"));
    }
    say(&format!(
        "modules loaded={} present={} failed={}",
        rep.loaded.len(),
        rep.present.len(),
        rep.failed.len()
    ));

    let dev = sys::loop_attach_ro(Path::new("/rootfs.sqsh"))?;
    let dev = dev.to_string_lossy().into_owned();
    mount_fs(&dev, "/sysroot", "squashfs", MsFlags::MS_RDONLY, None)?;
    say(&format!("rootfs device={dev} fstype=squashfs ro"));
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

fn stage2(start_ns: u64) -> Result<()> {
    let cmd = read_cmdline();
    say("init stage=rootfs");
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

    let found = meta::find(Duration::from_secs(2))?;
    let mut values: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    match &found {
        Some(f) => {
            let src = match &f.source {
                adv::Source::CopyA => "copy-a".to_string(),
                adv::Source::CopyB(e) => format!("copy-b copy_a_error={:?}", e.to_string()),
                adv::Source::Empty { a, b } => format!(
                    "empty copy_a_error={:?} copy_b_error={:?}",
                    a.to_string(),
                    b.to_string()
                ),
            };
            say(&format!(
                "meta disk={} partition={} source={src} keys={}",
                f.disk,
                f.partition,
                f.adv.len()
            ));
            values.extend(f.adv.iter().map(|(k, v)| (k, v.to_vec())));
        }
        None => say("meta absent"),
    }
    import_env_meta(&cmd, &mut values);
    let summary = if values.is_empty() {
        "none".to_string()
    } else {
        values
            .iter()
            .map(|(k, v)| format!("0x{k:02x}:{}", hex::encode(Sha256::digest(v))))
            .collect::<Vec<_>>()
            .join(",")
    };
    let boot_ms = boottime_ns().saturating_sub(start_ns) / 1_000_000;
    say(&format!("ready meta={summary} boot_ms={boot_ms}"));
    if cmd.flag(POWEROFF_FLAG) {
        poweroff();
    }
    Ok(())
}

/// Imports `talos.environment=INSTALLER_META_BASE64=…` (spec §5): keys the META partition
/// lacks are added; keys it has win, as Talos only writes missing keys into an installed META.
fn import_env_meta(cmd: &Cmdline, values: &mut BTreeMap<u8, Vec<u8>>) {
    let prefix = format!("{}=", adv::env::VAR);
    for env in cmd.get_all("talos.environment") {
        let Some(enc) = env.strip_prefix(&prefix) else {
            continue;
        };
        match adv::env::decode(enc) {
            Ok(pairs) => {
                let total = pairs.len();
                let mut imported = 0;
                for (k, v) in pairs {
                    if let std::collections::btree_map::Entry::Vacant(e) = values.entry(k) {
                        e.insert(v.into_bytes());
                        imported += 1;
                    }
                }
                say(&format!(
                    "meta-import from=cmdline keys={total} imported={imported}"
                ));
            }
            Err(e) => say(&format!(
                "meta-import from=cmdline error={:?}",
                e.to_string()
            )),
        }
    }
}

fn poweroff() {
    say("poweroff");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

/// PID 1 must never exit: reap children forever.
fn idle() -> ! {
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => continue,
            Err(_) => std::thread::sleep(Duration::from_secs(3600)),
        }
    }
}

fn main() {
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!(
            "node-runtime is the init process of the images the imager builds; it only runs as PID 1"
        );
        std::process::exit(2);
    }
    let initramfs = Path::new("/rootfs.sqsh").exists();
    let start_ns = if initramfs {
        boottime_ns()
    } else {
        std::env::var(START_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let res = if initramfs {
        stage1(start_ns)
    } else {
        stage2(start_ns)
    };
    if let Err(e) = res {
        say(&format!("error: {e:#}"));
        if read_cmdline().flag(POWEROFF_FLAG) {
            poweroff();
        }
    }
    idle()
}
