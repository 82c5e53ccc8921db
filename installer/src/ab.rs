//! A/B upgrades of an installed disk's boot partition (docs/formats/upgrade.md): what the
//! installer writes on an upgrade, and what node-runtime changes once the new version reached
//! ready (bless), failed before it (revert), or was rolled back by the boot loader.
//!
//! Everything here works on a mounted boot filesystem (a directory): the ESP for
//! systemd-boot, BOOT for GRUB. The binaries mount it (the kernel's vfat); this module owns
//! the names and the file formats:
//!
//! - systemd-boot: the new UKI goes beside the booted one as `EFI/Linux/<os>-<version>+1.efi`
//!   (Boot Loader Specification boot counting: one try). systemd-boot sorts it first (newest
//!   version), renames it to `+0-1` before booting it, and sorts an entry without tries left
//!   last: a boot that does not reach ready is followed by the previous version. At ready the
//!   counter is dropped from the name (blessed).
//! - GRUB: the new kernel and initramfs go into the other slot (`A/` or `B/`); `grub.cfg`
//!   keeps the booted slot as its default and gets the standard one-shot block, and
//!   `grub/grubenv` names the new slot in `next_entry`, which GRUB clears before booting it.
//!   At ready the new slot becomes the default, the old one the fallback (Talos's flip).

use crate::{InstallError, grub_quote, io_err};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where systemd-boot finds type #2 entries (UKIs).
pub const UKI_DIR: &str = "EFI/Linux";
/// GRUB's configuration on BOOT.
pub const GRUB_CFG: &str = "grub/grub.cfg";
/// GRUB's environment block on BOOT (`$prefix/grubenv`).
pub const GRUBENV: &str = "grub/grubenv";
/// Size of a GRUB environment block.
const GRUBENV_SIZE: usize = 1024;
/// Suffix of files being written: neither boot loader reads them.
const TMP: &str = ".tmp";

/// GRUB's other slot: `A` ↔ `B`.
pub fn other_slot(s: char) -> char {
    if s == 'A' { 'B' } else { 'A' }
}

/// Bound on a `grub.cfg` read back from a boot partition.
const MAX_GRUB_CFG: u64 = 64 << 10;

/// Whether `name` (a version or an OS name) may become part of a boot entry's file name or
/// GRUB title: ASCII letters, digits, `.`, `_`, `-` (a `+` would read as a boot counter, a
/// `/` as a directory, GRUB's specials would need quoting).
pub fn valid_entry_part(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// systemd-boot's version order (`strverscmp_improved`, which sorts type #2 entries newest
/// first): `~` sorts before the end of a string (pre-releases), a longer string is newer,
/// then `-`, `^` and `.` separate segments in that order of age, numeric segments compare as
/// numbers and are newer than alphabetic ones. Other characters are skipped.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let valid = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.');
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        let skip = |s: &[u8]| s.iter().take_while(|c| !valid(c)).count();
        a = &a[skip(a)..];
        b = &b[skip(b)..];
        let (ca, cb) = (a.first().copied(), b.first().copied());
        // `~` (pre-release) is older than anything, the end of the string included
        if ca == Some(b'~') || cb == Some(b'~') {
            match (ca == Some(b'~'), cb == Some(b'~')) {
                (true, false) => return Less,
                (false, true) => return Greater,
                _ => {}
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }
        // then the longer string is newer
        let (Some(ca), Some(cb)) = (ca, cb) else {
            return ca.is_some().cmp(&cb.is_some());
        };
        // separators, older in this order: `-`, `^`, `.`
        if let Some(sep) = [b'-', b'^', b'.']
            .into_iter()
            .find(|s| ca == *s || cb == *s)
        {
            if ca != cb {
                return if ca == sep { Less } else { Greater };
            }
            a = &a[1..];
            b = &b[1..];
            continue;
        }
        if ca.is_ascii_digit() || cb.is_ascii_digit() {
            // numeric segments compare as numbers, and are newer than alphabetic ones
            let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
            let (na, nb) = (run(a), run(b));
            let zeros = |s: &[u8]| s.iter().take_while(|c| **c == b'0').count();
            let (da, db) = (&a[zeros(&a[..na])..na], &b[zeros(&b[..nb])..nb]);
            let o = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if o != Equal {
                return o;
            }
            a = &a[na..];
            b = &b[nb..];
        } else {
            let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let (na, nb) = (run(a), run(b));
            let o = a[..na].cmp(&b[..nb]);
            if o != Equal {
                return o;
            }
            a = &a[na..];
            b = &b[nb..];
        }
    }
}

/// The vfat boot partition `dev` mounted at `target` until dropped (then synced and
/// unmounted, detached lazily if busy, so that nothing under it is ever deleted with the
/// directory).
#[derive(Debug)]
pub struct BootMount {
    target: PathBuf,
}

impl BootMount {
    /// Mounts `dev` (vfat) at `target`, created if missing.
    pub fn vfat(dev: &str, target: &Path) -> Result<Self, InstallError> {
        use nix::mount::MsFlags;
        fs::create_dir_all(target).map_err(io_err(&target.display().to_string()))?;
        nix::mount::mount(
            Some(dev),
            target,
            Some("vfat"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| InstallError::Io {
            what: format!("mounting {dev} (vfat) on {}", target.display()),
            source: e.into(),
        })?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Syncs and unmounts, reporting a failure (the mount is then detached lazily).
    pub fn unmount(self) -> Result<(), InstallError> {
        let r = self.release();
        std::mem::forget(self);
        r
    }

    fn release(&self) -> Result<(), InstallError> {
        nix::unistd::sync();
        match umount_settling(&self.target) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
                Err(InstallError::Io {
                    what: format!("unmounting {}", self.target.display()),
                    source: e.into(),
                })
            }
        }
    }
}

/// Unmounts `target`, retrying EBUSY for up to 5 s: a process forked elsewhere in PID 1 (a
/// service being started) holds a copy of the open files of that moment until it closes its
/// descriptors, and the mount is busy meanwhile.
pub fn umount_settling(target: &Path) -> nix::Result<()> {
    let mut tries = 0;
    loop {
        match nix::mount::umount(target) {
            Err(nix::errno::Errno::EBUSY) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

impl Drop for BootMount {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// A UKI file name in `EFI/Linux/`: `<stem>[+LEFT[-DONE]].efi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiName {
    /// `Talos-v1.14.1`, `Talos-v1.14.1~1`.
    pub stem: String,
    /// Boot counting: tries left and done, when counted.
    pub counter: Option<(u32, u32)>,
}

impl UkiName {
    /// Parses a file name; `None` for anything but `*.efi`.
    pub fn parse(file: &str) -> Option<Self> {
        let base = file
            .strip_suffix(".efi")
            .or_else(|| file.strip_suffix(".EFI"))?;
        if let Some((stem, count)) = base.rsplit_once('+') {
            let counter = match count.split_once('-') {
                Some((l, d)) => l.parse().ok().zip(d.parse().ok()),
                None => count.parse().ok().map(|l| (l, 0)),
            };
            if counter.is_some() && !stem.is_empty() {
                return Some(Self {
                    stem: stem.to_string(),
                    counter,
                });
            }
        }
        Some(Self {
            stem: base.to_string(),
            counter: None,
        })
    }

    /// The file name.
    pub fn file(&self) -> String {
        match self.counter {
            Some((l, 0)) => format!("{}+{l}.efi", self.stem),
            Some((l, d)) => format!("{}+{l}-{d}.efi", self.stem),
            None => format!("{}.efi", self.stem),
        }
    }

    /// The version in the stem: `Talos-v1.14.1~1` → `v1.14.1`.
    pub fn version(&self) -> Option<&str> {
        let (_, v) = self.stem.split_once('-')?;
        Some(v.split('~').next().unwrap_or(v))
    }
}

/// The stem of the next UKI for `version` (Talos's `generateNextUKIName`): `<os>-<version>`,
/// or `<os>-<version>~N` with N one above the highest index of that version's UKIs.
pub fn next_uki_stem(os: &str, version: &str, existing: &[UkiName]) -> String {
    let base = format!("{os}-{version}");
    let mut max: Option<u32> = None;
    for e in existing {
        if e.stem == base {
            max = Some(max.unwrap_or(0));
        } else if let Some(i) = e
            .stem
            .strip_prefix(&base)
            .and_then(|r| r.strip_prefix('~'))
            .and_then(|i| i.parse::<u32>().ok())
        {
            max = Some(max.map_or(i, |m| m.max(i)));
        }
    }
    match max {
        Some(m) => format!("{base}~{}", m + 1),
        None => base,
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), InstallError> {
    let what = path.display().to_string();
    let mut f = File::create(path).map_err(io_err(&what))?;
    f.write_all(data).map_err(io_err(&what))?;
    f.sync_all().map_err(io_err(&what))
}

fn copy_synced(from: &Path, to: &Path) -> Result<(), InstallError> {
    let what = to.display().to_string();
    let mut src = File::open(from).map_err(io_err(&from.display().to_string()))?;
    let mut dst = File::create(to).map_err(io_err(&what))?;
    std::io::copy(&mut src, &mut dst).map_err(io_err(&what))?;
    dst.sync_all().map_err(io_err(&what))
}

/// Renames within a directory, then syncs the file and the directory. On FAT the directory
/// entry is the file's inode: the entry under the new name gets the file's first cluster and
/// size only when the file's inode is written, which a sync of the directory does not do.
fn rename_synced(dir: &Path, from: &str, to: &str) -> Result<(), InstallError> {
    let what = dir.join(to).display().to_string();
    fs::rename(dir.join(from), dir.join(to)).map_err(io_err(&what))?;
    File::open(dir.join(to))
        .and_then(|f| f.sync_all())
        .map_err(io_err(&what))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir.display().to_string()))
}

/// The UKIs in `<esp>/EFI/Linux`, with their file names, sorted.
pub fn ukis(esp: &Path) -> Result<Vec<(String, UkiName)>, InstallError> {
    let dir = esp.join(UKI_DIR);
    let what = dir.display().to_string();
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).map_err(io_err(&what))? {
        let name = e.map_err(io_err(&what))?.file_name();
        let name = name.to_string_lossy().into_owned();
        if let Some(u) = UkiName::parse(&name) {
            out.push((name, u));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The upgrade on systemd-boot's ESP: every UKI but the booted one (`booted`, the
/// `LoaderEntrySelected` file name) and leftovers of an interrupted upgrade go; the new UKI
/// is written under a temporary name, synced, `pause` runs (the installer's test hook), and
/// it is renamed to `<stem>+1.efi`; systemd-boot (`boot_efi`) is replaced the same way.
/// Returns the new file name.
pub fn sdboot_stage(
    esp: &Path,
    uki: &Path,
    boot_efi: Option<(&Path, &str)>,
    os: &str,
    version: &str,
    booted: &str,
    pause: impl FnOnce(),
) -> Result<String, InstallError> {
    for (what, v) in [("version", version), ("name", os)] {
        if !valid_entry_part(v) {
            return Err(InstallError::Value(format!(
                "the {what} {v:?} cannot be part of a boot entry (letters, digits, . _ -)"
            )));
        }
    }
    // without EFI variables the order decides: the new entry must sort first
    let booted_version = UkiName::parse(booted)
        .and_then(|u| u.version().map(str::to_string))
        .unwrap_or_default();
    if version_cmp(version, &booted_version) != std::cmp::Ordering::Greater {
        return Err(InstallError::Unsupported(format!(
            "systemd-boot boots the newest version first, and {version} is not newer than the \
             booted {booted_version}: downgrades and reinstalls of the same version are not \
             supported on systemd-boot layouts yet"
        )));
    }
    let dir = esp.join(UKI_DIR);
    let what = dir.display().to_string();
    let booted_stem = UkiName::parse(booted).map(|u| u.stem);
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for e in fs::read_dir(&dir).map_err(io_err(&what))? {
        let name = e.map_err(io_err(&what))?.file_name();
        let name = name.to_string_lossy().into_owned();
        match UkiName::parse(&name) {
            Some(u)
                if booted_stem
                    .as_ref()
                    .is_some_and(|b| b.eq_ignore_ascii_case(&u.stem)) =>
            {
                kept.push(u)
            }
            Some(_) => gone.push(name),
            None if name.ends_with(TMP) => gone.push(name),
            None => {}
        }
    }
    if kept.is_empty() {
        return Err(InstallError::Unsupported(format!(
            "the booted entry {booted:?} is not in {what}"
        )));
    }
    for name in gone {
        fs::remove_file(dir.join(&name)).map_err(io_err(&what))?;
    }
    let stem = next_uki_stem(os, version, &kept);
    let name = UkiName {
        stem,
        counter: Some((1, 0)),
    }
    .file();
    let tmp = format!("{name}{TMP}");
    copy_synced(uki, &dir.join(&tmp))?;
    if let Some((src, rel)) = boot_efi {
        let dst = esp.join(rel);
        let parent = dst.parent().unwrap_or(esp);
        let file = dst
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t = format!("{file}{TMP}");
        copy_synced(src, &parent.join(&t))?;
        rename_synced(parent, &t, &file)?;
    }
    pause();
    rename_synced(&dir, &tmp, &name)?;
    Ok(name)
}

/// At ready: the booted UKI (`booted`, its `LoaderEntrySelected` id: the file name
/// lowercased, with the counter it had before systemd-boot took a try) loses its boot
/// counter. Returns the new file name when there was a counter.
pub fn sdboot_bless(esp: &Path, booted: &str) -> Result<Option<String>, InstallError> {
    let Some(b) = UkiName::parse(booted) else {
        return Ok(None);
    };
    for (file, u) in ukis(esp)? {
        if u.stem.eq_ignore_ascii_case(&b.stem) && u.counter.is_some() {
            let plain = UkiName {
                stem: u.stem.clone(),
                counter: None,
            }
            .file();
            rename_synced(&esp.join(UKI_DIR), &file, &plain)?;
            return Ok(Some(plain));
        }
    }
    Ok(None)
}

/// Before the reboot of a boot on trial that failed: the booted UKI gets no try left
/// (`+0-N`), so that systemd-boot sorts it last. Returns its new name.
pub fn sdboot_mark_bad(esp: &Path, booted: &str) -> Result<Option<String>, InstallError> {
    let Some(b) = UkiName::parse(booted) else {
        return Ok(None);
    };
    for (file, u) in ukis(esp)? {
        if let (true, Some((left, done))) = (u.stem.eq_ignore_ascii_case(&b.stem), u.counter) {
            if left == 0 {
                return Ok(Some(file));
            }
            let bad = UkiName {
                stem: u.stem.clone(),
                counter: Some((0, done + left)),
            }
            .file();
            rename_synced(&esp.join(UKI_DIR), &file, &bad)?;
            return Ok(Some(bad));
        }
    }
    Ok(None)
}

/// After a rollback: the UKIs without tries left (the failed upgrade) are deleted. Returns
/// their versions.
pub fn sdboot_forget_failed(esp: &Path) -> Result<Vec<String>, InstallError> {
    let mut out = Vec::new();
    let dir = esp.join(UKI_DIR);
    for (file, u) in ukis(esp)? {
        if matches!(u.counter, Some((0, _))) {
            fs::remove_file(dir.join(&file)).map_err(io_err(&file))?;
            out.push(u.version().unwrap_or("unknown").to_string());
        }
    }
    if !out.is_empty() {
        sync_dir(&dir)?;
    }
    Ok(out)
}

/// One menu entry of an installed disk's `grub.cfg`, as written (GRUB-quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubSlot {
    /// `A` or `B`.
    pub label: char,
    /// `A - Talos v1.14.0`, quoted.
    pub title: String,
    /// The command line, quoted.
    pub cmdline: String,
}

impl GrubSlot {
    /// The version at the end of the title.
    pub fn version(&self) -> &str {
        self.title.rsplit(' ').next().unwrap_or("")
    }
}

/// An installed disk's `grub.cfg`: slots A and/or B, the default and fallback slot, the
/// reset entry's title (quoted) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubAb {
    /// The slots, A before B.
    pub slots: Vec<GrubSlot>,
    /// The default slot.
    pub default: char,
    /// The fallback slot.
    pub fallback: Option<char>,
    /// The reset entry's title.
    pub reset: Option<String>,
}

fn grub_unquote(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        if !esc && c == '\\' {
            esc = true;
            continue;
        }
        esc = false;
        o.push(c);
    }
    o
}

/// The text between the first `"` and the next unescaped `"`.
fn quoted(s: &str) -> Option<&str> {
    let rest = s.split_once('"')?.1;
    let mut esc = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\\' if !esc => esc = true,
            '"' if !esc => return Some(&rest[..i]),
            _ => esc = false,
        }
    }
    None
}

impl GrubAb {
    /// Parses a `grub.cfg` written by the installer (docs/formats/disk-layout.md) or by an
    /// upgrade (docs/formats/upgrade.md).
    pub fn parse(text: &str) -> Result<Self, InstallError> {
        let bad = |m: &str| InstallError::Value(format!("grub.cfg: {m}"));
        let (mut default_title, mut fallback_title) = (None, None);
        let mut slots: Vec<GrubSlot> = Vec::new();
        let mut reset = None;
        let mut title: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(r) = line.strip_prefix("set default=") {
                if !r.contains("${") {
                    default_title = quoted(r).map(str::to_string);
                }
            } else if let Some(r) = line.strip_prefix("set fallback=") {
                // the first one: the one-shot block has its own
                if fallback_title.is_none() {
                    fallback_title = quoted(r).map(str::to_string);
                }
            } else if line.starts_with("menuentry ") {
                title = quoted(line).map(str::to_string);
            } else if let (Some(r), Some(t)) = (line.strip_prefix("linux /"), &title) {
                let (path, cmdline) = r.split_once(' ').unwrap_or((r, ""));
                let label = match path {
                    "A/vmlinuz" => 'A',
                    "B/vmlinuz" => 'B',
                    _ => return Err(bad(&format!("an entry boots /{path}"))),
                };
                if cmdline.contains("talos.experimental.wipe=") {
                    reset = Some(t.clone());
                } else if !slots.iter().any(|s| s.label == label) {
                    slots.push(GrubSlot {
                        label,
                        title: t.clone(),
                        cmdline: cmdline.to_string(),
                    });
                }
            } else if line == "}" {
                title = None;
            }
        }
        slots.sort_by_key(|s| s.label);
        let slot_of = |t: &Option<String>| {
            t.as_ref()
                .and_then(|t| slots.iter().find(|s| &s.title == t).map(|s| s.label))
        };
        let default = slot_of(&default_title).ok_or_else(|| bad("no default entry"))?;
        let fallback = slot_of(&fallback_title);
        Ok(Self {
            slots: slots.clone(),
            default,
            fallback,
            reset,
        })
    }

    /// The slot `label`.
    pub fn slot(&self, label: char) -> Option<&GrubSlot> {
        self.slots.iter().find(|s| s.label == label)
    }

    /// The configuration: the default and fallback, GRUB's one-shot block (`next_entry` in
    /// `grubenv`, cleared before it is booted), the slots and the reset entry.
    pub fn render(&self) -> String {
        let title = |l: char| self.slot(l).map(|s| s.title.as_str()).unwrap_or("");
        let mut cfg = format!("set default=\"{}\"\n", title(self.default));
        if let Some(f) = self.fallback.filter(|f| *f != self.default) {
            cfg.push_str(&format!("set fallback=\"{}\"\n", title(f)));
        }
        // the one-shot boot falls back on the default entry if its own does not load
        cfg.push_str(&format!(
            "\nif [ -s $prefix/grubenv ]; then\n  load_env\nfi\nif [ \"${{next_entry}}\" ] ; then\n  \
             set fallback=\"{}\"\n  set default=\"${{next_entry}}\"\n  set next_entry=\n  \
             save_env next_entry\nfi\n\nset timeout=3\n\ninsmod all_video\n\n\
             terminal_input console\nterminal_output console\n\n",
            title(self.default)
        ));
        let entry = |title: &str, l: char, cmdline: &str| {
            format!(
                "menuentry \"{title}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  linux /{l}/vmlinuz {cmdline}\n  initrd /{l}/initramfs.xz\n}}\n"
            )
        };
        for s in &self.slots {
            cfg.push_str(&entry(&s.title, s.label, &s.cmdline));
        }
        if let (Some(r), Some(d)) = (&self.reset, self.slot(self.default)) {
            cfg.push_str(&entry(
                r,
                d.label,
                &format!(
                    "{} talos.experimental.wipe=system:EPHEMERAL,STATE",
                    d.cmdline
                ),
            ));
        }
        cfg
    }
}

/// A GRUB environment block with `next_entry` = `title` (unquoted) or none.
pub fn grubenv(next_entry: Option<&str>) -> Vec<u8> {
    let mut b = b"# GRUB Environment Block\n".to_vec();
    if let Some(t) = next_entry {
        b.extend_from_slice(b"next_entry=");
        for c in grub_unquote(t).chars() {
            if c == '\\' || c == '\n' {
                b.push(b'\\');
            }
            let mut buf = [0u8; 4];
            b.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        b.push(b'\n');
    }
    b.resize(GRUBENV_SIZE.max(b.len()), b'#');
    b
}

/// Reads `grub.cfg` of a mounted BOOT (at most 64 KiB).
pub fn read_grub(boot: &Path) -> Result<GrubAb, InstallError> {
    use std::io::Read;
    let p = boot.join(GRUB_CFG);
    let what = p.display().to_string();
    let mut b = Vec::new();
    File::open(&p)
        .and_then(|f| f.take(MAX_GRUB_CFG + 1).read_to_end(&mut b))
        .map_err(io_err(&what))?;
    if b.len() as u64 > MAX_GRUB_CFG {
        return Err(InstallError::Value(format!(
            "{what}: larger than {MAX_GRUB_CFG} bytes"
        )));
    }
    GrubAb::parse(&String::from_utf8_lossy(&b))
}

/// Replaces `grub.cfg` (temporary file, sync, rename).
fn write_grub(boot: &Path, cfg: &GrubAb) -> Result<(), InstallError> {
    let dir = boot.join("grub");
    write_synced(&dir.join(format!("grub.cfg{TMP}")), cfg.render().as_bytes())?;
    rename_synced(&dir, &format!("grub.cfg{TMP}"), "grub.cfg")
}

fn write_grubenv(boot: &Path, next: Option<&str>) -> Result<(), InstallError> {
    let dir = boot.join("grub");
    write_synced(&dir.join(format!("grubenv{TMP}")), &grubenv(next))?;
    rename_synced(&dir, &format!("grubenv{TMP}"), "grubenv")
}

/// The upgrade on GRUB's BOOT: the kernel and initramfs go into the slot that did not boot
/// (`booted`), `pause` runs (the installer's test hook), then `grub.cfg` gets the new entry
/// (the booted slot stays the default) and `grubenv` names it as the next boot, once.
/// Returns the new slot.
#[allow(clippy::too_many_arguments)]
pub fn grub_stage(
    boot: &Path,
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    os: &str,
    version: &str,
    booted: char,
    pause: impl FnOnce(),
) -> Result<char, InstallError> {
    for (what, v) in [("version", version), ("name", os)] {
        if !valid_entry_part(v) {
            return Err(InstallError::Value(format!(
                "the {what} {v:?} cannot be part of a boot entry (letters, digits, . _ -)"
            )));
        }
    }
    if cmdline.contains('\'') {
        return Err(InstallError::Value(
            "the command line holds a ' which grub.cfg cannot carry".into(),
        ));
    }
    let mut cfg = read_grub(boot)?;
    if cfg.slot(booted).is_none() {
        return Err(InstallError::Unsupported(format!(
            "grub.cfg has no entry for the booted slot {booted}"
        )));
    }
    let new = other_slot(booted);
    let dir: PathBuf = boot.join(new.to_string());
    fs::create_dir_all(&dir).map_err(io_err(&dir.display().to_string()))?;
    for (src, name) in [(kernel, "vmlinuz"), (initramfs, "initramfs.xz")] {
        let t = format!("{name}{TMP}");
        copy_synced(src, &dir.join(&t))?;
        rename_synced(&dir, &t, name)?;
    }
    pause();
    let slot = GrubSlot {
        label: new,
        title: grub_quote(&format!("{new} - {os} {version}")),
        cmdline: grub_quote(cmdline),
    };
    cfg.slots.retain(|s| s.label != new);
    cfg.slots.push(slot.clone());
    cfg.slots.sort_by_key(|s| s.label);
    cfg.default = booted;
    cfg.fallback = None;
    // the one-shot first: a grub.cfg that names the new slot is only read with it in place
    write_grubenv(boot, Some(&slot.title))?;
    write_grub(boot, &cfg)?;
    Ok(new)
}

/// At ready on GRUB: the booted slot becomes the default and the other one the fallback
/// (Talos's flip), and no one-shot is left. Returns whether `grub.cfg` changed.
pub fn grub_bless(boot: &Path, booted: char) -> Result<bool, InstallError> {
    let mut cfg = read_grub(boot)?;
    let other = other_slot(booted);
    let fallback = cfg.slot(other).map(|_| other);
    let changed = cfg.default != booted || cfg.fallback != fallback;
    if changed {
        cfg.default = booted;
        cfg.fallback = fallback;
        write_grub(boot, &cfg)?;
    }
    if boot.join(GRUBENV).exists() {
        write_grubenv(boot, None)?;
    }
    Ok(changed)
}

/// A failed boot on trial or a rollback on GRUB: `previous` is the default again and no
/// one-shot is left. Returns the version of the other slot (the failed one).
pub fn grub_revert(boot: &Path, previous: char) -> Result<Option<String>, InstallError> {
    let mut cfg = read_grub(boot)?;
    if cfg.slot(previous).is_none() {
        return Err(InstallError::Unsupported(format!(
            "grub.cfg has no slot {previous} to go back to"
        )));
    }
    let other = other_slot(previous);
    if cfg.default != previous || cfg.fallback.is_some() {
        cfg.default = previous;
        cfg.fallback = None;
        write_grub(boot, &cfg)?;
    }
    write_grubenv(boot, None)?;
    Ok(cfg.slot(other).map(|s| s.version().to_string()))
}

/// systemd-boot's vendor GUID for its loader variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// systemd-boot's `LoaderEntrySelected` (the booted entry's id, its file name for a UKI),
/// from efivarfs (UTF-16LE after 4 attribute bytes); `None` when not booted by it or
/// efivarfs is not mounted.
pub fn loader_entry_selected() -> Option<String> {
    use std::io::Read;
    let path = format!("/sys/firmware/efi/efivars/LoaderEntrySelected-{LOADER_GUID}");
    let mut b = Vec::new();
    File::open(path).ok()?.take(4096).read_to_end(&mut b).ok()?;
    let units: Vec<u16> = b
        .get(4..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())).then_some(s)
}

/// `/dev/vda` + 5 → `/dev/vda5`; `/dev/nvme0n1` + 5 → `/dev/nvme0n1p5`.
pub fn partition_device(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// The GRUB slot the kernel was booted from: GRUB puts `BOOT_IMAGE=/A/vmlinuz` first on the
/// command line.
pub fn grub_booted_slot(cmdline: &str) -> Option<char> {
    let img = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("BOOT_IMAGE="))?;
    let img = img.rsplit_once(')').map_or(img, |(_, p)| p);
    match img {
        "/A/vmlinuz" => Some('A'),
        "/B/vmlinuz" => Some('B'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uki_names() {
        let p = UkiName::parse("Talos-v1.14.1+0-1.efi").unwrap();
        assert_eq!(p.stem, "Talos-v1.14.1");
        assert_eq!(p.counter, Some((0, 1)));
        assert_eq!(p.file(), "Talos-v1.14.1+0-1.efi");
        assert_eq!(p.version(), Some("v1.14.1"));
        assert_eq!(
            UkiName::parse("Talos-v1.14.1+1.efi").unwrap().counter,
            Some((1, 0))
        );
        let plain = UkiName::parse("Talos-v1.14.0~2.efi").unwrap();
        assert_eq!((plain.counter, plain.version()), (None, Some("v1.14.0")));
        assert!(UkiName::parse("Talos-v1.efi.tmp").is_none());
        assert_eq!(
            UkiName::parse("Talos-v1+x.efi").unwrap().stem,
            "Talos-v1+x",
            "not a counter"
        );
        let ex: Vec<UkiName> = ["Talos-v1.efi", "Talos-v1~3+1.efi", "Talos-v2.efi"]
            .iter()
            .map(|f| UkiName::parse(f).unwrap())
            .collect();
        assert_eq!(next_uki_stem("Talos", "v1", &ex), "Talos-v1~4");
        assert_eq!(next_uki_stem("Talos", "v3", &ex), "Talos-v3");
        assert_eq!(next_uki_stem("Talos", "v2", &ex[2..]), "Talos-v2~1");
    }

    const INSTALLED: &str = "set default=\"A - Talos v1.14.0\"\n\nset timeout=3\n\ninsmod all_video\n\n\
terminal_input console\nterminal_output console\n\nmenuentry \"A - Talos v1.14.0\" {\n  set gfxmode=auto\n  \
set gfxpayload=text\n  linux /A/vmlinuz console=ttyS0 a\\;b\n  initrd /A/initramfs.xz\n}\n\
menuentry \"Reset Talos installation and return to maintenance mode\" {\n  set gfxmode=auto\n  \
set gfxpayload=text\n  linux /A/vmlinuz console=ttyS0 a\\;b talos.experimental.wipe=system:EPHEMERAL,STATE\n  \
initrd /A/initramfs.xz\n}\n";

    #[test]
    fn grub_a_b() {
        let t = tempfile::tempdir().unwrap();
        let boot = t.path();
        fs::create_dir_all(boot.join("grub")).unwrap();
        fs::write(boot.join(GRUB_CFG), INSTALLED).unwrap();
        let parsed = GrubAb::parse(INSTALLED).unwrap();
        assert_eq!(parsed.default, 'A');
        assert_eq!(parsed.slots.len(), 1);
        assert_eq!(parsed.slots[0].cmdline, "console=ttyS0 a\\;b");
        let (k, i) = (boot.join("k"), boot.join("i"));
        fs::write(&k, b"kernel").unwrap();
        fs::write(&i, b"initrd").unwrap();
        let mut paused = false;
        let new = grub_stage(boot, &k, &i, "x=$y", "Talos", "v1.14.1", 'A', || {
            paused = true
        })
        .unwrap();
        assert!(paused);
        assert_eq!(new, 'B');
        assert_eq!(fs::read(boot.join("B/vmlinuz")).unwrap(), b"kernel");
        let env = fs::read(boot.join(GRUBENV)).unwrap();
        assert_eq!(env.len(), 1024);
        assert!(env.starts_with(b"# GRUB Environment Block\nnext_entry=B - Talos v1.14.1\n#"));
        let cfg = fs::read_to_string(boot.join(GRUB_CFG)).unwrap();
        assert!(
            cfg.starts_with("set default=\"A - Talos v1.14.0\"\n\nif [ -s $prefix/grubenv ]; then\n  load_env\nfi\n"),
            "{cfg}"
        );
        assert!(cfg.contains("linux /B/vmlinuz x=\\$y\n"), "{cfg}");
        let staged = GrubAb::parse(&cfg).unwrap();
        assert_eq!((staged.default, staged.slots.len()), ('A', 2));
        assert_eq!(staged.slot('B').unwrap().version(), "v1.14.1");
        // the new slot reached ready
        assert!(grub_bless(boot, 'B').unwrap());
        let blessed = GrubAb::parse(&fs::read_to_string(boot.join(GRUB_CFG)).unwrap()).unwrap();
        assert_eq!((blessed.default, blessed.fallback), ('B', Some('A')));
        assert!(
            !fs::read(boot.join(GRUBENV))
                .unwrap()
                .windows(10)
                .any(|w| w == b"next_entry")
        );
        assert!(!grub_bless(boot, 'B').unwrap());
        // the reset entry follows the default slot
        assert!(
            fs::read_to_string(boot.join(GRUB_CFG))
                .unwrap()
                .contains("linux /B/vmlinuz x=\\$y talos.experimental.wipe=")
        );
        // a failed upgrade from B: back to B, the failed version named
        grub_stage(boot, &k, &i, "z", "Talos", "v1.14.2", 'B', || {}).unwrap();
        assert_eq!(grub_revert(boot, 'B').unwrap().as_deref(), Some("v1.14.2"));
        assert!(grub_revert(boot, 'C').is_err());
    }

    #[test]
    fn sdboot_counting() {
        let t = tempfile::tempdir().unwrap();
        let esp = t.path();
        let dir = esp.join(UKI_DIR);
        fs::create_dir_all(&dir).unwrap();
        for f in [
            "Talos-v1.14.0.efi",
            "Talos-v1.13.0.efi",
            "Talos-v9+0-1.efi.tmp",
        ] {
            fs::write(dir.join(f), f).unwrap();
        }
        let uki = esp.join("new.efi");
        fs::write(&uki, b"new").unwrap();
        let name = sdboot_stage(
            esp,
            &uki,
            None,
            "Talos",
            "v1.14.1",
            "Talos-v1.14.0.efi",
            || {},
        )
        .unwrap();
        assert_eq!(name, "Talos-v1.14.1+1.efi");
        let names =
            |esp: &Path| -> Vec<String> { ukis(esp).unwrap().into_iter().map(|u| u.0).collect() };
        assert_eq!(names(esp), ["Talos-v1.14.0.efi", "Talos-v1.14.1+1.efi"]);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "the leftover went");
        // systemd-boot took the try; the boot reached ready
        fs::rename(dir.join(&name), dir.join("Talos-v1.14.1+0-1.efi")).unwrap();
        assert_eq!(
            sdboot_bless(esp, "Talos-v1.14.1+0-1.efi")
                .unwrap()
                .as_deref(),
            Some("Talos-v1.14.1.efi")
        );
        assert_eq!(sdboot_bless(esp, "Talos-v1.14.1.efi").unwrap(), None);
        // the same version again, an older one, a bad name: refused, nothing changed
        for v in ["v1.14.1", "v1.14.0", "v1+2"] {
            assert!(sdboot_stage(esp, &uki, None, "Talos", v, "Talos-v1.14.1.efi", || {}).is_err());
        }
        assert_eq!(names(esp), ["Talos-v1.14.0.efi", "Talos-v1.14.1.efi"]);
        // a failed boot is marked bad and forgotten
        let name = sdboot_stage(
            esp,
            &uki,
            None,
            "Talos",
            "v1.14.2",
            "Talos-v1.14.1.efi",
            || {},
        )
        .unwrap();
        assert_eq!(name, "Talos-v1.14.2+1.efi");
        assert_eq!(
            sdboot_mark_bad(esp, "talos-v1.14.2+1.efi")
                .unwrap()
                .as_deref(),
            Some("Talos-v1.14.2+0-1.efi")
        );
        assert_eq!(sdboot_forget_failed(esp).unwrap(), ["v1.14.2"]);
        assert_eq!(names(esp), ["Talos-v1.14.1.efi"]);
        assert!(sdboot_stage(esp, &uki, None, "Talos", "v2", "Talos-v0.efi", || {}).is_err());
    }

    #[test]
    fn systemd_boot_version_order() {
        use std::cmp::Ordering::*;
        for (a, b, o) in [
            ("v1.14.1", "v1.14.0", Greater),
            ("v1.14.10", "v1.14.9", Greater),
            ("v1.14.0", "v1.14.0", Equal),
            ("v1.15.0-alpha.1", "v1.14.9", Greater),
            ("v1.14.0~rc1", "v1.14.0", Less),
            ("v1.14.0-alpha.1", "v1.14.0", Greater),
            ("v1.14.0-1", "v1.14.0.1", Less),
            ("v2", "v10", Less),
            ("v1.014", "v1.14", Equal),
            ("v1a", "v1", Greater),
            ("v1a", "v11", Less),
        ] {
            assert_eq!(version_cmp(a, b), o, "{a} vs {b}");
            assert_eq!(version_cmp(b, a), o.reverse(), "{b} vs {a}");
        }
        assert!(valid_entry_part("v1.14.0-alpha.1"));
        for bad in ["", "v1+2", "v1/2", "v1;2", "v 1", "v1'"] {
            assert!(!valid_entry_part(bad), "{bad}");
        }
    }

    #[test]
    fn partition_devices() {
        assert_eq!(partition_device("/dev/vda", 5), "/dev/vda5");
        assert_eq!(partition_device("/dev/sda", 12), "/dev/sda12");
        assert_eq!(partition_device("/dev/nvme0n1", 5), "/dev/nvme0n1p5");
        assert_eq!(partition_device("/dev/mmcblk0", 6), "/dev/mmcblk0p6");
    }

    #[test]
    fn grub_slot_from_cmdline() {
        assert_eq!(
            grub_booted_slot("BOOT_IMAGE=/B/vmlinuz console=ttyS0"),
            Some('B')
        );
        assert_eq!(
            grub_booted_slot("BOOT_IMAGE=(hd0,gpt3)/A/vmlinuz x"),
            Some('A')
        );
        assert_eq!(grub_booted_slot("console=ttyS0"), None);
    }
}
