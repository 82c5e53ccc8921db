//! META at boot (issue 7): keys handed over on the kernel cmdline
//! (`talos.environment=INSTALLER_META_BASE64=…`) that the disk's META partition lacks are
//! written into it (both ADV copies), the image-mode key 0x11 of a dual-boot image is deleted
//! at its first boot (Talos's `DiskImageBootloader`), and a disk whose two META copies are
//! both corrupt boots with empty META and says so. Direct kernel boot of a PXE set with a
//! metal disk image attached as virtio disk.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

fn meta_partition(raw: &Path) -> (u64, u64) {
    let size = std::fs::metadata(raw).unwrap().len();
    let l = gpt::read(&mut std::fs::File::open(raw).unwrap(), 512, size).unwrap();
    let p = l.by_name("META").unwrap();
    (p.offset(512), p.size(512))
}

fn read_meta(raw: &Path) -> Vec<u8> {
    let (off, _) = meta_partition(raw);
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; adv::PARTITION_SIZE];
    f.read_exact(&mut b).unwrap();
    b
}

#[test]
fn cmdline_keys_are_written_to_meta_and_corrupt_meta_boots_empty() {
    let t = tempfile::tempdir().unwrap();
    // a metal image without META values, and a PXE set carrying one on the cmdline
    let img = t.path().join("img");
    ok(imager()
        .args(["metal", "--output", img.to_str().unwrap()])
        .args(["--extra-kernel-arg", "console=ttyS0"]));
    let raw = t.path().join("disk.raw");
    decompress(&img.join("metal-amd64.raw.zst"), &raw);
    let before = adv::Adv::from_partition(&read_meta(&raw)).unwrap().0;
    assert!(before.get(0x0c).is_none());
    // the image-mode key Talos writes into amd64 dual-boot images and deletes at first boot
    assert_eq!(before.get(0x11), Some(&b"dual-boot"[..]));
    let pxe = t.path().join("pxe");
    ok(imager()
        .args([
            "metal",
            "--output-kind",
            "pxe",
            "--output",
            pxe.to_str().unwrap(),
        ])
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .args(["--meta", "0x0c=written-at-boot"]));
    let cmdline = std::fs::read_to_string(pxe.join("cmdline-metal-amd64")).unwrap();
    let m = |disk: &Path, kind, cmdline: &str| Machine {
        firmware: Firmware::Bios,
        direct: Some((
            pxe.join("kernel-amd64"),
            pxe.join("initramfs-amd64.xz"),
            cmdline.to_string(),
        )),
        disks: vec![(disk.to_path_buf(), kind)],
        ..Default::default()
    };
    let b = boot_to_ready(&m(&raw, DiskKind::VirtioWritable, &cmdline));
    let console = b.console.join("\n");
    assert!(
        console.contains("node-runtime: meta-import from=cmdline keys=1 imported=1"),
        "{console}"
    );
    assert!(
        console.contains("node-runtime: meta-write disk=/dev/vda partition=")
            && console.contains(" keys=0x0c"),
        "{console}"
    );
    assert!(b.powered_off);
    // both copies on the disk now hold the key
    let part = read_meta(&raw);
    let (after, source) = adv::Adv::from_partition(&part).unwrap();
    assert!(matches!(source, adv::Source::CopyA), "{source:?}");
    assert_eq!(after.get(0x0c), Some(&b"written-at-boot"[..]));
    assert_eq!(after.get(0x11), None, "0x11 survived the first boot");
    assert!(
        console.contains("node-runtime: meta-delete disk=/dev/vda keys=0x11"),
        "{console}"
    );
    let b_at = adv::COPY_B_OFFSET;
    let copy_b = adv::Adv::decode_copy(&part[b_at..b_at + adv::COPY_SIZE]).unwrap();
    assert_eq!(copy_b.get(0x0c), Some(&b"written-at-boot"[..]));

    // both copies corrupt: empty META, said on the console; no cmdline META this time
    let (off, _) = meta_partition(&raw);
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        for copy in [0, b_at as u64] {
            f.seek(SeekFrom::Start(off + copy + 20)).unwrap();
            f.write_all(&[0xa5; 8]).unwrap();
        }
    }
    let plain: String = cmdline
        .split(' ')
        .filter(|a| !a.starts_with("talos.environment="))
        .collect::<Vec<_>>()
        .join(" ");
    let b = boot_to_ready(&m(&raw, DiskKind::Virtio, &plain));
    let meta = b
        .console
        .iter()
        .find(|l| l.contains("node-runtime: meta "))
        .unwrap();
    assert!(meta.contains("source=empty"), "{meta}");
    assert!(
        meta.contains("copy_a_error=") && meta.contains("copy_b_error="),
        "{meta}"
    );
    assert_eq!(field(&b.line, "meta"), Some("none"), "{}", b.line);
}
