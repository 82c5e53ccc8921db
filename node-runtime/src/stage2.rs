//! Stage 2: `/sbin/init` in the read-only root, up to the ready line.
//!
//! In boot order: the `init stage=rootfs` line; PCR 11 extended with `enter-machined`; the writable points (/system, /tmp,
//! /etc/hosts, /etc/resolv.conf); META (read from the boot disk, cmdline keys imported and
//! written back); an installation's STATE and EPHEMERAL ([`volumes`]); coldplug modules (modalias), then the `modules-load.d` lists; the
//! network (static configuration now, DHCP in the background); the `test-stat` lines; the
//! extension services (in the background); the ready line:
//!
//! `node-runtime: ready meta=0x0a:<sha256 of value>[,0x..:..] extensions=<name>@<version>[,…]|none boot_ms=<ms since /init> secureboot=enabled|disabled|setup|none pcr11=<hex>|none installed=true version=<v> disk=<dev>|installed=false`
//!
//! and, with `node_runtime.test_poweroff` on the kernel cmdline, the poweroff (after
//! `node_runtime.test_poweroff=N` seconds, if given). Module loading failures are reported
//! and boot goes on; a failed mount or META read ends stage 2 with an error.
//!
//! In: the boot clock at `/init` (`start_ns`, from stage 1) and the kernel cmdline
//! (`docs/formats/cmdline.md`). Out: the console lines; returns once ready (PID 1 then idles).

use crate::cmdline::Cmdline;
use crate::console::{POWEROFF_FLAG, boottime_ns, poweroff, say};
use crate::mounts::LAYERS_DIR;
use crate::readiness::Readiness;
use crate::{meta, modules, mounts, net, security, services, volumes};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Test switch: an installed system fails before its ready line (a broken upgrade).
const FAIL_FLAG: &str = "node_runtime.test_fail_before_ready";

/// Runs stage 2.
pub fn run(start_ns: u64) -> Result<()> {
    let cmd = Cmdline::read();
    say("init stage=rootfs");
    security::measure_phase(security::ENTER_MACHINED);
    mounts::writable()?;
    let (values, meta_disk) = meta::at_boot(&cmd)?;
    // after an upgrade: the new version on trial, or the previous one again; known before
    // anything else can fail, so that a failing version on trial is reverted
    let upgrade = meta_disk
        .as_ref()
        .map(|d| crate::upgrade::classify(d, &cmd, &values));
    let installed = match &meta_disk {
        Some(d) => volumes::mount_installed(d)?,
        None => None,
    };
    if installed.is_some() && cmd.flag(FAIL_FLAG) {
        anyhow::bail!("{FAIL_FLAG}: failing before ready, as asked (a test's broken version)");
    }
    if let Err(e) = modules::coldplug() {
        say(&format!("modalias error={:?}", format!("{e:#}")));
    }
    if let Err(e) = modules::load_listed() {
        say(&format!("modules-load error={:?}", format!("{e:#}")));
    }
    let exts = extensions();
    // services: begin (extension services; network readiness is reported into `ready`)
    let ready = Readiness::new();
    // services: end
    // an installation's configuration, stored in STATE at install time
    let machine_config = installed
        .as_ref()
        .and_then(|_| crate::config::load_stored());
    // not on a boot that halts at once (an ISO finding an installation): the halted machine
    // would be reset by the hardware, and boot the ISO again
    let halts = installed.is_some() && cmd.get("talos.halt_if_installed") == Some("1");
    if let Some(w) = machine_config
        .as_ref()
        .and_then(|c| c.watchdog.as_ref())
        .filter(|_| !halts)
    {
        let stop = cmd
            .get(crate::watchdog::TEST_STOP)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        crate::watchdog::arm(w, stop);
    }
    net::start(
        &cmd,
        values.get(&0x0a).map(Vec::as_slice),
        machine_config
            .as_ref()
            .map(|c| c.network_layer(&crate::config::SysLink::scan())),
        ready.clone(),
    );
    test_stat(&cmd);
    // services: begin
    services::start(
        Path::new("/usr/local/etc/containers"),
        ready.clone(),
        &machine_config
            .as_ref()
            .map(|c| c.env.clone())
            .unwrap_or_default(),
    );
    // services: end
    let summary = meta_summary(&values);
    let boot_ms = boottime_ns().saturating_sub(start_ns) / 1_000_000;
    let install = match &installed {
        Some(i) => format!(
            "installed=true version={} disk={}{}",
            i.version,
            i.disk,
            match &upgrade {
                Some(crate::upgrade::Kind::Rollback { from }) => {
                    format!(" rollback from={from} to={}", i.version)
                }
                _ => String::new(),
            }
        ),
        None => "installed=false".to_string(),
    };
    say(&format!(
        "ready meta={summary} extensions={exts} boot_ms={boot_ms} secureboot={} pcr11={} {install}",
        security::secureboot_state(),
        security::pcr11()
    ));
    if installed.is_some() && cmd.get("talos.halt_if_installed") == Some("1") {
        // the ISO's flag: an installed machine boots from its disk, not from the ISO again
        say(&format!(
            "halt reason=installed disk={} (talos.halt_if_installed=1: boot from the disk)",
            installed.as_ref().map_or("", |i| i.disk.as_str())
        ));
        crate::volumes::unmount();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_HALT_SYSTEM);
        return Ok(());
    }
    if let (Some(i), Some(ca)) = (
        &installed,
        machine_config.as_ref().and_then(|c| c.ca.clone()),
    ) {
        // the installed node's API: mutual TLS under the configuration's CA
        let state = std::sync::Arc::new(crate::api::State {
            version: i.version.clone(),
            meta: values.clone(),
            tx: None,
            ca: Some(ca),
            disk: Some(i.disk.clone()),
            config: machine_config.clone(),
        });
        std::thread::spawn(move || {
            if let Err(e) = crate::api::serve(state) {
                say(&format!("api error={:?}", format!("{e:#}")));
            }
        });
    }
    if let Some(i) = &installed {
        // bless a new version, forget a failed one, run a staged upgrade
        let (cmd, cfg, version) = (cmd.clone(), machine_config.clone(), i.version.clone());
        std::thread::spawn(move || crate::upgrade::settle(&cmd, cfg.as_ref(), &version));
    }
    // maintenance mode, unless the test switch powers the node off at once (with
    // `=SECONDS` the node is up that long, in maintenance when not installed)
    let stays_up =
        !cmd.flag(POWEROFF_FLAG) || cmd.get(POWEROFF_FLAG).is_some_and(|v| !v.is_empty());
    if installed.is_none() && stays_up {
        // maintenance mode, in the background: PID 1 goes on reaping
        let (meta, cmd) = (values.clone(), cmd.clone());
        std::thread::spawn(move || crate::provision::run(&cmd, &meta, "unknown"));
    }
    if cmd.flag(POWEROFF_FLAG) {
        // `node_runtime.test_poweroff=N` keeps the node up N seconds after ready (services)
        if let Some(secs) = cmd.get(POWEROFF_FLAG).and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_secs(secs));
        }
        poweroff();
    }
    Ok(())
}

/// `<name>@<version>[,…]` of the extensions stage 1 mounted (the copy of `extensions.yaml`
/// it kept), or `none`.
fn extensions() -> String {
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
    if exts.is_empty() {
        "none".to_string()
    } else {
        exts.join(",")
    }
}

/// `0x<key>:<sha256 of value>[,…]` of the META values, or `none`.
fn meta_summary(values: &BTreeMap<u8, Vec<u8>>) -> String {
    if values.is_empty() {
        "none".to_string()
    } else {
        values
            .iter()
            .map(|(k, v)| format!("0x{k:02x}:{}", hex::encode(Sha256::digest(v))))
            .collect::<Vec<_>>()
            .join(",")
    }
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
