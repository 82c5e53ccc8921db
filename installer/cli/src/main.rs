//! `installer`: the entrypoint of installer images (docs/formats/install.md), as Talos's
//! `installer install`: writes the installed layout of the target version — EFI, BIOS, BOOT,
//! META, STATE and EPHEMERAL per the version's layout, STATE and EPHEMERAL formatted as
//! ext4 — onto a block device or a disk image file, from the boot assets under
//! `/usr/install/<arch>/`.
//!
//! In: the flags (Talos's where they exist), `INSTALLER_META_BASE64`, the boot assets: either
//! an installer image's UKI (`vmlinuz.efi`, version and command line taken from it; GRUB
//! layouts boot its kernel and initramfs) or the base assets (`vmlinuz`, `initramfs.xz`,
//! `systemd-stub.efi`; the UKI is assembled here). Out: the disk. Everything but the two
//! filesystems is the imager's disk layout, made by the imager library; a block device gets
//! it copied extent by extent after the boot partitions are zeroed.

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use imager::error::{Error, ExitCode, Result, WithCode};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Partition names of the layouts this installer writes: a disk holding only these is a
/// previous installation, not a foreign one.
const OWN_PARTITIONS: &[&str] = &["EFI", "BIOS", "BOOT", "META", "STATE", "EPHEMERAL"];
/// Bound on an installer image's UKI.
const MAX_UKI: u64 = 1 << 30;

#[derive(Parser)]
#[command(
    name = "installer",
    version,
    about = "Install the operating system onto a disk (the entrypoint of installer images)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the installed layout onto a disk.
    Install(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// The disk: a block device, or a disk image file (kept at its size).
    #[arg(long)]
    disk: PathBuf,
    /// Platform (`talos.platform=`).
    #[arg(long, default_value = "metal")]
    platform: String,
    /// Target architecture (amd64 or arm64).
    #[arg(long, default_value = imager::cli::host_arch())]
    arch: String,
    /// An extra kernel argument (repeatable; not for a UKI, which carries its command line).
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,
    /// A META value, `KEY=VALUE` (repeatable; after those of INSTALLER_META_BASE64).
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// The value of `talos.config=` on the installed kernel command line.
    #[arg(long)]
    config: Option<String>,
    /// Boot loader layout: sd-boot, grub or dual-boot (default: sd-boot when running under
    /// UEFI, else grub; grub with a board overlay).
    #[arg(long)]
    bootloader: Option<String>,
    /// Write zeros over the whole disk first.
    #[arg(long)]
    zero: bool,
    /// Install over a disk that holds another partition table.
    #[arg(long)]
    force: bool,
    /// Upgrade the installation on the disk (run by the node): the new version goes beside
    /// the booted one, which stays the fallback (docs/formats/upgrade.md).
    #[arg(long)]
    upgrade: bool,
    /// With --upgrade: format EPHEMERAL again (an upgrade without --preserve).
    #[arg(long, requires = "upgrade")]
    wipe_ephemeral: bool,
    /// Where the boot assets are (`<dir>/<arch>/`).
    #[arg(
        long = "install-dir",
        env = "INSTALLER_INSTALL_DIR",
        default_value = "/usr/install"
    )]
    install_dir: PathBuf,
}

/// META values: INSTALLER_META_BASE64's, then `--meta`'s (a later key replaces an earlier one).
fn meta_values(a: &InstallArgs) -> Result<Vec<(u8, String)>> {
    let mut out = Vec::new();
    if let Ok(enc) = std::env::var("INSTALLER_META_BASE64")
        && !enc.is_empty()
    {
        out.extend(
            adv::env::decode(&enc)
                .map_err(|e| Error::invalid(format!("INSTALLER_META_BASE64: {e}")))?,
        );
    }
    for m in &a.meta {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--meta {m:?}: expected KEY=VALUE")))?;
        let key =
            adv::env::parse_key(k).map_err(|e| Error::invalid(format!("--meta {m:?}: {e}")))?;
        out.push((key, v.to_string()));
    }
    Ok(out)
}

/// An installer image's UKI, taken apart.
struct Uki {
    path: PathBuf,
    version: String,
    cmdline: String,
}

/// Reads `vmlinuz.efi`: its version (`.osrel` VERSION_ID) and command line, and writes its
/// kernel and initramfs into `work` (GRUB layouts boot them).
fn open_uki(path: &Path, work: &Path) -> Result<Uki> {
    let what = || format!("{}", path.display());
    let f = File::open(path).code(ExitCode::Io, what)?;
    let mut data = Vec::new();
    f.take(MAX_UKI + 1)
        .read_to_end(&mut data)
        .code(ExitCode::Io, what)?;
    if data.len() as u64 > MAX_UKI {
        return Err(Error::invalid(format!(
            "{}: larger than {MAX_UKI} bytes",
            what()
        )));
    }
    let pe = pe::Pe::parse(&data).map_err(|e| Error::invalid(format!("{}: {e}", what())))?;
    let section = |name: &str| {
        pe.section(name)
            .map(|s| pe.section_data(s))
            .ok_or_else(|| Error::invalid(format!("{}: no {name} section", what())))
    };
    let text = |name: &str| -> Result<String> {
        let b = section(name)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| Error::invalid(format!("{}: {name} is not UTF-8", what())))?;
        Ok(s.trim_end_matches(['\0', '\n']).to_string())
    };
    let osrel = text(".osrel")?;
    let version = osrel
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| Error::invalid(format!("{}: .osrel has no VERSION_ID", what())))?;
    let cmdline = text(".cmdline")?;
    if cmdline.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{}: control characters in .cmdline",
            what()
        )));
    }
    for (name, file) in [(".linux", "vmlinuz"), (".initrd", "initramfs.xz")] {
        let out = work.join(file);
        std::fs::write(&out, section(name)?)
            .code(ExitCode::Io, || format!("writing {}", out.display()))?;
    }
    Ok(Uki {
        path: path.to_path_buf(),
        version,
        cmdline,
    })
}

/// What else the disk holds, when it is not blank and not a previous installation.
fn foreign(f: &mut File, size: u64) -> Option<String> {
    if let Ok(l) = gpt::read(f, 512, size) {
        let other: Vec<String> = l
            .partitions
            .iter()
            .filter(|p| !OWN_PARTITIONS.contains(&p.name.as_str()))
            .map(|p| format!("{:?}", p.name))
            .collect();
        return (!other.is_empty())
            .then(|| format!("a GPT with the partitions {}", other.join(", ")));
    }
    let mut mbr = [0u8; 512];
    if f.seek(SeekFrom::Start(0)).is_err() || f.read_exact(&mut mbr).is_err() {
        return None;
    }
    let used = (0..4).any(|i| {
        let t = mbr[446 + i * 16 + 4];
        t != 0 && t != 0xEE
    });
    (mbr[510..512] == [0x55, 0xAA] && used).then(|| "an MBR partition table".to_string())
}

nix::ioctl_none!(blk_rr_part, 0x12, 95);

/// BLKRRPART: the kernel rereads the partition table just written.
#[allow(unsafe_code)]
fn reread_partitions(dev: &File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the ioctl takes no argument
    unsafe { blk_rr_part(dev.as_raw_fd()) }.map(|_| ())
}

nix::ioctl_write_ptr_bad!(blk_zero_out, nix::request_code_none!(0x12, 127), [u64; 2]);

/// BLKZEROOUT over `[off, off + len)`.
#[allow(unsafe_code)]
fn blkzeroout(dev: &File, off: u64, len: u64) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let range = [off, len];
    // SAFETY: the ioctl reads the [u64; 2] the pointer refers to, alive for the call
    unsafe { blk_zero_out(dev.as_raw_fd(), &range) }.map(|_| ())
}

/// Makes `[off, off + len)` of the device read as zeros: BLKZEROOUT, else written zeros.
fn zero_range(dev: &mut File, off: u64, len: u64) -> std::io::Result<()> {
    if blkzeroout(dev, off, len).is_ok() {
        return Ok(());
    }
    let buf = vec![0u8; 1 << 20];
    dev.seek(SeekFrom::Start(off))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        dev.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Copies the data extents of the sparse image `img` within `[from, to)` onto the device.
fn copy_extents(img: &File, dev: &mut File, from: u64, to: u64) -> std::io::Result<u64> {
    use nix::unistd::{Whence, lseek};
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    let mut copied = 0u64;
    let mut src = img;
    while pos < to {
        let data = match lseek(img, pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= to {
            break;
        }
        let hole = (lseek(img, data as i64, Whence::SeekHole)? as u64).min(to);
        src.seek(SeekFrom::Start(data))?;
        dev.seek(SeekFrom::Start(data))?;
        let mut left = hole - data;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n])?;
            dev.write_all(&buf[..n])?;
            left -= n as u64;
        }
        copied += hole - data;
        pos = hole;
    }
    Ok(copied)
}

/// `--disk`, opened for reading and writing.
fn open_disk(a: &InstallArgs) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a.disk)
        .code(ExitCode::Io, || format!("--disk {}", a.disk.display()))
}

/// The installer's scratch directory in `tmp`, removed when dropped.
fn work_dir(tmp: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("installer.")
        .tempdir_in(tmp)
        .code(ExitCode::Io, || {
            format!("creating a directory in {}", tmp.display())
        })
}

fn install(a: &InstallArgs) -> Result<()> {
    if a.upgrade {
        return upgrade(a);
    }
    let epoch = imager::cli::epoch()?;
    let meta = meta_values(a)?;
    let assets = a.install_dir.join(&a.arch);
    let tmp = std::env::temp_dir();
    let work = work_dir(&tmp)?;
    let uki_path = assets.join("vmlinuz.efi");
    let uki = if uki_path.is_file() {
        Some(open_uki(&uki_path, work.path())?)
    } else {
        None
    };
    let version = match &uki {
        Some(u) => u.version.clone(),
        None => match std::fs::read_to_string(assets.join("version")) {
            Ok(v) => v.trim().to_string(),
            Err(_) => imager::profile::quirks::DEFAULT_VERSION.to_string(),
        },
    };
    if uki.is_some() && !a.extra_kernel_args.is_empty() {
        return Err(Error::invalid(
            "--extra-kernel-arg: the installer image boots a UKI, whose command line is fixed \
             when it is built",
        ));
    }
    let mut args = a.extra_kernel_args.clone();
    if let Some(c) = &a.config {
        args.push(format!("talos.config={c}"));
    }
    let bootloader = match &a.bootloader {
        Some(b) => b.clone(),
        None if Path::new("/sys/firmware/efi").exists() || a.arch == "arm64" => "sd-boot".into(),
        None => "grub".into(),
    };
    if installer::Bootloader::parse(&bootloader).is_none() {
        return Err(Error::invalid(format!(
            "--bootloader {bootloader:?}: not one of sd-boot, grub, dual-boot"
        )));
    }
    // the disk
    let what = || format!("--disk {}", a.disk.display());
    let mut dev = open_disk(a)?;
    let is_block = dev
        .metadata()
        .code(ExitCode::Io, what)?
        .file_type()
        .is_block_device();
    let size = dev.seek(SeekFrom::End(0)).code(ExitCode::Io, what)?;
    if !a.force
        && let Some(f) = foreign(&mut dev, size)
    {
        return Err(Error::new(
            ExitCode::Assembly,
            anyhow!(
                "{} holds {f}; refusing to install over it without --force",
                a.disk.display()
            ),
        ));
    }
    let mut input = serde_json::Map::new();
    if uki.is_some() {
        input.insert(
            "kernel".into(),
            json!({"path": work.path().join("vmlinuz").to_string_lossy()}),
        );
        input.insert(
            "initramfs".into(),
            json!({"path": work.path().join("initramfs.xz").to_string_lossy()}),
        );
    }
    let value = json!({
        "baseProfileName": "metal",
        "arch": a.arch,
        "platform": a.platform,
        "version": version,
        "input": Value::Object(input),
        "customization": {
            "extraKernelArgs": args,
            "metaContents": meta.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        },
        "output": {
            "kind": "image",
            "outFormat": "raw",
            "imageOptions": {"diskSize": size, "diskFormat": "raw", "bootloader": bootloader},
        },
    });
    let r = imager::profile::resolve(value, "installation", &a.install_dir, &Default::default())?;
    let opts = imager::build::BuildOptions {
        output_dir: work.path().to_path_buf(),
        epoch,
        digests: false,
        inputs: Default::default(),
        push: None,
        sign: None,
    };
    let prebuilt = uki.as_ref().map(|u| imager::build::PrebuiltUki {
        path: &u.path,
        cmdline: &u.cmdline,
    });
    if a.zero {
        if is_block {
            zero_range(&mut dev, 0, size).code(ExitCode::Io, || format!("zeroing {}", what()))?;
        } else {
            dev.set_len(0).code(ExitCode::Io, what)?;
        }
    }
    // a block device gets the layout from a sparse file, its partition tables last: an
    // install cut short leaves a disk without a table, not a half installation
    let mut tables: Option<(File, u64, u64)> = None;
    let layout = if is_block {
        // the layout goes into a sparse file first, then onto the device over zeroed boot
        // partitions (the FAT writer leaves free space unwritten)
        let img_path = work.path().join("disk.raw");
        let mut img = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&img_path)
            .code(ExitCode::Io, || format!("creating {}", img_path.display()))?;
        let layout = imager::build::install(&r, &opts, size, &mut img, work.path(), prebuilt)?;
        let meta_end = layout
            .by_name("META")
            .map(|p| p.offset(512) + p.size(512))
            .ok_or_else(|| Error::new(ExitCode::Assembly, anyhow!("the layout has no META")))?;
        let first = layout
            .partitions
            .iter()
            .map(|p| p.first_lba)
            .min()
            .unwrap_or(layout.first_usable)
            * 512;
        let backup = (layout.last_usable + 1) * 512;
        // the old tables go first (the backup one too, which a reader would fall back to)
        zero_range(&mut dev, 0, meta_end)
            .and_then(|_| zero_range(&mut dev, backup, size - backup))
            .code(ExitCode::Io, || format!("zeroing {}", what()))?;
        copy_extents(&img, &mut dev, first, backup)
            .code(ExitCode::Io, || format!("writing {}", what()))?;
        tables = Some((img, first, backup));
        layout
    } else {
        imager::build::install(&r, &opts, size, &mut dev, work.path(), prebuilt)?
    };
    let mut formatted = Vec::new();
    for label in ["STATE", "EPHEMERAL"] {
        let p = layout
            .by_name(label)
            .ok_or_else(|| Error::new(ExitCode::Assembly, anyhow!("the layout has no {label}")))?;
        let o = extfs::Options::from_label(label, u32::try_from(epoch).unwrap_or(0), !is_block);
        extfs::format(&mut dev, p.offset(512), p.size(512), &o)
            .map_err(|e| Error::new(ExitCode::Io, anyhow!("formatting {label}: {e}")))?;
        formatted.push(format!("{label} ext4 {} MiB", p.size(512) >> 20));
    }
    if let Some((img, first, backup)) = &tables {
        dev.sync_all().code(ExitCode::Io, what)?;
        test_pause("all but the partition tables written");
        copy_extents(img, &mut dev, 0, *first)
            .and_then(|_| copy_extents(img, &mut dev, *backup, size))
            .code(ExitCode::Io, || {
                format!("writing the partition tables of {}", what())
            })?;
    }
    dev.sync_all().code(ExitCode::Io, what)?;
    if is_block && let Err(e) = reread_partitions(&dev) {
        eprintln!(
            "installer: warning: {}: the kernel did not reread the partition table ({e}); \
             it will at the next boot",
            a.disk.display()
        );
    }
    eprintln!(
        "installer: installed {version} ({bootloader}, {}) on {}: {}",
        if uki.is_some() { "UKI" } else { "base assets" },
        a.disk.display(),
        formatted.join(", ")
    );
    Ok(())
}

/// Test hook (docs/formats/install.md, upgrade.md): with `INSTALLER_TEST_PAUSE=1`, a
/// block-device install stops for good once everything but the partition tables is on the
/// disk, and an upgrade once the new boot files are written but before the boot loader is
/// told about them, so that a test can cut the machine's power at the worst moment.
fn test_pause(what: &str) {
    if std::env::var_os(TEST_PAUSE).is_some_and(|v| v == "1") {
        eprintln!("installer: test pause: {what} ({TEST_PAUSE})");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// The test hook's variable.
const TEST_PAUSE: &str = adv::env::TEST_PAUSE;

/// `installer install --upgrade` (docs/formats/upgrade.md): the installer image's UKI goes
/// beside the booted version on the node's disk, for systemd-boot (ESP) or GRUB (BOOT),
/// mounted with the kernel's vfat in the installer's own mount namespace. With
/// `--wipe-ephemeral`, EPHEMERAL (unmounted by the node) is formatted again, first. META and
/// STATE are not touched (the node records the previous boot label in META).
fn upgrade(a: &InstallArgs) -> Result<()> {
    let assets = a.install_dir.join(&a.arch);
    let tmp = std::env::temp_dir();
    let work = work_dir(&tmp)?;
    let uki_path = assets.join("vmlinuz.efi");
    if !uki_path.is_file() {
        return Err(Error::invalid(format!(
            "--upgrade: {} is missing; upgrades take installer images with a UKI (Talos 1.10 \
             and later)",
            uki_path.display()
        )));
    }
    let uki = open_uki(&uki_path, work.path())?;
    if !installer::ab::valid_entry_part(&uki.version) {
        return Err(Error::invalid(format!(
            "--upgrade: the version {:?} cannot name a boot entry (letters, digits, . _ -)",
            uki.version
        )));
    }
    let what = || format!("--disk {}", a.disk.display());
    let mut dev = open_disk(a)?;
    if !dev
        .metadata()
        .code(ExitCode::Io, what)?
        .file_type()
        .is_block_device()
    {
        return Err(Error::invalid(format!(
            "--upgrade: {} is not a block device (upgrades run on the node)",
            a.disk.display()
        )));
    }
    let size = dev.seek(SeekFrom::End(0)).code(ExitCode::Io, what)?;
    let layout = gpt::read(&mut dev, 512, size)
        .map_err(|e| Error::new(ExitCode::Assembly, anyhow!("{}: {e}", what())))?;
    let disk = a.disk.to_string_lossy().into_owned();
    let efi = Path::new("/sys/firmware/efi").exists();
    let bootloader = match a.bootloader.as_deref() {
        Some(b @ ("sd-boot" | "grub")) => b,
        Some(b) => {
            return Err(Error::invalid(format!(
                "--upgrade --bootloader {b:?}: sd-boot or grub"
            )));
        }
        None if efi && layout.by_name("EFI").is_some() && layout.by_name("BOOT").is_none() => {
            "sd-boot"
        }
        None if efi && installer::ab::loader_entry_selected().is_some() => "sd-boot",
        None => "grub",
    };
    let label = if bootloader == "sd-boot" {
        "EFI"
    } else {
        "BOOT"
    };
    let part = layout.by_name(label).ok_or_else(|| {
        Error::new(
            ExitCode::Assembly,
            anyhow!("{}: no {label} partition to upgrade", what()),
        )
    })?;
    // EPHEMERAL first: nothing boots the new version before everything else is done
    let mut wiped = String::new();
    if a.wipe_ephemeral {
        let p = layout
            .by_name("EPHEMERAL")
            .ok_or_else(|| Error::new(ExitCode::Assembly, anyhow!("{}: no EPHEMERAL", what())))?;
        let epoch = imager::cli::epoch()?;
        let o = extfs::Options::from_label("EPHEMERAL", u32::try_from(epoch).unwrap_or(0), false);
        extfs::format(&mut dev, p.offset(512), p.size(512), &o)
            .map_err(|e| Error::new(ExitCode::Io, anyhow!("formatting EPHEMERAL: {e}")))?;
        dev.sync_all().code(ExitCode::Io, what)?;
        wiped = format!(", EPHEMERAL formatted ({} MiB)", p.size(512) >> 20);
    }
    let part_dev = installer::ab::partition_device(&disk, part.number);
    // a directory of its own, not inside `work`, whose removal would reach into the mount
    let mnt = tmp.join(format!("installer-{label}.{}", std::process::id()));
    let mount = installer::ab::BootMount::vfat(&part_dev, &mnt)
        .map_err(|e| Error::new(ExitCode::Io, anyhow!("{e}")))?;
    let pause = || test_pause("the new boot files written, the boot loader not yet told");
    let staged = if bootloader == "sd-boot" {
        let booted = installer::ab::loader_entry_selected().ok_or_else(|| {
            Error::invalid(
                "--upgrade: systemd-boot did not say which entry booted (LoaderEntrySelected)",
            )
        })?;
        let os = booted.split_once('-').map_or("Talos", |(o, _)| o);
        let os = if os.eq_ignore_ascii_case("talos") {
            "Talos"
        } else {
            os
        };
        let sd = assets.join("systemd-boot.efi");
        let target = format!(
            "EFI/boot/{}",
            installer::efi_arch_name(&a.arch).map_err(|e| Error::invalid(format!("{e}")))?
        );
        let boot_efi = sd.is_file().then_some((sd.as_path(), target.as_str()));
        installer::ab::sdboot_stage(
            mount.path(),
            &uki.path,
            boot_efi,
            os,
            &uki.version,
            &booted,
            pause,
        )
        .map(|n| format!("{n} beside {booted}"))
        .map_err(|e| Error::new(ExitCode::Assembly, anyhow!("{e}")))?
    } else {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let booted = installer::ab::grub_booted_slot(&cmdline).ok_or_else(|| {
            Error::invalid("--upgrade: GRUB did not say which slot booted (BOOT_IMAGE=)")
        })?;
        (|| {
            let ab = installer::ab::read_grub(mount.path())?;
            let os = ab
                .slot(booted)
                .and_then(|s| s.title.split_once(" - "))
                .and_then(|(_, t)| t.rsplit_once(' '))
                .map_or("Talos".to_string(), |(o, _)| o.to_string());
            let new = installer::ab::grub_stage(
                mount.path(),
                &work.path().join("vmlinuz"),
                &work.path().join("initramfs.xz"),
                &uki.cmdline,
                &os,
                &uki.version,
                booted,
                pause,
            )?;
            Ok::<_, installer::InstallError>(format!(
                "slot {new}, next boot once, beside slot {booted}"
            ))
        })()
        .map_err(|e| Error::new(ExitCode::Assembly, anyhow!("{e}")))?
    };
    mount
        .unmount()
        .map_err(|e| Error::new(ExitCode::Io, anyhow!("{e}")))?;
    let _ = std::fs::remove_dir(&mnt);
    eprintln!(
        "installer: upgraded to {} ({bootloader}, UKI) on {}: {staged}{wiped}",
        uki.version,
        a.disk.display()
    );
    Ok(())
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let r = match &cli.command {
        Command::Install(a) => install(a),
    };
    if let Err(e) = r {
        eprintln!("error: {}", imager::error::printable(&e.to_string()));
        std::process::exit(e.exit_code());
    }
}
