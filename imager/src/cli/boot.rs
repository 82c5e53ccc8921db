//! `imager boot`: runs an artifact in QEMU for the user (what `talosctl cluster create
//! --provisioner qemu` or `mkosi vm` give people), and the quickstart's last step.
//!
//! In: a disk image (raw, or `.zst`/`.xz`/`.gz` which is decompressed sparsely into a temp
//! file first). Out: QEMU under TCG with the serial console on stderr and one virtio NIC on
//! user networking; with `--until-ready`
//! it stops as soon as node-runtime prints its ready line (exit 0) or an error line (exit 1).

use crate::error::{Error, ExitCode, Result, WithCode};
use clap::{Args, ValueEnum};
use qemu_harness::{Arch, DiskKind, Firmware, Machine};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Firmware choice.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FirmwareArg {
    /// OVMF (AAVMF on arm64).
    Uefi,
    /// SeaBIOS (amd64).
    Bios,
    /// u-boot as the `-M virt` firmware (arm64).
    #[value(name = "u-boot")]
    UBoot,
}

/// Guest architecture.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchArg {
    /// x86-64 (`qemu-system-x86_64 -M q35`).
    Amd64,
    /// AArch64 (`qemu-system-aarch64 -M virt`).
    Arm64,
}

/// How the artifact is attached.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AsArg {
    /// A CD-ROM drive.
    Cdrom,
    /// A virtio disk.
    Disk,
}

/// `imager boot` arguments.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// Disk image or ISO: raw, or compressed with .zst, .xz or .gz.
    pub artifact: PathBuf,
    /// Firmware.
    #[arg(long, value_enum, default_value = "uefi")]
    pub firmware: FirmwareArg,
    /// Guest architecture (default: arm64 when the file name says `-arm64`, else amd64).
    #[arg(long, value_enum)]
    pub arch: Option<ArchArg>,
    /// Attach the artifact as a CD-ROM or a disk (default: cdrom for .iso, else disk).
    #[arg(long = "as", value_enum)]
    pub attach: Option<AsArg>,
    /// Stop when node-runtime reports ready (exit 0) or an error (exit 1).
    #[arg(long = "until-ready")]
    pub until_ready: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
}

/// Decompresses `src` into `dst`, seeking over zero blocks so the result stays sparse.
pub fn decompress_sparse(src: &Path, dst: &mut File) -> Result<()> {
    let f = File::open(src).code(ExitCode::Io, || format!("opening {}", src.display()))?;
    let name = src.to_string_lossy();
    let mut r: Box<dyn Read> = if name.ends_with(".zst") {
        Box::new(zstd::stream::Decoder::new(f).code(ExitCode::Io, || "zstd".into())?)
    } else if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(f))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = r
                .read(&mut buf[n..])
                .code(ExitCode::Io, || format!("decompressing {name}"))?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if sparse::is_zero(&buf[..n]) {
            dst.seek(SeekFrom::Current(n as i64))
                .code(ExitCode::Io, || "seek".into())?;
        } else {
            dst.write_all(&buf[..n])
                .code(ExitCode::Io, || "writing image".into())?;
        }
        len += n as u64;
    }
    dst.set_len(len)
        .code(ExitCode::Io, || "sizing image".into())?;
    Ok(())
}

/// Checks that `disk` is something QEMU can boot here: a raw disk image (an MBR or
/// protective-MBR boot signature) or an ISO 9660 image. Anything else would only reach QEMU
/// and end in a timeout.
fn check_bootable(disk: &Path, name: &str) -> Result<()> {
    let f = crate::io::open_regular(disk, "imager boot", ExitCode::Io)?;
    let mut head = Vec::new();
    f.take(0x8006)
        .read_to_end(&mut head)
        .code(ExitCode::Io, || format!("reading {name}"))?;
    let mbr = head.get(510..512) == Some(&[0x55, 0xAA][..]);
    let iso = head.get(0x8001..0x8006) == Some(&b"CD001"[..]);
    let what = if head.starts_with(b"QFI\xfb") {
        "a qcow2 image"
    } else if head.starts_with(b"conectix") {
        "a VHD image"
    } else if head.starts_with(b"KDMV") {
        "a VMDK image"
    } else {
        "neither a raw disk image nor an ISO"
    };
    if !(mbr || iso) {
        return Err(Error::invalid(format!(
            "imager boot: {name}: {what}; boot takes raw disk images (optionally .zst, .xz, \
             .gz) and ISOs"
        )));
    }
    Ok(())
}

/// Runs the boot command.
pub fn run(cli: &BootArgs) -> Result<()> {
    let name = cli.artifact.to_string_lossy().to_string();
    // a directory, FIFO or device is refused before anything reads it
    crate::io::open_regular(&cli.artifact, "imager boot", ExitCode::Io)?;
    let mut _tmp = None;
    let disk = if [".zst", ".xz", ".gz"].iter().any(|s| name.ends_with(s)) {
        let mut t = tempfile::Builder::new()
            .prefix("imager-boot.")
            .suffix(".raw")
            .tempfile()
            .code(ExitCode::Io, || "creating a temporary image".into())?;
        decompress_sparse(&cli.artifact, t.as_file_mut())?;
        let p = t.path().to_path_buf();
        _tmp = Some(t);
        p
    } else {
        cli.artifact.clone()
    };
    check_bootable(&disk, &name)?;
    let file_name = cli
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let arch = match cli.arch {
        Some(ArchArg::Arm64) => Arch::Arm64,
        Some(ArchArg::Amd64) => Arch::Amd64,
        None if file_name.contains("-arm64") => Arch::Arm64,
        None => Arch::Amd64,
    };
    let firmware = match (cli.firmware, arch) {
        (FirmwareArg::Uefi, _) => Firmware::Uefi,
        (FirmwareArg::Bios, Arch::Amd64) => Firmware::Bios,
        (FirmwareArg::UBoot, Arch::Arm64) => Firmware::UBoot,
        (f, a) => {
            return Err(Error::invalid(format!(
                "imager boot: --firmware {} does not boot {a:?} here (uefi does both, bios is \
                 amd64, u-boot is arm64)",
                f.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            )));
        }
    };
    let m = Machine {
        arch,
        firmware,
        disks: vec![(
            disk,
            match cli.attach {
                Some(AsArg::Cdrom) => DiskKind::Cdrom,
                Some(AsArg::Disk) => DiskKind::Virtio,
                None if name.ends_with(".iso") => DiskKind::Cdrom,
                None => DiskKind::Virtio,
            },
        )],
        memory_mib: cli.memory,
        // one virtio NIC on QEMU user networking (10.0.2.0/24, DHCP at 10.0.2.2), as eth0
        extra: qemu_harness::user_nic("n0", ""),
        ..Default::default()
    };
    let mut run = m
        .start()
        .code(ExitCode::Environment, || "starting QEMU".into())?;
    let timeout = Duration::from_secs(cli.timeout);
    if cli.until_ready {
        let line = run
            .wait_for(
                "node-runtime: ready meta=",
                qemu_harness::DEFAULT_FAILURES,
                timeout,
                true,
            )
            .map_err(|e| {
                // QEMU failing by itself is the environment; a guest that ran and did not
                // reach ready (error line, timeout, poweroff) is a failed boot
                let code = match &e {
                    qemu_harness::HarnessError::Setup(_) => ExitCode::Environment,
                    qemu_harness::HarnessError::Exited { status, .. }
                        if !status.ends_with(": 0") =>
                    {
                        ExitCode::Environment
                    }
                    _ => ExitCode::Unknown,
                };
                Error::new(code, e).context(format!("booting {name}"))
            })?;
        eprintln!(
            "imager boot: ready after {:.1} s: {line}",
            run.elapsed().as_secs_f64()
        );
        run.finish(Duration::from_secs(0));
    } else {
        // no pattern matches this: stream the console until QEMU exits or the timeout passes
        let _ = run.wait_for("\u{0}never\u{0}", &[], timeout, true);
    }
    Ok(())
}
