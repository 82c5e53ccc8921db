//! Maintenance mode and the install (docs/formats/install.md, "From the node").
//!
//! A node booted without an installation (an ISO, PXE, a fresh image) waits for a machine
//! configuration ([`crate::config`]). So far it comes from `talos.config=URL` on the kernel
//! command line (HTTP or HTTPS; `${uuid}`, `${serial}`, `${mac}`, `${hostname}` and `${code}`
//! substituted as Talos does; retried with backoff, one console line per attempt). A
//! configuration that names a disk is installed: the installer image of
//! `machine.install.image` is pulled through `machine.registries`' mirrors (every blob
//! digest-checked), its layers are unpacked into `/system/installer`, and its
//! `/usr/bin/installer install` runs in a private mount namespace against the disk; the
//! configuration is stored in STATE (`config.yaml`), and the node reboots.
//!
//! In: the kernel cmdline, META 0x0b (`${code}`), the network. Out: console lines
//! `maintenance …`, `config-fetch …`, `config …`, `install …`, then a reboot.

use crate::cmdline::Cmdline;
use crate::config::{self, MachineConfig};
use crate::console::say;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the installer image is unpacked (tmpfs).
const INSTALLER_ROOT: &str = "/system/installer";
/// The blob cache of pulls (tmpfs).
const OCI_CACHE: &str = "/system/oci-cache";
/// Bound on one layer's unpacked size.
const MAX_UNPACKED: u64 = 2 << 30;

/// Maintenance mode: waits for a configuration, then installs and reboots. Returns only on a
/// failure, which is reported; the node stays in maintenance.
pub fn run(cmd: &Cmdline, meta: &crate::meta::Values) {
    let Some(url) = cmd.get("talos.config").map(str::to_string) else {
        say("maintenance waiting for a machine configuration (talos.config= is not set)");
        return;
    };
    say("maintenance waiting for a machine configuration");
    let url = substitute(&url, meta);
    let text = fetch_config(&url);
    let cfg = match config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("config source={url:?} error={e:?}"));
            return;
        }
    };
    say(&format!(
        "config source={url:?} install-disk={} install-image={}",
        if cfg.install.disk.is_empty() {
            "none"
        } else {
            &cfg.install.disk
        },
        if cfg.install.image.is_empty() {
            "none"
        } else {
            &cfg.install.image
        }
    ));
    for s in &cfg.not_applied {
        say(&format!("config not-applied={s}"));
    }
    if let Err(e) = install(cmd, &cfg) {
        say(&format!("install error={:?}", format!("{e:#}")));
    }
}

/// Talos's variables in `talos.config` URLs.
fn substitute(url: &str, meta: &crate::meta::Values) -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mac = first_mac();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = meta
        .get(&0x0b)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    url.replace("${uuid}", &read("/sys/class/dmi/id/product_uuid"))
        .replace("${serial}", &read("/sys/class/dmi/id/product_serial"))
        .replace("${mac}", &mac)
        .replace("${hostname}", &hostname)
        .replace("${code}", &code)
}

/// The MAC address of the first non-loopback link, by name.
fn first_mac() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .first()
        .and_then(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Fetches the configuration, retrying with backoff (1 s doubling to 30 s) until it comes.
fn fetch_config(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut delay = Duration::from_secs(1);
    for attempt in 1.. {
        let r = agent
            .get(url)
            .call()
            .map_err(|e| e.to_string())
            .and_then(|resp| {
                let mut body = String::new();
                resp.into_body()
                    .into_reader()
                    .take(config::MAX_CONFIG as u64 + 1)
                    .read_to_string(&mut body)
                    .map_err(|e| e.to_string())?;
                Ok(body)
            });
        match r {
            Ok(body) => {
                say(&format!(
                    "config-fetch url={url:?} attempt={attempt} bytes={}",
                    body.len()
                ));
                return body;
            }
            Err(e) => say(&format!(
                "config-fetch url={url:?} attempt={attempt} error={e:?} retry_in={}s",
                delay.as_secs()
            )),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    unreachable!("the retry loop only ends by returning")
}

fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Pulls and unpacks `image` into [`INSTALLER_ROOT`]; returns the root.
fn pull_installer(image: &str, cfg: &MachineConfig) -> Result<PathBuf> {
    let r =
        oci::Reference::parse(image).with_context(|| format!("machine.install.image {image:?}"))?;
    let cache = oci::cache::Cache::open(Path::new(OCI_CACHE)).context("the blob cache")?;
    let opts = oci::ClientOptions {
        registries: cfg.registries.clone(),
        ..Default::default()
    };
    let client = oci::Client::new(opts, cache).context("the registry client")?;
    let img = client
        .pull(&r, arch(), false)
        .with_context(|| format!("pulling {r}"))?;
    say(&format!(
        "install pulled={r} digest={} layers={}",
        img.manifest_digest,
        img.manifest.layers.len()
    ));
    let root = PathBuf::from(INSTALLER_ROOT);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    for l in &img.manifest.layers {
        let path = img
            .blobs
            .get(&l.digest)
            .with_context(|| format!("layer {} not pulled", l.digest))?;
        let f = std::fs::File::open(path)?;
        let gz = flate2::read::GzDecoder::new(f).take(MAX_UNPACKED);
        let mut a = tar::Archive::new(gz);
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        // entries that climb out of the root are skipped by `unpack` (tar's own check)
        a.unpack(&root)
            .with_context(|| format!("unpacking layer {}", l.digest))?;
    }
    Ok(root)
}

/// The disk of `machine.install.disk`, which must exist.
fn install_disk(cfg: &MachineConfig) -> Result<String> {
    let d = &cfg.install.disk;
    if d.is_empty() {
        bail!("machine.install.disk is not set (diskSelector is not supported yet)");
    }
    if !Path::new(d).exists() {
        bail!("machine.install.disk {d}: no such disk");
    }
    Ok(d.clone())
}

/// Installs `cfg` and reboots.
fn install(cmd: &Cmdline, cfg: &MachineConfig) -> Result<()> {
    if cfg.install.image.is_empty() {
        bail!("machine.install.image is not set");
    }
    let disk = install_disk(cfg)?;
    let root = pull_installer(&cfg.install.image, cfg)?;
    let bin = root.join("usr/bin/installer");
    if !bin.is_file() {
        bail!("{} has no /usr/bin/installer", cfg.install.image);
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let mut args: Vec<String> = [
        "install",
        "--disk",
        &disk,
        "--platform",
        cmd.get("talos.platform").unwrap_or("metal"),
        "--arch",
        arch(),
        "--install-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(root.join("usr/install").to_string_lossy().into_owned());
    if cfg.install.wipe {
        args.push("--zero".into());
    }
    // a UKI's command line is fixed when it is built: Talos ignores the extra arguments then
    if root
        .join("usr/install")
        .join(arch())
        .join("vmlinuz.efi")
        .exists()
    {
        if !cfg.install.extra_kernel_args.is_empty() {
            say("install extra-kernel-args=ignored reason=uki");
        }
    } else {
        for a in &cfg.install.extra_kernel_args {
            args.push("--extra-kernel-arg".into());
            args.push(a.clone());
        }
    }
    let mut env: Vec<(String, String)> = cfg
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    say(&format!("install disk={disk} image={}", cfg.install.image));
    let exit = crate::sys::run_in_mount_ns(&bin, &args, &env)?;
    if exit != crate::services::reaper::Exit::Code(0) {
        bail!("the installer ended with {exit:?}");
    }
    store_config(&disk, cfg)?;
    let _ = std::fs::remove_dir_all(&root);
    say(&format!("install done disk={disk} reboot=true"));
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    Ok(())
}

/// Writes the configuration into STATE's `config.yaml` (mode 0600).
fn store_config(disk: &str, cfg: &MachineConfig) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::File::open(disk)?;
    let size = f.seek(SeekFrom::End(0))?;
    let layout = gpt::read(&mut f, 512, size).context("reading the installed GPT")?;
    let state = layout
        .by_name("STATE")
        .context("the installed disk has no STATE")?;
    let dev = crate::volumes::partition_device(disk, state.number);
    // the kernel rereads the table the installer wrote once the device is closed
    for _ in 0..100 {
        if Path::new(&dev).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mnt = "/system/install-state";
    crate::mounts::mount_fs(&dev, mnt, "ext4", nix::mount::MsFlags::MS_NOSUID, None)
        .with_context(|| format!("mounting STATE ({dev})"))?;
    let path = Path::new(mnt).join("config.yaml");
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut o| {
            o.write_all(cfg.text.as_bytes())?;
            o.sync_all()
        });
    let _ = nix::mount::umount(mnt);
    r.with_context(|| format!("writing {}", path.display()))?;
    say(&format!("install config-stored device={dev}"));
    Ok(())
}
