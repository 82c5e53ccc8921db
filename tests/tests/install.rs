//! Installation (docs/formats/install.md): the `installer` binary writes the installed layout
//! onto disk image files — from the base assets and from an installer image's UKI, with
//! systemd-boot and with GRUB — and QEMU boots them, with the writes kept, to node-runtime's
//! `installed=true` ready line with STATE and EPHEMERAL (ext4, docs/formats/extfs.md)
//! mounted; EPHEMERAL keeps its boot counter from one boot to the next, and `e2fsck` finds
//! both filesystems clean before and after. A disk holding another system's partitions is
//! refused without `--force`.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field};
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: u64 = 6 << 30;

fn installer() -> Command {
    let mut c = Command::new(bin("installer"));
    c.env("INSTALLER_INSTALL_DIR", assets())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("INSTALLER_META_BASE64");
    c
}

/// A sparse file of `SIZE` bytes.
fn blank(path: &Path) -> PathBuf {
    std::fs::File::create(path).unwrap().set_len(SIZE).unwrap();
    path.to_path_buf()
}

fn layout(raw: &Path) -> gpt::Layout {
    gpt::read(&mut std::fs::File::open(raw).unwrap(), 512, SIZE).unwrap()
}

/// `e2fsck -fn` on STATE and EPHEMERAL of `raw` (extracted into `dir`).
fn fsck_volumes(raw: &Path, dir: &Path) {
    let l = layout(raw);
    for name in ["STATE", "EPHEMERAL"] {
        let p = l.by_name(name).unwrap();
        let img = dir.join(format!("{name}.img"));
        extract(raw, p.offset(512), p.size(512), &img);
        let out = run(Command::new("e2fsck").arg("-fn").arg(&img), None);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&img).unwrap();
    }
}

fn boot(raw: &Path, firmware: Firmware) -> Booted {
    boot_to_ready(&Machine {
        firmware,
        disks: vec![(raw.to_path_buf(), DiskKind::VirtioWritable)],
        ..Default::default()
    })
}

fn console_line<'a>(b: &'a Booted, needle: &str) -> &'a str {
    b.console
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} line:\n{}", b.console.join("\n")))
}

#[test]
fn sd_boot_install_from_the_base_assets_boots_and_keeps_var() {
    let t = tempfile::tempdir().unwrap();
    let raw = blank(&t.path().join("disk.raw"));
    let env_meta = adv::env::encode(&[(0x0c, "from-env".to_string())], false);
    let out = run(
        installer()
            .args(["install", "--disk"])
            .arg(&raw)
            .args([
                "--bootloader",
                "sd-boot",
                "--extra-kernel-arg",
                "console=ttyS0",
                "--extra-kernel-arg",
                "node_runtime.test_poweroff",
                "--meta",
                "0xa=hostname: installed",
            ])
            .env("INSTALLER_META_BASE64", &env_meta),
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("installed v1.14.0 (sd-boot, base assets)"),
        "{err}"
    );
    let v = ok(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let names: Vec<String> = layout(&raw)
        .partitions
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["EFI", "META", "STATE", "EPHEMERAL"]);
    fsck_volumes(&raw, t.path());
    let want_meta = format!(
        "0x0a:{},0x0c:{}",
        sha256(b"hostname: installed"),
        sha256(b"from-env")
    );
    for n in 1..=2 {
        let b = boot(&raw, Firmware::Uefi);
        assert_eq!(field(&b.line, "installed"), Some("true"), "{}", b.line);
        assert_eq!(field(&b.line, "version"), Some("v1.14.0"), "{}", b.line);
        assert_eq!(field(&b.line, "disk"), Some("/dev/vda"), "{}", b.line);
        assert_eq!(
            field(&b.line, "meta"),
            Some(want_meta.as_str()),
            "{}",
            b.line
        );
        let eph = console_line(&b, "node-runtime: volume name=EPHEMERAL");
        assert!(
            eph.contains("fs=ext4 mount=/var") && eph.ends_with(&format!("boots={n}")),
            "{eph}"
        );
        assert!(
            console_line(&b, "node-runtime: volume name=STATE").contains("mount=/system/state")
        );
        assert!(b.powered_off, "boot {n} did not power off");
    }
    // the kernel's writes left both filesystems clean
    fsck_volumes(&raw, t.path());
}

#[test]
fn grub_install_boots_under_seabios() {
    let t = tempfile::tempdir().unwrap();
    let raw = blank(&t.path().join("disk.raw"));
    ok(installer().args(["install", "--disk"]).arg(&raw).args([
        "--bootloader",
        "grub",
        "--extra-kernel-arg",
        "console=ttyS0",
        "--extra-kernel-arg",
        "node_runtime.test_poweroff",
    ]));
    let names: Vec<String> = layout(&raw)
        .partitions
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["EFI", "BIOS", "BOOT", "META", "STATE", "EPHEMERAL"]);
    // SeaBIOS boots a disk through its MBR code only: GRUB's boot.img and core.img
    let b = boot(&raw, Firmware::Bios);
    assert_eq!(field(&b.line, "installed"), Some("true"), "{}", b.line);
    assert_eq!(field(&b.line, "version"), Some("v1.14.0"), "{}", b.line);
    assert!(b.powered_off);
    fsck_volumes(&raw, t.path());
}

#[test]
fn install_from_an_installer_image_boots_its_uki() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    publish_base_layout("amd64", &base);
    let profile = format!(
        "baseProfileName: installer\narch: amd64\nversion: v1.13.2\ninput:\n  baseInstaller:\n    \
         ociPath: {}\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0\n    - node_runtime.test_poweroff\n",
        base.display()
    );
    let out = t.path().join("out");
    let o = run(
        imager().args(["-", "--output"]).arg(&out),
        Some(profile.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = t.path().join("image");
    unpack_layout(&out.join("installer-amd64"), &root);
    let install_dir = root.join("usr/install");
    assert!(install_dir.join("amd64/vmlinuz.efi").is_file());
    // a UKI's command line is fixed: extra arguments are refused
    let raw = blank(&t.path().join("disk.raw"));
    let r = run(
        installer()
            .env("INSTALLER_INSTALL_DIR", &install_dir)
            .args(["install", "--bootloader", "sd-boot", "--disk"])
            .arg(&raw)
            .args(["--extra-kernel-arg", "x=1"]),
        None,
    );
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = run(
        installer()
            .env("INSTALLER_INSTALL_DIR", &install_dir)
            .args(["install", "--bootloader", "sd-boot", "--disk"])
            .arg(&raw),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("installed v1.13.2 (sd-boot, UKI)"), "{err}");
    // the UKI itself is on the ESP, byte for byte
    let esp = esp_files(&raw, t.path());
    let uki = esp
        .iter()
        .find(|f| f.0 == "EFI/Linux/Talos-v1.13.2.efi")
        .unwrap_or_else(|| panic!("{:?}", esp.iter().map(|f| &f.0).collect::<Vec<_>>()));
    assert_eq!(
        uki.1,
        std::fs::read(install_dir.join("amd64/vmlinuz.efi")).unwrap()
    );
    let b = boot(&raw, Firmware::Uefi);
    assert_eq!(field(&b.line, "installed"), Some("true"), "{}", b.line);
    assert_eq!(field(&b.line, "version"), Some("v1.13.2"), "{}", b.line);
    assert!(b.powered_off);
}

#[test]
fn another_systems_disk_is_refused_without_force() {
    let t = tempfile::tempdir().unwrap();
    let raw = blank(&t.path().join("disk.raw"));
    ok(Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+100M",
            "-c",
            "1:data",
            "-n",
            "2:0:+100M",
            "-c",
            "2:EFI",
        ])
        .arg(&raw));
    let before = sha256_file(&raw);
    let r = run(
        installer()
            .args(["install", "--bootloader", "grub", "--disk"])
            .arg(&raw),
        None,
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(7), "{err}");
    assert!(err.contains("\"data\"") && err.contains("--force"), "{err}");
    assert_eq!(sha256_file(&raw), before, "the disk was written");
    // an MBR partition table too
    let mbr = blank(&t.path().join("mbr.raw"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&mbr).unwrap();
        let mut sector = [0u8; 512];
        sector[446 + 4] = 0x83;
        sector[446 + 8] = 0x08;
        sector[446 + 12] = 0x10;
        sector[510] = 0x55;
        sector[511] = 0xAA;
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&sector).unwrap();
    }
    let r = run(
        installer()
            .args(["install", "--bootloader", "grub", "--disk"])
            .arg(&mbr),
        None,
    );
    assert_eq!(
        r.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // --force installs over it; a previous installation is replaced without asking
    ok(installer()
        .args(["install", "--bootloader", "grub", "--force", "--disk"])
        .arg(&raw));
    ok(installer()
        .args(["install", "--bootloader", "sd-boot", "--disk"])
        .arg(&raw));
    let names: Vec<String> = layout(&raw)
        .partitions
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["EFI", "META", "STATE", "EPHEMERAL"]);
    fsck_volumes(&raw, t.path());
}

/// The install-mode layouts of Talos 1.7 (from an installer image without a UKI, whose
/// `version` file says 1.7.0) and 1.14 (the base assets): partition names and sizes as
/// docs/formats/disk-layout.md gives them (BOOT 1000 MiB before 1.11, 2000 MiB after; STATE
/// 100 MiB; EPHEMERAL the rest), `sgdisk -v` clean, and two runs give the same bytes.
#[test]
fn layouts_of_1_7_and_1_14_are_as_documented_and_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    publish_base_layout("amd64", &base);
    let profile = format!(
        "baseProfileName: installer\narch: amd64\nversion: v1.7.0\ninput:\n  baseInstaller:\n    \
         ociPath: {}\n",
        base.display()
    );
    let out = t.path().join("out");
    let o = run(
        imager().args(["-", "--output"]).arg(&out),
        Some(profile.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = t.path().join("image");
    unpack_layout(&out.join("installer-amd64"), &root);
    assert_eq!(
        std::fs::read_to_string(root.join("usr/install/amd64/version")).unwrap(),
        "v1.7.0\n"
    );
    const SMALL: u64 = 3 << 30;
    for (version, dir, boot_mib) in [
        ("v1.7.0", root.join("usr/install"), 1000),
        ("v1.14.0", assets(), 2000),
    ] {
        let mut sums = Vec::new();
        for run_no in 0..2 {
            let raw = t.path().join(format!("{version}-{run_no}.raw"));
            std::fs::File::create(&raw).unwrap().set_len(SMALL).unwrap();
            let o = run(
                installer()
                    .env("INSTALLER_INSTALL_DIR", &dir)
                    .args(["install", "--bootloader", "grub", "--disk"])
                    .arg(&raw),
                None,
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{err}");
            assert!(err.contains(&format!("installed {version} (grub")), "{err}");
            let v = ok(Command::new("sgdisk").arg("-v").arg(&raw));
            assert!(v.contains("No problems found"), "{version}: {v}");
            let l = gpt::read(&mut std::fs::File::open(&raw).unwrap(), 512, SMALL).unwrap();
            let got: Vec<(String, u64)> = l
                .partitions
                .iter()
                .map(|p| (p.name.clone(), p.size(512) >> 20))
                .collect();
            let eph = l.by_name("EPHEMERAL").unwrap();
            assert_eq!(
                got,
                [
                    ("EFI".to_string(), 100),
                    ("BIOS".to_string(), 1),
                    ("BOOT".to_string(), boot_mib),
                    ("META".to_string(), 1),
                    ("STATE".to_string(), 100),
                    ("EPHEMERAL".to_string(), eph.size(512) >> 20),
                ],
                "{version}"
            );
            // EPHEMERAL runs to the last usable sector
            assert_eq!(eph.last_lba, l.last_usable, "{version}");
            sums.push(sha256_file(&raw));
            std::fs::remove_file(&raw).unwrap();
        }
        assert_eq!(sums[0], sums[1], "{version}: two installs differ");
    }
}
