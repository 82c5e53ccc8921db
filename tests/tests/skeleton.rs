//! End-to-end: `imager metal --meta 0xa=<network yaml>` → disk image → independent readers,
//! reproducibility, and a boot in QEMU (TCG, OVMF) to node-runtime's ready line.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Built {
    _dir: tempfile::TempDir,
    zst: PathBuf,
    raw: PathBuf,
    meta_value: Vec<u8>,
}

fn network_yaml() -> PathBuf {
    root().join("hack/examples/network.yaml")
}

fn build_metal(out: &Path, extra_env: &[(&str, &str)], cwd: &Path) -> PathBuf {
    let mut c = imager();
    c.current_dir(cwd)
        .args(["metal", "--output"])
        .arg(out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .arg("--meta")
        .arg(format!("0xa=@{}", network_yaml().display()));
    for (k, v) in extra_env {
        c.env(k, v);
    }
    ok(&mut c);
    let zst = out.join("metal-amd64.raw.zst");
    assert!(zst.exists(), "missing {}", zst.display());
    zst
}

/// The image every test here reads, built once.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let zst = build_metal(dir.path(), &[], dir.path());
        let raw = dir.path().join("metal-amd64.raw");
        decompress(&zst, &raw);
        Built {
            meta_value: std::fs::read(network_yaml()).unwrap(),
            _dir: dir,
            zst,
            raw,
        }
    })
}

/// Copies partition `name` of `raw` into `<dir>/<name>.img`.
fn partition(raw: &Path, name: &str, dir: &Path) -> PathBuf {
    let p = layout(raw).by_name(name).unwrap().clone();
    let img = dir.join(format!("{name}.img"));
    extract(raw, p.offset(512), p.size(512), &img);
    img
}

fn layout(raw: &Path) -> gpt::Layout {
    let size = std::fs::metadata(raw).unwrap().len();
    gpt::read(&mut std::fs::File::open(raw).unwrap(), 512, size).unwrap()
}

#[test]
fn image_layout_is_talos_dual_boot() {
    let b = built();
    let size = std::fs::metadata(&b.raw).unwrap().len();
    // docs/formats/disk-layout.md, disk size: metal amd64 dual-boot
    assert_eq!(size, 4_453_302_272);
    let l = layout(&b.raw);
    assert_eq!(
        l.disk_guid.to_string(),
        "d92d45b3-cde9-8760-be9f-a2a71fac8d11"
    );
    let parts: Vec<(String, String, u64, u64, u64)> = l
        .partitions
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.guid.to_string(),
                p.first_lba,
                p.last_lba,
                p.attributes,
            )
        })
        .collect();
    // the LBAs of the dual-boot example in docs/formats/disk-layout.md
    assert_eq!(
        parts,
        vec![
            (
                "EFI".into(),
                "bca5174b-0118-8a6a-af0b-2c6e1585acae".into(),
                2048,
                4304895,
                0
            ),
            (
                "BIOS".into(),
                "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3".into(),
                4304896,
                4306943,
                4
            ),
            (
                "BOOT".into(),
                "24c73076-4092-85dd-9d98-686a2dbf6d81".into(),
                4306944,
                8402943,
                0
            ),
            (
                "META".into(),
                "cf04f137-101e-8ec6-9627-fa3f51cdabb8".into(),
                8402944,
                8404991,
                0
            ),
        ]
    );
    // the image stays sparse on disk
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&b.raw).unwrap().blocks() * 512;
    assert!(
        allocated < 64 << 20,
        "raw image allocates {allocated} bytes"
    );
}

#[test]
fn sgdisk_verifies_the_table() {
    let b = built();
    let out = ok(Command::new("sgdisk").arg("-v").arg(&b.raw));
    assert!(out.contains("No problems found"), "sgdisk -v:\n{out}");
    let info = ok(Command::new("sgdisk").args(["-i", "1"]).arg(&b.raw));
    assert!(
        info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "{info}"
    );
    assert!(info.contains("Partition name: 'EFI'"), "{info}");
    let info = ok(Command::new("sgdisk").args(["-i", "2"]).arg(&b.raw));
    assert!(
        info.contains("21686148-6449-6E6F-744E-656564454649"),
        "{info}"
    );
    assert!(info.contains("Partition name: 'BIOS'"), "{info}");
    let info = ok(Command::new("sgdisk").args(["-i", "4"]).arg(&b.raw));
    assert!(
        info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        "{info}"
    );
    assert!(info.contains("Partition name: 'META'"), "{info}");
}

#[test]
fn fsck_fat_accepts_the_esp_and_it_holds_the_boot_files() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let img = partition(&b.raw, "EFI", dir.path());
    let out = run(Command::new("fsck.fat").args(["-n", "-v"]).arg(&img), None);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck.fat -n failed:\n{text}");
    for bad in [
        "differences",
        "will be removed",
        "Free cluster summary wrong",
        "invalid",
        "bad",
    ] {
        assert!(
            !text.to_lowercase().contains(&bad.to_lowercase()),
            "fsck.fat complains ({bad}):\n{text}"
        );
    }
    // contents, read back with the fat crate's reader
    let mut r = fat_files(&img);
    r.sort();
    let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "EFI/boot/BOOTX64.efi",
        "loader/loader.conf",
        "EFI/Linux/Talos-v1.14.0.efi",
    ] {
        assert!(
            names.contains(&want),
            "{want} missing from the ESP: {names:?}"
        );
    }
    let get = |n: &str| r.iter().find(|(x, _)| x == n).unwrap().1.clone();
    assert_eq!(
        get("loader/loader.conf"),
        b"# systemd-boot configuration\n\ntimeout 10\n"
    );
    assert_eq!(
        sha256(&get("EFI/boot/BOOTX64.efi")),
        sha256_file(&assets().join("amd64/systemd-boot.efi"))
    );
    // from 1.10 systemd-boot boots a UKI from EFI/Linux/, with no type #1 entry beside it
    assert!(
        !names.iter().any(|n| n.starts_with("loader/entries/")),
        "{names:?}"
    );
    let uki = get("EFI/Linux/Talos-v1.14.0.efi");
    let pe = pe::Pe::parse(&uki).unwrap();
    let section = |n: &str| pe.section_data(pe.section(n).unwrap());
    assert_eq!(
        sha256(
            &section(".linux")[..std::fs::metadata(assets().join("amd64/vmlinuz"))
                .unwrap()
                .len() as usize]
        ),
        sha256_file(&assets().join("amd64/vmlinuz"))
    );
    let cmdline = String::from_utf8_lossy(section(".cmdline")).to_string();
    assert_eq!(
        cmdline,
        "talos.platform=metal console=ttyS0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never node_runtime.test_poweroff",
    );
}

#[test]
fn meta_partition_holds_the_value_in_talos_adv_format() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let img = partition(&b.raw, "META", dir.path());
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(&bytes[0..4], &[0x5A, 0x4B, 0x3C, 0x2D]);
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0x0a]);
    let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(&bytes[12..12 + len], &b.meta_value[..]);
    // then the image-mode auto value 0x11 = "dual-boot" (docs/formats/disk-layout.md), tags sorted
    let o = 12 + len;
    assert_eq!(&bytes[o..o + 8], &[0, 0, 0, 0x11, 0, 0, 0, 9]);
    assert_eq!(&bytes[o + 8..o + 17], b"dual-boot");
    assert_eq!(
        &bytes[..256 << 10],
        &bytes[256 << 10..512 << 10],
        "copy B differs from copy A"
    );
}

#[test]
fn initramfs_and_rootfs_squashfs_are_readable_by_reference_tools() {
    let initramfs = assets().join("amd64/initramfs.xz");
    // the kernel only decodes xz with CRC32 (or no) checks
    let list = ok(Command::new("xz")
        .args(["--robot", "--list"])
        .arg(&initramfs));
    assert!(list.contains("CRC32"), "initramfs.xz check type:\n{list}");
    let entries = initramfs_entries(&initramfs);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    for want in [
        "init",
        "rootfs.sqsh",
        "dev/console",
        "etc/modules-load.d/floor.conf",
    ] {
        assert!(
            names.contains(&want),
            "{want} missing from initramfs: {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.ends_with("/virtio_blk.ko")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("/modules.dep")),
        "{names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "initramfs entries are not in sorted order");
    assert!(entries.iter().all(|e| e.uid == 0 && e.gid == 0));
    // GNU cpio agrees with our reader
    let dir = tempfile::tempdir().unwrap();
    let cpio_path = dir.path().join("initramfs.cpio");
    let data = {
        use std::io::Read;
        let mut v = Vec::new();
        liblzma::read::XzDecoder::new(std::fs::File::open(&initramfs).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    std::fs::write(&cpio_path, &data).unwrap();
    let listed = ok(Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&cpio_path));
    assert_eq!(listed.lines().count(), entries.len(), "{listed}");

    let sqsh = entries.iter().find(|e| e.name == "rootfs.sqsh").unwrap();
    let sqsh_path = dir.path().join("rootfs.sqsh");
    std::fs::write(&sqsh_path, &sqsh.data).unwrap();
    let out = ok(Command::new("unsquashfs").args(["-lln"]).arg(&sqsh_path));
    for want in [
        "squashfs-root/sbin/init",
        "squashfs-root/etc/os-release",
        "squashfs-root/system",
        "squashfs-root/proc",
    ] {
        assert!(
            out.lines().any(|l| l.ends_with(want)),
            "{want} missing:\n{out}"
        );
    }
    assert!(
        out.lines()
            .filter(|l| l.contains("squashfs-root"))
            .all(|l| l.contains("0/0")),
        "{out}"
    );
    // the init in the squashfs is the node-runtime binary
    let ex = dir.path().join("x");
    ok(Command::new("unsquashfs")
        .args(["-no-xattrs", "-d"])
        .arg(&ex)
        .arg(&sqsh_path));
    assert_eq!(
        sha256_file(&ex.join("sbin/init")),
        sha256_file(&bin("node-runtime"))
    );
}

#[test]
fn two_builds_are_byte_identical() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // another cwd, TMPDIR, TZ and umask
    let out = dir.path().join("second");
    let mut c = imager();
    c.current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .env("TZ", "America/Los_Angeles")
        .args(["metal", "--output"])
        .arg(&out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .arg("--meta")
        .arg(format!("0xa=@{}", network_yaml().display()));
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 077; exec \"$@\"")
        .arg("sh")
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh.current_dir(cwd.path());
    ok(&mut sh);
    let second = out.join("metal-amd64.raw.zst");
    assert_eq!(
        sha256_file(&b.zst),
        sha256_file(&second),
        "two builds differ"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&second).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn base_assets_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let kernel_root = kernel_root();
    for n in ["a", "b"] {
        ok(Command::new(bin("base-assets"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("--kernel-root")
            .arg(&kernel_root)
            .arg("--node-runtime")
            .arg(bin("node-runtime"))
            .arg("--modules")
            .arg(root().join("kernel-config/modules-amd64.txt"))
            .arg("--out")
            .arg(dir.path().join(n)));
    }
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-boot.efi",
        "systemd-stub.efi",
        "grub/boot.img",
        "grub/core.img",
        "grub/grub-efi.img",
        "grub/eltorito.img",
    ] {
        assert_eq!(
            sha256_file(&dir.path().join("a").join(f)),
            sha256_file(&dir.path().join("b").join(f)),
            "{f} differs between two builds"
        );
    }
}

fn boot(raw: &Path) -> (String, Vec<String>, bool) {
    let b = boot_to_ready(&Machine {
        firmware: Firmware::Uefi,
        disks: vec![(raw.to_path_buf(), DiskKind::Virtio)],
        ..Default::default()
    });
    (b.line, b.console, b.powered_off)
}

#[test]
fn boots_to_ready_with_the_meta_value() {
    let b = built();
    let (line, console, powered_off) = boot(&b.raw);
    let want = format!(
        "0x0a:{},0x11:{}",
        sha256(&b.meta_value),
        sha256(b"dual-boot")
    );
    assert_eq!(field(&line, "meta"), Some(want.as_str()), "{line}");
    let meta = console
        .iter()
        .find(|l| l.contains("node-runtime: meta "))
        .unwrap();
    assert!(meta.contains("source=copy-a"), "{meta}");
    assert!(meta.contains("disk=/dev/vda partition=4"), "{meta}");
    let mods = console
        .iter()
        .find(|l| l.contains("node-runtime: modules "))
        .unwrap();
    assert!(mods.contains("failed=0"), "{mods}");
    assert!(
        console
            .iter()
            .any(|l| l.contains("node-runtime: rootfs device=/dev/loop")),
        "no rootfs line"
    );
    assert!(
        console
            .iter()
            .any(|l| l.contains("node-runtime: init stage=rootfs")),
        "no switch_root"
    );
    assert!(powered_off, "the guest did not power off");
}

#[test]
fn boots_with_meta_copy_a_corrupt_and_reads_copy_b() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("corrupt-a.raw");
    // a sparse copy with one flipped byte inside copy A's value
    decompress(&b.zst, &raw);
    let m = layout(&raw).by_name("META").unwrap().clone();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)
            .unwrap();
        let mut byte = [0u8; 1];
        f.seek(SeekFrom::Start(m.offset(512) + 20)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(m.offset(512) + 20)).unwrap();
        f.write_all(&[byte[0] ^ 0xff]).unwrap();
    }
    let (line, console, _) = boot(&raw);
    let meta = console
        .iter()
        .find(|l| l.contains("node-runtime: meta "))
        .unwrap();
    assert!(meta.contains("source=copy-b"), "{meta}");
    assert!(meta.contains("checksum mismatch"), "{meta}");
    let want = format!(
        "0x0a:{},0x11:{}",
        sha256(&b.meta_value),
        sha256(b"dual-boot")
    );
    assert_eq!(field(&line, "meta"), Some(want.as_str()), "{line}");
}

#[test]
fn dual_boot_image_boots_under_seabios_through_grub() {
    let b = built();
    let booted = boot_to_ready(&Machine {
        firmware: Firmware::Bios,
        disks: vec![(b.raw.clone(), DiskKind::Virtio)],
        ..Default::default()
    });
    let want = format!(
        "0x0a:{},0x11:{}",
        sha256(&b.meta_value),
        sha256(b"dual-boot")
    );
    assert_eq!(
        field(&booted.line, "meta"),
        Some(want.as_str()),
        "{}",
        booted.line
    );
    assert!(booted.powered_off);
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    std::fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

#[test]
fn grub_layout_boots_under_seabios_and_ovmf() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "baseProfileName: metal\narch: amd64\ncustomization:\n  extraKernelArgs: [console=ttyS0, node_runtime.test_poweroff]\n  metaContents: [{key: 10, value: grub}]\noutput:\n  imageOptions:\n    bootloader: grub\n  outFormat: raw\n";
    let r = run(
        imager().arg("-").arg("--output").arg(dir.path()),
        Some(yaml.as_bytes()),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let raw = dir.path().join("metal-amd64.raw");
    let l = layout(&raw);
    let names: Vec<&str> = l.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["EFI", "BIOS", "BOOT", "META"]);
    assert_eq!(l.by_name("EFI").unwrap().size(512), 100 << 20);
    let out = ok(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(out.contains("No problems found"), "{out}");
    // docs/formats/disk-layout.md, GRUB BIOS: boot.img's first 446 bytes with the BIOS LBA at 0x5C
    // and the drive check NOPed; the protective MBR table after them; core.img with LBA + 1 at
    // 0x1F4
    let bios = l.by_name("BIOS").unwrap().first_lba;
    let mbr = read_at(&raw, 0, 512);
    let boot_img = std::fs::read(assets().join("amd64/grub/boot.img")).unwrap();
    assert_eq!(&mbr[..0x5C], &boot_img[..0x5C]);
    assert_eq!(&mbr[0x5C..0x64], &bios.to_le_bytes());
    assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
    assert_eq!(mbr[450], 0xEE);
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    let core = read_at(&raw, bios * 512, 512);
    assert_eq!(&core[0x1F4..0x1FC], &(bios + 1).to_le_bytes());
    // BOOT: FAT32 accepted by fsck.fat, holding the kernel, initramfs and grub.cfg
    let img = partition(&raw, "BOOT", dir.path());
    let fsck = run(Command::new("fsck.fat").arg("-n").arg(&img), None);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let files = fat_files(&img);
    let cfg = files.iter().find(|(n, _)| n == "grub/grub.cfg").unwrap();
    let cfg = String::from_utf8(cfg.1.clone()).unwrap();
    assert!(
        cfg.starts_with("set default=\"A - Talos v1.14.0\"\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains("  linux /A/vmlinuz talos.platform=metal console=ttyS0 "),
        "{cfg}"
    );
    assert!(files.iter().any(
        |(n, d)| n == "A/vmlinuz" && sha256(d) == sha256_file(&assets().join("amd64/vmlinuz"))
    ));
    for fw in [Firmware::Bios, Firmware::Uefi] {
        let booted = boot_to_ready(&Machine {
            firmware: fw,
            disks: vec![(raw.clone(), DiskKind::Virtio)],
            ..Default::default()
        });
        let want = format!("0x0a:{}", sha256(b"grub"));
        assert_eq!(
            field(&booted.line, "meta"),
            Some(want.as_str()),
            "{fw:?}: {}",
            booted.line
        );
    }
}
