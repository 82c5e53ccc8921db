//! Talos before 1.8 puts STATE (100 MiB) and EPHEMERAL (the rest of the disk) after META in
//! its disk images; from 1.8 on it does not (docs/formats/disk-layout.md). Checked with
//! sgdisk, an independent GPT reader.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: u64 = 1_306_525_696;

fn build(out: &Path, version: &str, bootloader: &str) -> PathBuf {
    let yaml = format!(
        "arch: amd64\nplatform: metal\nversion: {version}\noutput:\n  kind: image\n  imageOptions:\n    diskSize: {SIZE}\n    bootloader: {bootloader}\n  outFormat: raw\n"
    );
    let o = run(
        imager().arg("-").arg("--output").arg(out),
        Some(yaml.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("metal-amd64.raw")
}

/// `(number, first, last, name)` rows of `sgdisk -p`, and the last usable sector.
fn table(raw: &Path) -> (Vec<(u32, u64, u64, String)>, u64) {
    let out = ok(Command::new("sgdisk").arg("-p").arg(raw));
    let last_usable = out
        .lines()
        .find_map(|l| l.split("last usable sector is ").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rows = out
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f.last().unwrap().to_string(),
            )
        })
        .collect();
    (rows, last_usable)
}

fn all_zero(raw: &Path, first: u64, last: u64) -> bool {
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(first * 512)).unwrap();
    let mut left = (last + 1 - first) * 512;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|b| *b != 0) {
            return false;
        }
        left -= n as u64;
    }
    true
}

#[test]
fn images_before_1_8_carry_state_and_ephemeral() {
    let t = tempfile::tempdir().unwrap();
    for (bootloader, names) in [
        (
            "grub",
            &["EFI", "BIOS", "BOOT", "META", "STATE", "EPHEMERAL"][..],
        ),
        ("sd-boot", &["EFI", "META", "STATE", "EPHEMERAL"][..]),
    ] {
        let raw = build(&t.path().join(bootloader), "v1.7.6", bootloader);
        let v = ok(Command::new("sgdisk").arg("-v").arg(&raw));
        assert!(v.contains("No problems found"), "{bootloader}: {v}");
        let (rows, last_usable) = table(&raw);
        let got: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert_eq!(got, names, "{bootloader}");
        let n = rows.len();
        let (meta, state, eph) = (&rows[n - 3], &rows[n - 2], &rows[n - 1]);
        // STATE: 100 MiB right after META; EPHEMERAL: from the next MiB to the last usable
        assert_eq!(state.1, meta.2 + 1, "{bootloader}");
        assert_eq!(
            state.2 - state.1 + 1,
            100 * 2048,
            "{bootloader}: STATE is 100 MiB"
        );
        assert_eq!(eph.1, state.2 + 1, "{bootloader}");
        assert_eq!(eph.1 % 2048, 0);
        assert_eq!(eph.2, last_usable, "{bootloader}: EPHEMERAL takes the rest");
        // BOOT is 1000 MiB before 1.11
        if let Some(boot) = rows.iter().find(|r| r.3 == "BOOT") {
            assert_eq!(boot.2 - boot.1 + 1, 1000 * 2048);
        }
        // label-derived unique GUIDs, Linux data type, no filesystem (left empty)
        for (i, name) in [(n - 1, "STATE"), (n, "EPHEMERAL")] {
            let info = ok(Command::new("sgdisk")
                .args(["-i", &i.to_string()])
                .arg(&raw));
            let guid = gpt::guid_from_label(name).to_string().to_uppercase();
            assert!(
                info.contains(&format!("Partition unique GUID: {guid}")),
                "{info}"
            );
            assert!(
                info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
                "{info}"
            );
        }
        assert!(
            all_zero(&raw, state.1, eph.2),
            "{bootloader}: data partitions are empty"
        );
    }
}

#[test]
fn images_from_1_8_leave_them_to_the_node() {
    let t = tempfile::tempdir().unwrap();
    for version in ["v1.8.0", "v1.14.0"] {
        let raw = build(&t.path().join(version), version, "grub");
        let (rows, _) = table(&raw);
        let got: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert_eq!(got, ["EFI", "BIOS", "BOOT", "META"], "{version}");
    }
}

#[test]
fn a_disk_too_small_for_ephemeral_is_refused_naming_it() {
    let t = tempfile::tempdir().unwrap();
    // grub at 1.7: 1 + 100 + 1 + 1000 + 1 + 100 MiB = 1203 MiB before EPHEMERAL
    let yaml = "arch: amd64\nplatform: metal\nversion: v1.7.6\noutput:\n  kind: image\n  imageOptions:\n    diskSize: 1262485504\n    bootloader: grub\n  outFormat: raw\n";
    let out = t.path().join("o");
    let o = run(
        imager().arg("-").arg("--output").arg(&out),
        Some(yaml.as_bytes()),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: field output.imageOptions.diskSize: "),
        "{err}"
    );
    assert!(err.contains("\"EPHEMERAL\""), "{err}");
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "no partial artifact"
    );
}
