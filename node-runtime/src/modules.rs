//! Kernel module loading, in boot order.
//!
//! Stage 1 loads the floor list of the initramfs ([`load_floor`]: the modules needed to
//! reach the root — loop, squashfs, overlay, disk drivers — from
//! `/etc/modules-load.d/floor.conf` with `/lib/modules/<kver>`). Stage 2, in the real root,
//! first does coldplug ([`coldplug`]: the modules whose `modules.alias` patterns match a
//! device's `modalias` in sysfs), then loads the modules listed in `modules-load.d`
//! ([`load_listed`]), both with the merged modules.dep of `/usr/lib/modules/<kver>`.
//!
//! In: module name lists (`modules-load.d` format), `modules.dep` and `modules.alias`. Out:
//! the modules inserted with `finit_module`, dependencies first, each once (modules already
//! present, built in or loaded, are not an error), and console lines (`modules …`,
//! `modalias …`, `modules-load …`, `module-loaded …`, `module-failed …`).

use crate::console::say;
use anyhow::{Context, Result};
use kmod::{ModDep, module_name};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Outcome of loading a list.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules inserted now.
    pub loaded: Vec<String>,
    /// Modules that were already present.
    pub present: Vec<String>,
    /// Failures (module, error).
    pub failed: Vec<(String, String)>,
}

/// The running kernel's release (`uname -r`), which names the module directory.
pub fn kernel_release() -> Result<String> {
    Ok(nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned())
}

/// Loads `names` and their dependencies from `dir` (`/lib/modules/<kver>`).
pub fn load(dir: &Path, names: &[String]) -> Result<LoadReport> {
    let dep_path = dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_path)
        .with_context(|| format!("reading {}", dep_path.display()))?;
    let order = ModDep::parse(&text).load_order(names)?;
    let mut rep = LoadReport::default();
    for rel in order {
        let name = module_name(&rel);
        let path: PathBuf = dir.join(&rel);
        let res = File::open(&path)
            .map_err(anyhow::Error::from)
            .and_then(|f| {
                nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty())
                    .map_err(anyhow::Error::from)
            });
        match res {
            Ok(()) => rep.loaded.push(name),
            Err(e) if e.downcast_ref::<nix::Error>() == Some(&nix::Error::EEXIST) => {
                rep.present.push(name)
            }
            Err(e) => rep.failed.push((name, format!("{e:#}"))),
        }
    }
    Ok(rep)
}

/// Stage 1: loads the floor list of the initramfs (`/etc/modules-load.d/floor.conf`, missing
/// = empty) from `/lib/modules/<kver>`.
pub fn load_floor(kver: &str) -> Result<()> {
    let list = std::fs::read_to_string("/etc/modules-load.d/floor.conf").unwrap_or_default();
    let names = kmod::parse_list(&list);
    let rep = load(&Path::new("/lib/modules").join(kver), &names)?;
    for (m, e) in &rep.failed {
        say(&format!("module-failed name={m} error={e:?}"));
    }
    say(&format!(
        "modules loaded={} present={} failed={}",
        rep.loaded.len(),
        rep.present.len(),
        rep.failed.len()
    ));
    Ok(())
}

/// One line per module loaded or failed, saying what asked for it.
fn report(rep: &LoadReport, by: &str) {
    for (m, e) in &rep.failed {
        say(&format!("module-failed name={m} error={e:?} by={by}"));
    }
    for m in &rep.loaded {
        say(&format!("module-loaded name={m} by={by}"));
    }
}

/// Every `modalias` file under `dir` (symlinks are not followed).
fn collect_modaliases(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
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

/// Stage 2, coldplug: loads the modules whose `modules.alias` patterns match the `modalias`
/// of a device in sysfs (what udev's `modprobe $MODALIAS` does), so that disks and NICs the
/// floor list does not name get their drivers.
pub fn coldplug() -> Result<()> {
    let kver = kernel_release()?;
    let dir = Path::new("/usr/lib/modules").join(&kver);
    let path = dir.join("modules.alias");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let aliases = kmod::alias::Aliases::parse(&text);
    let mut found = BTreeSet::new();
    collect_modaliases(Path::new("/sys/devices"), 0, &mut found);
    let mut names: Vec<String> = Vec::new();
    for m in &found {
        for n in aliases.lookup(m) {
            if !names.contains(&n) && !Path::new("/sys/module").join(&n).exists() {
                names.push(n);
            }
        }
    }
    let rep = load(&dir, &names)?;
    report(&rep, "modalias");
    say(&format!(
        "modalias devices={} matched={} loaded={} failed={}",
        found.len(),
        names.len(),
        rep.loaded.len(),
        rep.failed.len()
    ));
    Ok(())
}

/// Stage 2, after coldplug: loads the modules listed in `modules-load.d` (`/usr/lib`,
/// `/usr/local/lib`, `/etc`; a file name in a later directory overrides the same name in an
/// earlier one), with the merged modules.dep of `/usr/lib/modules/<kver>`. No list, no line.
pub fn load_listed() -> Result<()> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
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
    let rep = load(&Path::new("/usr/lib/modules").join(&kver), &names)?;
    report(&rep, "modules-load.d");
    say(&format!(
        "modules-load listed={} loaded={} present={} failed={}",
        names.len(),
        rep.loaded.len(),
        rep.present.len(),
        rep.failed.len()
    ));
    Ok(())
}
