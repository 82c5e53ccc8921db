//! arm64, built on this amd64 host (docs/arm64.md): the base assets (Debian's arm64 kernel,
//! node-runtime cross-built for aarch64, systemd-boot/stub aa64, GRUB arm64-efi); the metal
//! image with systemd-boot boots under `qemu-system-aarch64 -M virt` with AAVMF to the ready
//! line with its META value, the GRUB image boots with Debian's u-boot as the firmware, the
//! UEFI-only ISO boots from a virtio-scsi CD, and the PXE set by direct kernel boot. Two builds
//! of each artifact are byte-identical.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{Arch, DiskKind, Firmware, Machine, field};
use std::path::{Path, PathBuf};
use std::process::Command;

const META: &str = "hostname: arm64-node\n";

/// Builds `args` (a built-in profile and flags) for arm64 into `out`, twice, and checks that
/// both builds are the same bytes; returns the artifacts of the first.
fn build_twice(args: &[&str], out: &Path) -> Vec<PathBuf> {
    let mut sums = Vec::new();
    for sub in ["a", "b"] {
        let dir = out.join(sub);
        ok(imager()
            .args(args)
            .args(["--arch", "arm64", "--output"])
            .arg(&dir)
            .args(["--extra-kernel-arg", "console=ttyAMA0"])
            .args(["--extra-kernel-arg", "node_runtime.test_poweroff"]));
        let files = dir_entries(&dir);
        assert!(!files.is_empty(), "{args:?}: nothing built");
        sums.push(
            files
                .iter()
                .map(|f| (f.clone(), sha256_file(&dir.join(f))))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(sums[0], sums[1], "{args:?}: two builds differ");
    std::fs::remove_dir_all(out.join("b")).unwrap();
    dir_entries(&out.join("a"))
        .iter()
        .map(|f| out.join("a").join(f))
        .collect()
}

fn machine(firmware: Firmware, disk: &Path, kind: DiskKind) -> Machine {
    Machine {
        arch: Arch::Arm64,
        firmware,
        disks: vec![(disk.to_path_buf(), kind)],
        ..Default::default()
    }
}

fn assert_arm64_ready(b: &Booted, meta: Option<&str>) {
    assert!(
        b.console.iter().any(
            |l| l.contains("node-runtime: init stage=initramfs kernel=") && l.contains("arm64")
        ),
        "not the arm64 kernel:\n{}",
        b.console.join("\n")
    );
    if let Some(m) = meta {
        assert_eq!(field(&b.line, "meta"), Some(m), "{}", b.line);
    }
    assert!(b.powered_off, "the guest did not power off");
}

#[test]
fn arm64_base_assets_are_aarch64() {
    let a = assets().join("arm64");
    let file = |p: &Path| ok(Command::new("file").arg("-b").arg(p));
    let k = file(&a.join("vmlinuz"));
    assert!(k.contains("ARM64") || k.contains("Aarch64"), "{k}");
    for f in ["systemd-boot.efi", "systemd-stub.efi", "grub/grub-efi.img"] {
        let t = file(&a.join(f));
        assert!(t.contains("Aarch64") || t.contains("ARM64"), "{f}: {t}");
    }
    // the initramfs's /init is node-runtime for aarch64, statically linked
    let entries = initramfs_entries(&a.join("initramfs.xz"));
    let init = entries.iter().find(|e| e.name == "init").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("init");
    std::fs::write(&p, &init.data).unwrap();
    let t = file(&p);
    assert!(
        t.contains("ARM aarch64") && t.contains("statically linked"),
        "{t}"
    );
    assert!(
        entries.iter().any(|e| e.name.contains("virtio_blk")),
        "virtio_blk missing from the floor"
    );
    // no BIOS images on arm64
    assert!(!a.join("grub/core.img").exists());
}

#[test]
fn arm64_sd_boot_image_boots_under_aavmf_with_its_meta() {
    let t = tempfile::tempdir().unwrap();
    let value = t.path().join("meta.yaml");
    std::fs::write(&value, META).unwrap();
    let arts = build_twice(
        &["metal", "--meta", &format!("0xa=@{}", value.display())],
        t.path(),
    );
    assert_eq!(arts.len(), 1);
    assert!(arts[0].ends_with("metal-arm64.raw.zst"), "{arts:?}");
    let raw = t.path().join("metal-arm64.raw");
    decompress(&arts[0], &raw);
    let v = ok(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let want = format!("0x0a:{}", sha256(META.as_bytes()));
    let b = boot_to_ready(&machine(Firmware::Uefi, &raw, DiskKind::Virtio));
    assert_arm64_ready(&b, Some(&want));
    // systemd-boot aa64 started the UKI (systemd-stub aa64) from EFI/Linux/
    assert!(
        b.console.iter().any(|l| l.contains("Talos (v1.14.0)")),
        "no systemd-boot menu:\n{}",
        b.console.join("\n")
    );
}

#[test]
fn arm64_grub_image_boots_under_u_boot() {
    let t = tempfile::tempdir().unwrap();
    let profile = "baseProfileName: metal\narch: arm64\ncustomization:\n  extraKernelArgs: [console=ttyAMA0, node_runtime.test_poweroff]\noutput:\n  outFormat: raw\n  imageOptions:\n    bootloader: grub\n";
    let mut sums = Vec::new();
    for sub in ["a", "b"] {
        let o = run(
            imager().args(["-", "--output"]).arg(t.path().join(sub)),
            Some(profile.as_bytes()),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sums.push(sha256_file(&t.path().join(sub).join("metal-arm64.raw")));
    }
    assert_eq!(sums[0], sums[1], "two builds differ");
    let raw = t.path().join("a/metal-arm64.raw");
    // the grub layout: EFI (GRUB arm64-efi), BIOS, BOOT, META; no i386 boot code in the MBR
    let p = ok(Command::new("sgdisk").arg("-p").arg(&raw));
    for name in ["EFI", "BIOS", "BOOT", "META"] {
        assert!(p.contains(name), "{name} missing:\n{p}");
    }
    let mbr = std::fs::read(&raw).unwrap()[..446].to_vec();
    assert!(mbr.iter().all(|b| *b == 0), "boot code in an arm64 MBR");
    // through `imager boot`, as users run it: the arch comes from the file name
    let o = run(
        imager().arg("boot").arg(&raw).args([
            "--firmware",
            "u-boot",
            "--until-ready",
            "--timeout",
            "300",
        ]),
        None,
    );
    let console = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{console}");
    assert!(
        console.contains("GNU GRUB"),
        "not booted through GRUB:\n{console}"
    );
    assert!(
        console.contains("node-runtime: init stage=initramfs kernel=")
            && console.contains("-arm64"),
        "{console}"
    );
    assert!(console.contains("imager boot: ready after"), "{console}");
    // SeaBIOS boots no arm64 image: one clear line, exit 2
    let o = run(
        imager().arg("boot").arg(&raw).args(["--firmware", "bios"]),
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--firmware bios does not boot Arm64"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn arm64_iso_boots_from_cd_under_aavmf() {
    let t = tempfile::tempdir().unwrap();
    let arts = build_twice(&["iso"], t.path());
    assert!(arts[0].ends_with("metal-arm64.iso"), "{arts:?}");
    let list = ok(Command::new("isoinfo")
        .args(["-R", "-f", "-i"])
        .arg(&arts[0]));
    assert!(
        list.lines().any(|l| l == "/EFI/BOOT/BOOTAA64.EFI"),
        "{list}"
    );
    assert!(
        !list.contains("/boot/grub"),
        "an arm64 ISO is UEFI-only:\n{list}"
    );
    let b = boot_to_ready(&machine(Firmware::Uefi, &arts[0], DiskKind::Cdrom));
    assert_arm64_ready(&b, None);
}

#[test]
fn arm64_pxe_set_boots_by_direct_kernel_boot() {
    let t = tempfile::tempdir().unwrap();
    let arts = build_twice(&["metal", "--output-kind", "pxe"], t.path());
    let names: Vec<String> = arts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "cmdline-metal-arm64",
            "initramfs-arm64.xz",
            "kernel-arm64",
            "metal-arm64.ipxe"
        ]
    );
    let dir = arts[0].parent().unwrap();
    let cmdline = std::fs::read_to_string(dir.join("cmdline-metal-arm64")).unwrap();
    assert!(
        cmdline.starts_with("talos.platform=metal console=ttyAMA0 "),
        "{cmdline}"
    );
    let b = boot_to_ready(&Machine {
        arch: Arch::Arm64,
        firmware: Firmware::Bios,
        direct: Some((
            dir.join("kernel-arm64"),
            dir.join("initramfs-arm64.xz"),
            cmdline,
        )),
        ..Default::default()
    });
    assert_arm64_ready(&b, None);
}

/// The UKI and the installer image of arm64 are built here too (systemd-stub aa64).
#[test]
fn arm64_uki_is_an_aarch64_pe() {
    let t = tempfile::tempdir().unwrap();
    let arts = build_twice(&["metal-uki"], t.path());
    assert!(arts[0].ends_with("metal-arm64-uki.efi"), "{arts:?}");
    let f = ok(Command::new("file").arg("-b").arg(&arts[0]));
    assert!(
        f.contains("EFI application") && f.contains("Aarch64"),
        "{f}"
    );
    let i = ok(imager().arg("inspect").arg(&arts[0]));
    assert!(i.contains(".linux") && i.contains(".initrd"), "{i}");
}

/// The arm64 installer image: its base published by `base-assets publish --arch arm64` from
/// the arm64 assets, the output built on this host carries an Aarch64 UKI and systemd-boot in
/// `usr/install/arm64/`, and two builds give the same OCI layout.
#[test]
fn arm64_installer_image_carries_aarch64_boot_files() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    publish_base_layout("arm64", &base);
    let profile = format!(
        "baseProfileName: installer\narch: arm64\ninput:\n  baseInstaller:\n    ociPath: {}\n",
        base.display()
    );
    let mut digests = Vec::new();
    for sub in ["a", "b"] {
        let out = t.path().join(sub);
        let o = run(
            imager().args(["-", "--output"]).arg(&out),
            Some(profile.as_bytes()),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        digests.push(sha256_file(&out.join("installer-arm64/index.json")));
    }
    assert_eq!(digests[0], digests[1], "two builds differ");
    let x = last_layer(&t.path().join("a/installer-arm64"), &t.path().join("layer"));
    for f in ["vmlinuz.efi", "systemd-boot.efi"] {
        let p = x.join("usr/install/arm64").join(f);
        let d = ok(Command::new("file").arg("-b").arg(&p));
        assert!(
            d.contains("EFI application") && d.contains("Aarch64"),
            "{f}: {d}"
        );
    }
}
