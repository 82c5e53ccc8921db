//! The hybrid ISO (docs/formats/iso.md): read back by xorriso, isoinfo, sgdisk and fsck.fat, built
//! twice byte-identically, and booted to the ready line as a CD and as a disk, under OVMF and under
//! SeaBIOS, with the META value read back from INSTALLER_META_BASE64.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Built {
    _dir: tempfile::TempDir,
    iso: PathBuf,
}

fn build(out: &Path) -> PathBuf {
    ok(imager()
        .args(["iso", "--arch", "amd64", "--output"])
        .arg(out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .arg("--meta")
        .arg(format!(
            "0xa=@{}",
            root().join("hack/examples/network.yaml").display()
        )));
    let iso = out.join("metal-amd64.iso");
    assert!(iso.exists());
    iso
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let iso = build(dir.path());
        Built { _dir: dir, iso }
    })
}

#[test]
fn reference_tools_read_the_iso() {
    let b = built();
    let et = ok(Command::new("xorriso")
        .args(["-indev"])
        .arg(&b.iso)
        .args(["-report_el_torito", "plain"]));
    let entries: Vec<&str> = et
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .collect();
    assert_eq!(entries.len(), 2, "{et}");
    assert!(
        entries[0].contains("BIOS") && entries[1].contains("UEFI"),
        "{et}"
    );
    let d = ok(Command::new("isoinfo").args(["-d", "-i"]).arg(&b.iso));
    assert!(d.contains("Volume id: TALOS_V1_14_0"), "{d}");
    assert!(d.contains("Volume set id: Talos-v1.14.0"), "{d}");
    assert!(d.contains("Rock Ridge signatures version"), "{d}");
    let f = ok(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(&b.iso));
    for want in [
        "/boot/vmlinuz",
        "/boot/initramfs.xz",
        "/boot/grub/grub.cfg",
        "/EFI/BOOT/BOOTX64.EFI",
        "/loader/loader.conf",
        "/loader/random-seed",
        "/EFI/Linux/Talos-v1.14.0.efi",
    ] {
        assert!(f.lines().any(|l| l == want), "{want} missing:\n{f}");
    }
    let cfg = ok(Command::new("isoinfo")
        .args(["-R", "-x", "/boot/grub/grub.cfg", "-i"])
        .arg(&b.iso));
    assert!(cfg.starts_with("set default=0\nset timeout=3\n"), "{cfg}");
    assert!(cfg.contains("talos.halt_if_installed=1"), "{cfg}");
    assert!(
        cfg.contains("talos.environment=INSTALLER_META_BASE64="),
        "{cfg}"
    );
    assert!(
        cfg.contains("menuentry \"Reset Talos installation\""),
        "{cfg}"
    );
    // --extra-kernel-arg reaches both bootloaders: GRUB (BIOS) and systemd-boot's entry (UEFI)
    assert!(cfg.contains(" console=ttyS0 "), "{cfg}");
    assert!(!f.contains("/loader/entries/"), "{f}");
    let uki = iso_file(&b.iso, "/EFI/Linux/Talos-v1.14.0.efi");
    let pe = pe::Pe::parse(&uki).unwrap();
    let entry =
        String::from_utf8_lossy(pe.section_data(pe.section(".cmdline").unwrap())).to_string();
    assert!(
        entry.starts_with("talos.platform=metal console=ttyS0 "),
        "{entry}"
    );
    assert!(entry.contains("node_runtime.test_poweroff"), "{entry}");
    let l = ok(Command::new("isoinfo").args(["-R", "-l", "-i"]).arg(&b.iso));
    let seed = l
        .lines()
        .find(|x| x.trim_end().ends_with(" random-seed"))
        .unwrap();
    assert!(seed.starts_with("-r--r--r--"), "{seed}");
    let loader = ok(Command::new("isoinfo")
        .args(["-R", "-x", "/loader/loader.conf", "-i"])
        .arg(&b.iso));
    assert_eq!(
        loader,
        "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n"
    );
    // the hybrid disk view: a valid GPT whose second partition is the ESP
    let v = ok(Command::new("sgdisk").arg("-v").arg(&b.iso));
    assert!(v.contains("No problems found"), "{v}");
    let size = std::fs::metadata(&b.iso).unwrap().len();
    let l = gpt::read(&mut std::fs::File::open(&b.iso).unwrap(), 512, size).unwrap();
    let esp = l
        .partitions
        .iter()
        .find(|p| p.type_guid == gpt::types::ESP)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("efiboot.img");
    extract(&b.iso, esp.offset(512), esp.size(512), &img);
    let fsck = run(Command::new("fsck.fat").arg("-n").arg(&img), None);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn two_iso_builds_are_byte_identical() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let second = build(dir.path());
    assert_eq!(sha256_file(&b.iso), sha256_file(&second));
}

fn boot(fw: Firmware, kind: DiskKind) {
    let b = built();
    let booted = boot_to_ready(&Machine {
        firmware: fw,
        disks: vec![(b.iso.clone(), kind)],
        ..Default::default()
    });
    let value = std::fs::read(root().join("hack/examples/network.yaml")).unwrap();
    let want = format!("0x0a:{}", sha256(&value));
    assert_eq!(
        field(&booted.line, "meta"),
        Some(want.as_str()),
        "{fw:?} {kind:?}: {}",
        booted.line
    );
    assert!(
        booted
            .console
            .iter()
            .any(|l| l.contains("meta-import from=cmdline keys=1 imported=1"))
    );
}

#[test]
fn iso_boots_as_cd_under_ovmf() {
    boot(Firmware::Uefi, DiskKind::Cdrom);
}

#[test]
fn iso_boots_as_cd_under_seabios() {
    // through `imager boot`, the command users run
    let b = built();
    let r = run(
        Command::new(bin("imager")).arg("boot").arg(&b.iso).args([
            "--firmware",
            "bios",
            "--as",
            "cdrom",
            "--until-ready",
            "--timeout",
            "300",
        ]),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "imager boot failed:\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("imager boot: ready after"))
        .unwrap();
    let value = std::fs::read(root().join("hack/examples/network.yaml")).unwrap();
    assert!(
        line.contains(&format!("meta=0x0a:{}", sha256(&value))),
        "{line}"
    );
}

#[test]
fn iso_boots_as_disk_under_ovmf() {
    boot(Firmware::Uefi, DiskKind::Virtio);
}

#[test]
fn iso_boots_as_disk_under_seabios() {
    boot(Firmware::Bios, DiskKind::Virtio);
}
