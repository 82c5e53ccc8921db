//! One QEMU harness for tests, benchmarks and `imager boot`.
//!
//! In: a [`Machine`] description (architecture, firmware, disks, or a kernel for direct boot).
//! Out: a run of `qemu-system-x86_64` (q35) or `qemu-system-aarch64` (virt) under TCG with the
//! serial console captured line by line; the run
//! ends when a wanted line appears ([`Run::wait_for`]), a failure line appears, QEMU exits,
//! or the timeout passes. Errors carry the console tail so a failed boot explains itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The guest's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// x86-64: `qemu-system-x86_64 -M q35`, console `ttyS0`.
    #[default]
    Amd64,
    /// AArch64: `qemu-system-aarch64 -M virt -cpu cortex-a57`, console `ttyAMA0` (PL011).
    Arm64,
}

/// A board QEMU emulates, booted by its own firmware file (arm64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Board {
    /// `-M raspi3b`: QEMU loads `firmware` (a Raspberry Pi u-boot) as the Pi firmware would,
    /// with `dtb`; disks are SD cards ([`DiskKind::Sd`], a power-of-two size); the console is
    /// the second serial port (the mini UART, `ttyS1`).
    Raspi3b {
        /// The Pi's kernel file, e.g. u-boot's `u-boot.bin`.
        firmware: PathBuf,
        /// The device tree.
        dtb: PathBuf,
    },
}

/// AAVMF, Debian's EDK2 build for `-M virt` (qemu-efi-aarch64).
const AAVMF: (&str, &str) = (
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/usr/share/AAVMF/AAVMF_VARS.fd",
);

/// Debian's u-boot for `-M virt` on AArch64 (u-boot-qemu).
const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// Firmware to boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF (UEFI), with a private copy of the variable store.
    Uefi,
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF with SecureBoot enforced (Debian's `OVMF_CODE_4M.secboot.fd`, SMM) and a private
    /// copy of `OVMF_VARS_4M.snakeoil.fd`, whose PK, KEK and db hold the snakeoil certificate
    /// `/usr/share/ovmf/PkKek-1-snakeoil.pem`.
    UefiSecureBootSnakeoil,
    /// u-boot as the `-M virt` firmware (arm64 only): its EFI loader runs
    /// `EFI/BOOT/BOOTAA64.EFI` from the disk.
    UBoot,
    /// OVMF's SecureBoot build in setup mode: a private copy of Debian's plain
    /// `OVMF_VARS_4M.fd`, which holds no keys, so a boot loader may enroll its own.
    UefiSecureBootSetup,
}

const OVMF_SECBOOT: (&str, &str) = (
    "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd",
);

/// The SecureBoot build's variable store without keys (setup mode).
const OVMF_SETUP_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// virtio-blk (`snapshot=on`: the file is never modified).
    Virtio,
    /// virtio-blk written through to the file (tests of what the guest writes).
    VirtioWritable,
    /// IDE CD-ROM.
    Cdrom,
    /// An SD card (boards; `snapshot=on`).
    Sd,
}

/// A virtual machine to run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Architecture (amd64 by default).
    pub arch: Arch,
    /// A board instead of the generic machine (arm64); its firmware replaces `firmware`.
    pub board: Option<Board>,
    /// Firmware (`Uefi` is AAVMF on arm64).
    pub firmware: Firmware,
    /// Disk images (virtio ones with `snapshot=on` unless [`DiskKind::VirtioWritable`]).
    pub disks: Vec<(PathBuf, DiskKind)>,
    /// Direct kernel boot: kernel, initrd, cmdline.
    pub direct: Option<(PathBuf, PathBuf, String)>,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Extra QEMU arguments.
    pub extra: Vec<String>,
    /// A UEFI variable store the caller keeps, used in place instead of a private copy of the
    /// firmware's template, so that a second run sees what the first one wrote (enrolled
    /// keys). The caller fills it (see [`Machine::vars_template`]).
    pub vars_file: Option<PathBuf>,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            arch: Arch::Amd64,
            board: None,
            firmware: Firmware::Uefi,
            disks: Vec::new(),
            direct: None,
            memory_mib: 1024,
            extra: Vec::new(),
            vars_file: None,
        }
    }
}

/// QEMU arguments for a virtio NIC on user networking (10.0.2.0/24, DHCP and gateway at
/// 10.0.2.2, DNS at 10.0.2.3): netdev `id`, with `opts` appended to the netdev (e.g.
/// `,hostfwd=tcp:127.0.0.1:PORT-10.0.2.15:50000`).
pub fn user_nic(id: &str, opts: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("user,id={id}{opts}"),
        "-device".into(),
        format!("virtio-net-pci,netdev={id}"),
    ]
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// QEMU or firmware missing.
    #[error("{0}")]
    Setup(String),
    /// The wanted line did not appear in time.
    #[error("timed out after {secs} s waiting for {wanted:?}; console tail:\n{tail}")]
    Timeout {
        /// Seconds waited.
        secs: u64,
        /// Pattern.
        wanted: String,
        /// Last console lines.
        tail: String,
    },
    /// A failure line appeared.
    #[error("failure line {line:?} while waiting for {wanted:?}; console tail:\n{tail}")]
    Failed {
        /// The line.
        line: String,
        /// Pattern.
        wanted: String,
        /// Last console lines.
        tail: String,
    },
    /// QEMU exited first.
    #[error("QEMU exited ({status}) while waiting for {wanted:?}; console tail:\n{tail}")]
    Exited {
        /// Exit status.
        status: String,
        /// Pattern.
        wanted: String,
        /// Last console lines.
        tail: String,
    },
}

/// Lines that mean the boot went wrong.
pub const DEFAULT_FAILURES: &[&str] = &["node-runtime: error:", "Kernel panic", "end Kernel panic"];

const OVMF_CODE: &[&str] = &[
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
];

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("pid", &self.child.id())
            .field("lines", &self.lines.len())
            .finish_non_exhaustive()
    }
}

/// A running machine.
pub struct Run {
    child: Child,
    rx: Receiver<String>,
    lines: Vec<String>,
    started: Instant,
    _vars: Option<tempfile::TempDir>,
}

fn ovmf() -> Result<(PathBuf, PathBuf), HarnessError> {
    for code in OVMF_CODE {
        let vars = code.replace("CODE", "VARS");
        if Path::new(code).exists() && Path::new(&vars).exists() {
            return Ok((code.into(), vars.into()));
        }
    }
    Err(HarnessError::Setup(
        "OVMF not found (apt-get install ovmf; hack/deps.sh)".into(),
    ))
}

/// The two flash drives of EDK2: the firmware code (read-only) and the variable store.
fn pflash(a: &mut Vec<String>, code: &Path, vars: Option<&Path>) -> Result<(), HarnessError> {
    let vars = vars.ok_or_else(|| HarnessError::Setup("UEFI needs a vars file".into()))?;
    a.push("-drive".into());
    a.push(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        code.display()
    ));
    a.push("-drive".into());
    a.push(format!(
        "if=pflash,format=raw,unit=1,file={}",
        vars.display()
    ));
    Ok(())
}

impl Machine {
    /// The QEMU binary of the machine's architecture.
    pub fn qemu(&self) -> &'static str {
        match self.arch {
            Arch::Amd64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The QEMU command line (without starting it); `vars` is the writable UEFI vars file.
    pub fn args(&self, vars: Option<&Path>) -> Result<Vec<String>, HarnessError> {
        let (machine, cpu) = match self.arch {
            Arch::Amd64 => ("q35", "max"),
            // cortex-a57: Debian's kernel runs on it, and TCG emulates it about twice as fast as
            // `max` (no pointer authentication to emulate)
            Arch::Arm64 => ("virt", "cortex-a57"),
        };
        let raspi = matches!(self.board, Some(Board::Raspi3b { .. }));
        let mut a: Vec<String> = Vec::new();
        let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
        if raspi {
            // a fixed SoC: four cores, 1 GiB, its own CPU; the mini UART is the second port
            push(&["-machine", "raspi3b", "-accel", "tcg"]);
        } else {
            push(&[
                "-machine", machine, "-accel", "tcg", "-cpu", cpu, "-smp", "1",
            ]);
        }
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        if raspi {
            push(&["-serial", "null"]);
        }
        push(&["-serial", "stdio", "-monitor", "none", "-no-reboot"]);
        if !raspi {
            a.extend(["-m".into(), self.memory_mib.to_string()]);
        }
        if let Some(Board::Raspi3b { firmware, dtb }) = &self.board {
            a.extend(["-kernel".into(), firmware.display().to_string()]);
            a.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        match (self.arch, self.firmware) {
            _ if self.board.is_some() => {}
            (Arch::Arm64, Firmware::Bios) => {
                // direct kernel boot needs no firmware on virt
            }
            (Arch::Arm64, Firmware::UBoot) => {
                a.extend(["-bios".into(), UBOOT_ARM64.into()]);
            }
            (Arch::Arm64, Firmware::Uefi) => pflash(&mut a, Path::new(AAVMF.0), vars)?,
            (Arch::Arm64, fw) => {
                return Err(HarnessError::Setup(format!(
                    "{fw:?} is not an arm64 firmware here"
                )));
            }
            (Arch::Amd64, Firmware::UBoot) => {
                return Err(HarnessError::Setup(
                    "u-boot is an arm64 firmware here".into(),
                ));
            }
            (Arch::Amd64, Firmware::Bios) => {}
            (Arch::Amd64, _) => {
                let code = if self.firmware == Firmware::Uefi {
                    ovmf()?.0
                } else {
                    // the SecureBoot build keeps its variables in SMM-protected flash
                    a[1] = "q35,smm=on".into();
                    a.extend([
                        "-global".into(),
                        "driver=cfi.pflash01,property=secure,value=on".into(),
                    ]);
                    PathBuf::from(OVMF_SECBOOT.0)
                };
                pflash(&mut a, &code, vars)?;
            }
        }
        if self.arch == Arch::Arm64 && self.disks.iter().any(|d| d.1 == DiskKind::Cdrom) {
            // virt has no IDE: CDs sit on virtio-scsi
            a.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
        }
        for (i, (disk, kind)) in self.disks.iter().enumerate() {
            a.push("-drive".into());
            match kind {
                DiskKind::Virtio => a.push(format!(
                    "file={},format=raw,if=virtio,snapshot=on,index={i}",
                    disk.display()
                )),
                DiskKind::VirtioWritable => a.push(format!(
                    "file={},format=raw,if=virtio,index={i}",
                    disk.display()
                )),
                DiskKind::Sd => a.push(format!(
                    "if=sd,file={},format=raw,snapshot=on,index={i}",
                    disk.display()
                )),
                DiskKind::Cdrom if self.arch == Arch::Arm64 => {
                    a.push(format!(
                        "file={},format=raw,if=none,media=cdrom,readonly=on,id=cd{i}",
                        disk.display()
                    ));
                    a.push("-device".into());
                    a.push(format!("scsi-cd,drive=cd{i},bus=scsi0.0"));
                }
                DiskKind::Cdrom => a.push(format!(
                    "file={},format=raw,media=cdrom,readonly=on,index={i}",
                    disk.display()
                )),
            }
        }
        if let Some((k, i, c)) = &self.direct {
            a.extend(["-kernel".into(), k.display().to_string()]);
            a.extend(["-initrd".into(), i.display().to_string()]);
            a.extend(["-append".into(), c.clone()]);
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }

    /// The variable store template of the machine's firmware (none for BIOS).
    pub fn vars_template(&self) -> Result<Option<PathBuf>, HarnessError> {
        let secboot = |v: &str| {
            let v = PathBuf::from(v);
            if !v.exists() || !Path::new(OVMF_SECBOOT.0).exists() {
                return Err(HarnessError::Setup(
                    "OVMF's SecureBoot build not found (apt-get install ovmf)".into(),
                ));
            }
            Ok(Some(v))
        };
        match self.firmware {
            Firmware::Bios | Firmware::UBoot => Ok(None),
            Firmware::Uefi if self.arch == Arch::Arm64 => {
                let v = PathBuf::from(AAVMF.1);
                if !v.exists() || !Path::new(AAVMF.0).exists() {
                    return Err(HarnessError::Setup(
                        "AAVMF not found (apt-get install qemu-efi-aarch64; hack/deps.sh)".into(),
                    ));
                }
                Ok(Some(v))
            }
            Firmware::Uefi => Ok(Some(ovmf()?.1)),
            Firmware::UefiSecureBootSnakeoil => secboot(OVMF_SECBOOT.1),
            Firmware::UefiSecureBootSetup => secboot(OVMF_SETUP_VARS),
        }
    }

    /// Starts QEMU.
    pub fn start(&self) -> Result<Run, HarnessError> {
        let uefi =
            !matches!(self.firmware, Firmware::Bios | Firmware::UBoot) && self.board.is_none();
        let vars_dir = if uefi && self.vars_file.is_none() {
            let vars = self
                .vars_template()?
                .ok_or_else(|| HarnessError::Setup("no variable store".into()))?;
            let d =
                tempfile::tempdir().map_err(|e| HarnessError::Setup(format!("tempdir: {e}")))?;
            std::fs::copy(&vars, d.path().join("vars.fd"))
                .map_err(|e| HarnessError::Setup(format!("copying {}: {e}", vars.display())))?;
            Some(d)
        } else {
            None
        };
        let vars = match &self.vars_file {
            Some(v) => Some(v.clone()),
            None => vars_dir.as_ref().map(|d| d.path().join("vars.fd")),
        };
        let args = self.args(vars.as_deref())?;
        let qemu = self.qemu();
        let mut child = Command::new(qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| HarnessError::Setup(format!("starting {qemu}: {e}")))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Setup("no QEMU stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            let mut lines = Lines::default();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        if lines.push(&line).into_iter().any(|l| tx.send(l).is_err()) {
                            return;
                        }
                    }
                }
            }
            if let Some(rest) = lines.pending.take() {
                let _ = tx.send(rest);
            }
        });
        Ok(Run {
            child,
            rx,
            lines: Vec::new(),
            started: Instant::now(),
            _vars: vars_dir,
        })
    }
}

impl Run {
    /// Every console line so far.
    pub fn console(&self) -> &[String] {
        &self.lines
    }

    /// Seconds since start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn tail(&self) -> String {
        let n = self.lines.len().saturating_sub(40);
        self.lines[n..].join("\n")
    }

    /// Waits for a line containing `wanted`; lines containing any of `failures` end the wait
    /// with an error. Returns the matching line. `echo` copies console lines to stderr.
    pub fn wait_for(
        &mut self,
        wanted: &str,
        failures: &[&str],
        timeout: Duration,
        echo: bool,
    ) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if echo {
                        eprintln!("{line}");
                    }
                    self.lines.push(line.clone());
                    if line.contains(wanted) {
                        return Ok(line);
                    }
                    if failures.iter().any(|f| line.contains(f)) {
                        // keep a little more of the console for the report
                        let until = Instant::now() + Duration::from_secs(2);
                        while let Ok(l) = self
                            .rx
                            .recv_timeout(until.saturating_duration_since(Instant::now()))
                        {
                            self.lines.push(l);
                        }
                        return Err(HarnessError::Failed {
                            line,
                            wanted: wanted.into(),
                            tail: self.tail(),
                        });
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(HarnessError::Timeout {
                        secs: timeout.as_secs(),
                        wanted: wanted.into(),
                        tail: self.tail(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    return Err(HarnessError::Exited {
                        status,
                        wanted: wanted.into(),
                        tail: self.tail(),
                    });
                }
            }
        }
    }

    /// Waits up to `timeout` for QEMU to exit by itself (e.g. the guest powered off);
    /// kills it otherwise. Returns whether it exited by itself.
    pub fn finish(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // drain the console so QEMU never blocks on a full pipe
            while let Ok(l) = self.rx.try_recv() {
                self.lines.push(l);
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Console lines with kernel messages taken out of user space's lines again. A kernel
/// message printed into the middle of a line on the same serial console
/// (`…disk=/dev/vda[    4.33] 8021q: …` then `bytes=12 …` on the next line) becomes a
/// line of its own, and the two halves of the interrupted line are joined: the kernel's
/// `[ seconds.micros]` stamp never follows other text on a line of its own.
#[derive(Default)]
struct Lines {
    /// The start of a line a kernel message interrupted.
    pending: Option<String>,
}

impl Lines {
    fn push(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let (head, kernel) = split_kernel_message(line);
        if head.is_empty() && kernel.is_some() {
            // a whole kernel line, maybe one more inside an interrupted line
            out.extend(kernel);
            return out;
        }
        let head = match self.pending.take() {
            Some(p) => p + &head,
            None => head,
        };
        match kernel {
            // firmware drawing its screen (escape sequences) is not a line of ours
            Some(k) if !head.contains('\x1b') => {
                self.pending = Some(head);
                out.push(k);
            }
            Some(k) => {
                out.push(head);
                out.push(k);
            }
            None => out.push(head),
        }
        out
    }
}

/// Splits `line` at a kernel `[ seconds.micros]` stamp that follows other text: (text
/// before, kernel message). A line that starts with a stamp is ("", Some(line)).
fn split_kernel_message(line: &str) -> (String, Option<String>) {
    if starts_with_stamp(line) {
        return (String::new(), Some(line.to_string()));
    }
    let stamp_at = line
        .char_indices()
        .skip(1)
        .find_map(|(i, c)| (c == '[' && starts_with_stamp(&line[i..])).then_some(i));
    match stamp_at {
        Some(i) => (line[..i].to_string(), Some(line[i..].to_string())),
        None => (line.to_string(), None),
    }
}

fn starts_with_stamp(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some(close) = rest.find(']') else {
        return false;
    };
    let t = rest[..close].trim_start();
    t.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && a.bytes().all(|x| x.is_ascii_digit())
            && b.len() == 6
            && b.bytes().all(|x| x.is_ascii_digit())
    })
}

/// Parses `key=value` fields of a node-runtime console line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kernel_messages_inside_a_line_are_split_off() {
        let mut l = Lines::default();
        let mut all = Vec::new();
        for line in [
            "[    1.000000] first",
            "node-runtime: config-fetch attempt=3[    4.332125] 8021q: adding VLAN 0",
            "[    4.332200] virtio_net virtio1 eth0: up",
            " bytes=12 url=x",
            "node-runtime: ready installed=true disk=/dev/vda[    5.100000] random: crng",
            "",
            "a [1.5] b",
            "node-runtime: meta keys=[1] x",
            "\x1b[2J menu[    0.000000] Linux version",
        ] {
            all.extend(l.push(line));
        }
        assert_eq!(
            all,
            [
                "[    1.000000] first",
                "[    4.332125] 8021q: adding VLAN 0",
                "[    4.332200] virtio_net virtio1 eth0: up",
                "node-runtime: config-fetch attempt=3 bytes=12 url=x",
                "[    5.100000] random: crng",
                "node-runtime: ready installed=true disk=/dev/vda",
                "a [1.5] b",
                "node-runtime: meta keys=[1] x",
                "\x1b[2J menu",
                "[    0.000000] Linux version",
            ]
        );
        assert!(l.pending.is_none());
    }

    #[test]
    fn fields() {
        let l = "[    6.1] node-runtime: ready meta=0x0a:abc boot_ms=812";
        assert_eq!(field(l, "meta"), Some("0x0a:abc"));
        assert_eq!(field(l, "boot_ms"), Some("812"));
        assert_eq!(field(l, "nope"), None);
    }

    #[test]
    fn uefi_args_have_pflash_and_snapshot() {
        let m = Machine {
            disks: vec![("/x.raw".into(), DiskKind::Virtio)],
            ..Default::default()
        };
        let a = m.args(Some(Path::new("/tmp/v.fd"))).unwrap().join(" ");
        assert!(
            a.contains("if=pflash,format=raw,unit=1,file=/tmp/v.fd"),
            "{a}"
        );
        assert!(
            a.contains("file=/x.raw,format=raw,if=virtio,snapshot=on"),
            "{a}"
        );
        assert!(a.contains("-accel tcg"));
    }
}
