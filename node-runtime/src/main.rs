//! node-runtime: PID 1 of the images built by the imager.
//!
//! Stage 1 runs as `/init` from the initramfs: it mounts /proc, /sys, /dev (devtmpfs) and /run,
//! loads the floor kernel modules (dependencies first), attaches `/rootfs.sqsh` to a read-only
//! loop device, mounts it at /sysroot, moves the API filesystems over and switches root
//! (move-mount + chroot, as an initramfs cannot pivot_root) into `/sbin/init` of the squashfs.
//! When the imager added system extensions (`/extensions.yaml` in the initramfs), the root is
//! a read-only overlay of the extension squashfs images (extensions.yaml order, the first on
//! top) over rootfs.sqsh, and the extension firmware of the initramfs is bind-mounted over
//! /usr/lib/firmware and made the kernel's firmware search path.
//!
//! Stage 2 runs as `/sbin/init` in the read-only rootfs: it mounts the writable points
//! (/system and /tmp on tmpfs, /etc/hosts and /etc/resolv.conf bind-mounted from /system/etc),
//! reads META from the boot disk, and prints one machine-readable line per step on the
//! console, ending with the ready line:
//!
//! `node-runtime: ready meta=0x0a:<sha256 of value>[,0x..:..] extensions=<name>@<version>[,…]|none boot_ms=<ms since /init>`
//!
//! Before it, stage 2 loads the modules whose modules.alias patterns match a device's
//! `modalias` in sysfs (coldplug) and those listed in `modules-load.d` (/usr/lib,
//! /usr/local/lib, /etc), with the merged modules.dep of /usr/lib/modules/<kver>, and `node_runtime.test_stat=PATH,…` prints one
//! `test-stat` line per path (type, mode, size, sha256) for tests.
//!
//! With `node_runtime.test_poweroff` on the kernel cmdline it powers the machine off once
//! ready (or after a fatal error), which lets tests and the quickstart end QEMU cleanly.

mod cmdline;
mod meta;
mod modules;
mod net;
mod services;
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

pub(crate) fn say(line: &str) {
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

    mount_root()?;
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

/// Where stage 1 keeps the squashfs mounts of an overlay root (inside /run, which moves into
/// the new root with everything mounted under it).
const LAYERS_DIR: &str = "/run/node-runtime";

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
fn mount_root() -> Result<()> {
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

    let fw = "/usr/lib/firmware";
    if Path::new(fw).is_dir() {
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
    Ok(())
}

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

/// Loads the modules listed in `modules-load.d` (`/usr/lib`, `/usr/local/lib`, `/etc`; a file
/// name in a later directory overrides the same name in an earlier one), with the merged
/// modules.dep of `/usr/lib/modules/<kver>`.
fn load_listed_modules() -> Result<()> {
    let mut files: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for d in [
        "/usr/lib/modules-load.d",
        "/usr/local/lib/modules-load.d",
        "/etc/modules-load.d",
    ] {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                files.insert(name, e.path());
            }
        }
    }
    let mut names = Vec::new();
    for p in files.values() {
        names.extend(kmod::parse_list(
            &std::fs::read_to_string(p).unwrap_or_default(),
        ));
    }
    if names.is_empty() {
        return Ok(());
    }
    let kver = kernel_release()?;
    let rep = modules::load(&Path::new("/usr/lib/modules").join(&kver), &names)?;
    report_modules(&rep, "modules-load.d");
    say(&format!(
        "modules-load listed={} loaded={} present={} failed={}",
        names.len(),
        rep.loaded.len(),
        rep.present.len(),
        rep.failed.len()
    ));
    Ok(())
}

/// One line per module loaded or failed, saying what asked for it.
fn report_modules(rep: &modules::LoadReport, by: &str) {
    for (m, e) in &rep.failed {
        say(&format!("module-failed name={m} error={e:?} by={by}"));
    }
    for m in &rep.loaded {
        say(&format!("module-loaded name={m} by={by}"));
    }
}

/// Every `modalias` file under `dir` (symlinks are not followed).
fn collect_modaliases(dir: &Path, depth: usize, out: &mut std::collections::BTreeSet<String>) {
    if depth > 24 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            collect_modaliases(&e.path(), depth + 1, out);
        } else if t.is_file()
            && e.file_name() == "modalias"
            && let Ok(s) = std::fs::read_to_string(e.path())
            && !s.trim().is_empty()
        {
            out.insert(s.trim().to_string());
        }
    }
}

/// Coldplug: loads the modules whose `modules.alias` patterns match the `modalias` of a
/// device in sysfs (what udev's `modprobe $MODALIAS` does), so that disks and NICs the floor
/// list does not name get their drivers.
fn autoload_modaliases() -> Result<()> {
    let kver = kernel_release()?;
    let dir = Path::new("/usr/lib/modules").join(&kver);
    let path = dir.join("modules.alias");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let aliases = kmod::alias::Aliases::parse(&text);
    let mut found = std::collections::BTreeSet::new();
    collect_modaliases(Path::new("/sys/devices"), 0, &mut found);
    let mut names: Vec<String> = Vec::new();
    for m in &found {
        for n in aliases.lookup(m) {
            if !names.contains(&n) && !Path::new("/sys/module").join(&n).exists() {
                names.push(n);
            }
        }
    }
    let rep = modules::load(&dir, &names)?;
    report_modules(&rep, "modalias");
    say(&format!(
        "modalias devices={} matched={} loaded={} failed={}",
        found.len(),
        names.len(),
        rep.loaded.len(),
        rep.failed.len()
    ));
    Ok(())
}

/// `node_runtime.test_stat=PATH[,PATH…]`: one line per path with its type, mode, size and
/// sha256, so that tests can see what the booted root holds.
fn test_stat(cmd: &Cmdline) {
    use std::os::unix::fs::PermissionsExt;
    for arg in cmd.get_all("node_runtime.test_stat") {
        for p in arg.split(',').filter(|p| !p.is_empty()) {
            let line = match std::fs::symlink_metadata(p) {
                Err(_) => format!("test-stat path={p} missing"),
                Ok(m) if m.is_dir() => format!(
                    "test-stat path={p} type=dir mode={:04o}",
                    m.permissions().mode() & 0o7777
                ),
                Ok(m) if m.file_type().is_symlink() => format!(
                    "test-stat path={p} type=symlink target={}",
                    std::fs::read_link(p)
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                Ok(m) => {
                    let sum = std::fs::read(p)
                        .map(|b| hex::encode(Sha256::digest(&b)))
                        .unwrap_or_else(|e| format!("unreadable:{e}"));
                    format!(
                        "test-stat path={p} type=file mode={:04o} size={} sha256={sum}",
                        m.permissions().mode() & 0o7777,
                        m.len()
                    )
                }
            };
            say(&line);
        }
    }
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

    let mut found = meta::find(Duration::from_secs(2))?;
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
    let added = import_env_meta(&cmd, &mut values);
    // keys the installed META lacks are written into it (Talos does the same at boot)
    if let (Some(f), false) = (found.as_mut(), added.is_empty()) {
        let r = added
            .iter()
            .try_for_each(|k| f.set(*k, &values[k]))
            .and_then(|_| f.flush());
        let keys: Vec<String> = added.iter().map(|k| format!("0x{k:02x}")).collect();
        match r {
            Ok(()) => say(&format!(
                "meta-write disk={} partition={} keys={}",
                f.disk,
                f.partition,
                keys.join(",")
            )),
            Err(e) => say(&format!(
                "meta-write disk={} error={:?}",
                f.disk,
                format!("{e:#}")
            )),
        }
    }
    if let Err(e) = autoload_modaliases() {
        say(&format!("modalias error={:?}", format!("{e:#}")));
    }
    if let Err(e) = load_listed_modules() {
        say(&format!("modules-load error={:?}", format!("{e:#}")));
    }
    let exts = std::fs::read_to_string(format!("{LAYERS_DIR}/extensions.yaml"))
        .ok()
        .and_then(|t| sysext::Config::parse(&t).ok())
        .map(|c| {
            c.layers
                .iter()
                .map(|l| format!("{}@{}", l.metadata.name, l.metadata.version))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // services: begin (extension services; network readiness is reported into `ready`)
    let ready = services::Readiness::new();
    // services: end
    net::start(&cmd, values.get(&0x0a).map(Vec::as_slice), ready.clone());
    test_stat(&cmd);
    // services: begin
    services::start(Path::new("/usr/local/etc/containers"), ready.clone());
    // services: end
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
    let exts = if exts.is_empty() {
        "none".to_string()
    } else {
        exts.join(",")
    };
    say(&format!(
        "ready meta={summary} extensions={exts} boot_ms={boot_ms}"
    ));
    if cmd.flag(POWEROFF_FLAG) {
        // `node_runtime.test_poweroff=N` keeps the node up N seconds after ready (services)
        if let Some(secs) = cmd.get(POWEROFF_FLAG).and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_secs(secs));
        }
        poweroff();
    }
    Ok(())
}

/// Imports `talos.environment=INSTALLER_META_BASE64=…` (spec §5): keys the META partition
/// lacks are added; keys it has win, as Talos only writes missing keys into an installed META.
/// Returns the keys it added.
fn import_env_meta(cmd: &Cmdline, values: &mut BTreeMap<u8, Vec<u8>>) -> Vec<u8> {
    let mut added = Vec::new();
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
                        added.push(k);
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
    added
}

fn poweroff() {
    say("poweroff");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

/// PID 1 must never exit: reap children forever (the service supervisor gets the statuses
/// of its processes).
fn idle() -> ! {
    services::reap_forever()
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
