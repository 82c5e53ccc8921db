//! Upgrades of an installed node (docs/formats/upgrade.md): the API's request, the staged
//! upgrade at the next boot, and what a boot after an upgrade does — bless the new version
//! once ready, revert a boot on trial that fails before ready, report a rollback.
//!
//! In: the installation (disk, booted version), META (0x06 `Upgrade`: the boot label the
//! upgrade came from; 0x07/0x08 a staged upgrade's image and options), the boot loader's
//! state (systemd-boot's `LoaderEntrySelected`, GRUB's `BOOT_IMAGE=`), the stored
//! configuration (mirrors, signature policy, environment of the installer). Out: the
//! installer run in upgrade mode, META, the boot partition (mounted with vfat at
//! `/system/boot` while it changes), console lines, reboots.

use crate::cmdline::Cmdline;
use crate::config::MachineConfig;
use crate::console::say;
use anyhow::{Context, Result, bail};
use installer::ab;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// META: the boot label an upgrade came from (Talos's `Upgrade`).
pub const META_UPGRADE: u8 = 0x06;
/// META: a staged upgrade's image (Talos's `StagedUpgradeImageRef`).
pub const META_STAGED_IMAGE: u8 = 0x07;
/// META: a staged upgrade's options, JSON (Talos's `StagedUpgradeInstallOptions`).
pub const META_STAGED_OPTIONS: u8 = 0x08;
/// Where the boot partition is mounted while it changes.
const BOOT_MOUNT: &str = "/system/boot";

/// Which boot loader booted the node, and under which label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booted {
    /// systemd-boot: the entry's id (`LoaderEntrySelected`: the UKI's file name, lowercased,
    /// with the boot counter it had).
    SdBoot(String),
    /// GRUB: the slot (`BOOT_IMAGE=/A/vmlinuz` → `A`).
    Grub(char),
}

impl Booted {
    /// What this boot loader booted, if it says.
    pub fn detect(cmd: &Cmdline) -> Option<Self> {
        if let Some(e) = crate::volumes::loader_entry_selected() {
            return Some(Self::SdBoot(e));
        }
        let img = cmd.get("BOOT_IMAGE")?;
        ab::grub_booted_slot(&format!("BOOT_IMAGE={img}")).map(Self::Grub)
    }

    /// The label recorded in META 0x06: the UKI file name, or the GRUB slot.
    pub fn label(&self) -> String {
        match self {
            Self::SdBoot(e) => e.clone(),
            Self::Grub(s) => s.to_string(),
        }
    }

    /// Whether `label` (META 0x06) names this boot.
    fn is(&self, label: &str) -> bool {
        match self {
            Self::SdBoot(e) => match (ab::UkiName::parse(e), ab::UkiName::parse(label)) {
                (Some(a), Some(b)) => a.stem.eq_ignore_ascii_case(&b.stem),
                _ => false,
            },
            Self::Grub(s) => label.len() == 1 && label.starts_with(*s),
        }
    }

    fn partition(&self) -> &'static str {
        match self {
            Self::SdBoot(_) => "EFI",
            Self::Grub(_) => "BOOT",
        }
    }
}

/// What this boot is, after an upgrade or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// No upgrade pending.
    Normal,
    /// The new version, booted once by the boot loader, not blessed yet.
    Trial {
        /// META 0x06.
        previous: String,
    },
    /// The previous version again: the new one did not reach ready.
    Rollback {
        /// The version that failed.
        from: String,
    },
}

/// The state of this boot, kept for the fatal-error path.
struct Current {
    disk: String,
    booted: Booted,
    kind: Kind,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// One upgrade at a time.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Mounts the boot partition of `booted` on `disk`, runs `f` on it, unmounts it.
fn with_boot<T>(
    disk: &str,
    booted: &Booted,
    f: impl FnOnce(&std::path::Path) -> Result<T>,
) -> Result<T> {
    let dev = crate::volumes::partition_of(disk, booted.partition())?;
    let mount = ab::BootMount::vfat(&dev, std::path::Path::new(BOOT_MOUNT))?;
    let r = f(mount.path())?;
    mount.unmount()?;
    Ok(r)
}

/// This boot's disk, boot loader and kind, as [`classify`] found them.
fn current() -> Option<(String, Booted, Kind)> {
    CURRENT.lock().ok().and_then(|c| {
        c.as_ref()
            .map(|c| (c.disk.clone(), c.booted.clone(), c.kind.clone()))
    })
}

/// Whether an upgrade is running (a reset waits for none).
pub fn running() -> bool {
    RUNNING.load(Ordering::SeqCst)
}

/// Classifies this boot of an installation (before the ready line) from META 0x06 and the
/// boot loader's state, and remembers it for [`settle`] and [`on_fatal`].
pub fn classify(disk: &str, cmd: &Cmdline, meta: &crate::meta::Values) -> Kind {
    let Some(booted) = Booted::detect(cmd) else {
        return Kind::Normal;
    };
    let previous = meta
        .get(&META_UPGRADE)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| !v.is_empty());
    let kind = match previous {
        None => Kind::Normal,
        Some(p) if booted.is(&p) => {
            // the failed version: the UKI without tries left, or GRUB's other slot
            let from = with_boot(disk, &booted, |m| {
                Ok(match &booted {
                    Booted::SdBoot(_) => ab::ukis(m)?
                        .into_iter()
                        .find(|(_, u)| matches!(u.counter, Some((0, _))))
                        .and_then(|(_, u)| u.version().map(str::to_string)),
                    Booted::Grub(s) => ab::read_grub(m)?
                        .slot(ab::other_slot(*s))
                        .map(|x| x.version().to_string()),
                })
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
            Kind::Rollback { from }
        }
        Some(p) => Kind::Trial { previous: p },
    };
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some(Current {
            disk: disk.to_string(),
            booted,
            kind: kind.clone(),
        });
    }
    kind
}

/// After the ready line: a boot on trial is blessed (systemd-boot: the counter leaves the
/// UKI's name; GRUB: the booted slot becomes the default), a rollback forgets the failed
/// version, META 0x06 is deleted; then a staged upgrade runs.
pub fn settle(cmd: &Cmdline, cfg: Option<&MachineConfig>, version: &str) {
    let Some((disk, booted, kind)) = current() else {
        return;
    };
    // without an upgrade in META only a counted systemd-boot entry needs its blessing (an
    // upgrade cut short after the installer, before META)
    let counted = matches!(&booted, Booted::SdBoot(e) if ab::UkiName::parse(e).is_some_and(|u| u.counter.is_some()));
    if kind == Kind::Normal && !counted {
        staged(&disk, cmd, cfg);
        return;
    }
    let r = with_boot(&disk, &booted, |m| {
        Ok(match (&booted, &kind) {
            (Booted::SdBoot(_), Kind::Rollback { .. }) => {
                let gone = ab::sdboot_forget_failed(m)?;
                format!("deleted={}", list(&gone))
            }
            (Booted::Grub(s), Kind::Rollback { .. }) => {
                ab::grub_revert(m, *s)?;
                format!("default={s}")
            }
            (Booted::SdBoot(e), _) => match ab::sdboot_bless(m, e)? {
                Some(n) => format!("entry={n}"),
                None => String::new(),
            },
            (Booted::Grub(s), _) => {
                if ab::grub_bless(m, *s)? {
                    format!("default={s}")
                } else {
                    String::new()
                }
            }
        })
    });
    // a version on trial that could not be blessed keeps 0x06: its next boot is the previous
    // version, which then reports the rollback
    let keep_0x06 = matches!(kind, Kind::Trial { .. }) && r.is_err();
    match (&kind, r) {
        (_, Err(e)) => say(&format!("upgrade settle error={:?}", format!("{e:#}"))),
        (Kind::Normal, Ok(what)) if what.is_empty() => {}
        (Kind::Rollback { from }, Ok(what)) => say(&format!(
            "upgrade rolled-back from={from} to={version} {what}"
        )),
        (_, Ok(what)) => say(&format!(
            "upgrade blessed version={version} {what}{}",
            match &kind {
                Kind::Trial { previous } => format!(" previous={previous}"),
                _ => String::new(),
            }
        )),
    }
    if kind != Kind::Normal && !keep_0x06 {
        match crate::lifecycle::meta_delete(&disk, META_UPGRADE) {
            Ok(_) => {}
            Err(e) => say(&format!("upgrade meta error={:?}", format!("{e:#}"))),
        }
    }
    staged(&disk, cmd, cfg);
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// A staged upgrade (META 0x07, options in 0x08) runs now: its keys are deleted first, so
/// that a failing one is not retried at every boot.
fn staged(disk: &str, cmd: &Cmdline, cfg: Option<&MachineConfig>) {
    let Ok(values) = crate::lifecycle::meta_values(disk) else {
        return;
    };
    let Some(image) = values.get(&META_STAGED_IMAGE) else {
        return;
    };
    let image = String::from_utf8_lossy(image).into_owned();
    let preserve = values
        .get(&META_STAGED_OPTIONS)
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(o).ok())
        .and_then(|o| o["preserve"].as_bool())
        .unwrap_or(false);
    for k in [META_STAGED_IMAGE, META_STAGED_OPTIONS] {
        let _ = crate::lifecycle::meta_delete(disk, k);
    }
    say(&format!(
        "upgrade staged-apply image={} preserve={preserve}",
        crate::console::printable(&image)
    ));
    let Some(cfg) = cfg else {
        say("upgrade error=\"no stored configuration\"");
        return;
    };
    let req = Request {
        image,
        preserve,
        stage: false,
        test_pause: false,
    };
    if let Err(e) = run(disk, cmd, cfg, &req) {
        say(&format!("upgrade error={:?}", format!("{e:#}")));
    }
}

/// A fatal error before ready: a boot on trial is reverted (systemd-boot: the UKI gets no
/// try left; GRUB: the previous slot is the default, no one-shot) and the machine reboots.
/// Returns false when this boot is not on trial (nothing done).
pub fn on_fatal() -> bool {
    let Some((disk, booted, Kind::Trial { previous })) = current() else {
        return false;
    };
    let r = with_boot(&disk, &booted, |m| match &booted {
        Booted::SdBoot(e) => Ok(ab::sdboot_mark_bad(m, e)?.unwrap_or_default()),
        Booted::Grub(_) => {
            let prev = previous.chars().next().unwrap_or('A');
            ab::grub_revert(m, prev)?;
            Ok(format!("slot {prev}"))
        }
    });
    match r {
        Ok(what) => say(&format!("upgrade revert to={previous} {what} reboot=true")),
        Err(e) => say(&format!(
            "upgrade revert error={:?} reboot=true",
            format!("{e:#}")
        )),
    }
    std::thread::sleep(Duration::from_secs(1));
    crate::console::reboot();
    true
}

/// An upgrade request (the API's `POST /v1/upgrade`).
#[derive(Debug, Clone)]
pub struct Request {
    /// The installer image.
    pub image: String,
    /// Keep EPHEMERAL (else it is formatted again).
    pub preserve: bool,
    /// Store the request in META, to run at the next boot.
    pub stage: bool,
    /// The installer's test hook (only with `node_runtime.test_install_pause`).
    pub test_pause: bool,
}

/// Stages the request in META, or checks it can run and starts it in the background.
pub fn request(disk: &str, cmd: &Cmdline, cfg: &MachineConfig, req: Request) -> Result<String> {
    if req.image.is_empty() || req.image.chars().any(char::is_control) {
        bail!("the image reference is empty or has control characters");
    }
    oci::Reference::parse(&req.image).with_context(|| format!("image {:?}", req.image))?;
    if req.stage {
        crate::lifecycle::meta_write(disk, META_STAGED_IMAGE, req.image.as_bytes())?;
        let opts = serde_json::json!({"preserve": req.preserve}).to_string();
        crate::lifecycle::meta_write(disk, META_STAGED_OPTIONS, opts.as_bytes())?;
        say(&format!(
            "upgrade staged image={} preserve={}",
            crate::console::printable(&req.image),
            req.preserve
        ));
        return Ok("staged".into());
    }
    if RUNNING.swap(true, Ordering::SeqCst) {
        bail!("an upgrade is already running");
    }
    if let Err(e) = pending(disk) {
        RUNNING.store(false, Ordering::SeqCst);
        return Err(e);
    }
    let (disk, cmd, cfg) = (disk.to_string(), cmd.clone(), cfg.clone());
    std::thread::spawn(move || {
        if let Err(e) = run_once(&disk, &cmd, &cfg, &req) {
            say(&format!("upgrade error={:?}", format!("{e:#}")));
        }
        RUNNING.store(false, Ordering::SeqCst);
    });
    Ok("started".into())
}

/// Refuses an upgrade while the previous one has not reached ready (META 0x06).
fn pending(disk: &str) -> Result<()> {
    if crate::lifecycle::meta_values(disk)?.contains_key(&META_UPGRADE) {
        bail!("the previous upgrade has not reached ready yet (META 0x06 is set)");
    }
    Ok(())
}

/// The upgrade, at most one at a time (a staged one at boot).
fn run(disk: &str, cmd: &Cmdline, cfg: &MachineConfig, req: &Request) -> Result<()> {
    if RUNNING.swap(true, Ordering::SeqCst) {
        bail!("an upgrade is already running");
    }
    let r = pending(disk).and_then(|()| run_once(disk, cmd, cfg, req));
    RUNNING.store(false, Ordering::SeqCst);
    r
}

/// The upgrade: pull and verify the installer image, record the booted label in META 0x06,
/// run the installer in upgrade mode, reboot. Without `preserve`, services stop and the
/// volumes are unmounted first, and the installer formats EPHEMERAL again; from then on
/// every outcome ends in a reboot. An installer that fails deletes 0x06 again.
fn run_once(disk: &str, cmd: &Cmdline, cfg: &MachineConfig, req: &Request) -> Result<()> {
    let booted = Booted::detect(cmd).context(
        "the boot loader did not say what it booted (neither LoaderEntrySelected nor BOOT_IMAGE=)",
    )?;
    say(&format!(
        "upgrade image={} preserve={} booted={}",
        crate::console::printable(&req.image),
        req.preserve,
        booted.label()
    ));
    let root = crate::provision::pull_installer(&req.image, cfg)?;
    let r = install(disk, cmd, cfg, req, &booted, &root);
    let _ = std::fs::remove_dir_all(&root);
    match r {
        Ok(()) => {
            say(&format!(
                "upgrade done previous={} reboot=true",
                booted.label()
            ));
            if req.preserve {
                crate::services::stop_all(Duration::from_secs(30));
            }
            crate::console::reboot();
            Ok(())
        }
        Err(e) if !req.preserve => {
            // services are stopped and /var is gone: only a reboot brings the node back
            say(&format!("upgrade error={:?} reboot=true", format!("{e:#}")));
            crate::console::reboot();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn install(
    disk: &str,
    cmd: &Cmdline,
    cfg: &MachineConfig,
    req: &Request,
    booted: &Booted,
    root: &std::path::Path,
) -> Result<()> {
    let mut extra = vec!["--upgrade".to_string()];
    if !req.preserve {
        let secs = crate::services::stop_all(Duration::from_secs(30));
        say(&format!("upgrade services-stopped_in_s={secs}"));
        crate::volumes::unmount_strict()?;
        extra.push("--wipe-ephemeral".into());
    }
    // before the boot loader learns of the new version: a power cut after the installer still
    // leaves a boot on trial that knows where it came from
    crate::lifecycle::meta_write(disk, META_UPGRADE, booted.label().as_bytes())?;
    let r =
        crate::provision::run_installer(root, disk, cmd, cfg, &extra, Vec::new(), req.test_pause);
    if r.is_err() {
        let _ = crate::lifecycle::meta_delete(disk, META_UPGRADE);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let b = Booted::SdBoot("talos-v1.14.1+1.efi".into());
        assert!(b.is("Talos-v1.14.1.efi"));
        assert!(b.is("talos-v1.14.1+1.efi"));
        assert!(!b.is("Talos-v1.14.0.efi"));
        assert!(!b.is("A"));
        assert!(Booted::Grub('A').is("A"));
        assert!(!Booted::Grub('A').is("B"));
        assert!(!Booted::Grub('A').is("AB"));
        assert_eq!(Booted::Grub('B').label(), "B");
    }
}
