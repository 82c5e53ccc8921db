//! UKIs (`--output-kind uki`, docs/formats/uki-secureboot.md): the sections Talos lays out,
//! checked with binutils' PE reader (objdump, objcopy) as an independent validator;
//! reproducible; `imager inspect` describes them; a stub with COFF symbols is refused; and the
//! UKI boots to the ready line under OVMF as the firmware's default boot file.
#![allow(clippy::unwrap_used)]

use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn build_uki(out: &Path, extra: &[&str]) -> PathBuf {
    ok(imager()
        .args(["metal-uki", "--output"])
        .arg(out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(extra));
    let f = out.join("metal-amd64-uki.efi");
    assert!(f.is_file(), "no UKI in {}", out.display());
    f
}

/// One section's contents, extracted by objcopy.
fn objcopy_section(uki: &Path, name: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("section{name}"));
    ok(Command::new("objcopy")
        .args(["-O", "binary", "--only-section", name])
        .arg(uki)
        .arg(&out));
    std::fs::read(&out).unwrap()
}

#[test]
fn uki_sections_reproducible_inspected_and_booted() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let uki = build_uki(&a, &["--extra-kernel-arg", "node_runtime.test_poweroff"]);
    let again = build_uki(&b, &["--extra-kernel-arg", "node_runtime.test_poweroff"]);
    assert_eq!(sha256_file(&uki), sha256_file(&again), "two builds differ");

    // binutils reads our PE: the stub's sections, then ours in Talos's order
    let h = ok(Command::new("objdump").arg("-h").arg(&uki));
    assert!(h.contains("file format pei-x86-64"), "{h}");
    let names: Vec<&str> = h
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.next()?.parse::<u32>().ok()?;
            w.next()
        })
        .collect();
    let ours: Vec<&str> = names
        .iter()
        .copied()
        .skip_while(|n| *n != ".osrel")
        .collect();
    assert_eq!(
        ours,
        [
            ".osrel", ".cmdline", ".uname", ".splash", ".linux", ".initrd", ".profile"
        ],
        "{h}"
    );
    assert!(names.contains(&".sbat") && names.contains(&".text"), "{h}");

    // contents, extracted by objcopy
    let cmdline = String::from_utf8(objcopy_section(&uki, ".cmdline", t.path())).unwrap();
    let c = t.path().join("cmdline");
    ok(imager()
        .args(["metal-uki", "--output-kind", "cmdline", "--output"])
        .arg(&c)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"]));
    let expected = std::fs::read_to_string(c.join("cmdline-metal-amd64")).unwrap();
    assert_eq!(cmdline.trim_end(), expected.trim_end());
    let osrel = String::from_utf8(objcopy_section(&uki, ".osrel", t.path())).unwrap();
    assert!(
        osrel.starts_with("NAME=\"Talos\"\nID=talos\nVERSION_ID=v1."),
        "{osrel}"
    );
    assert!(
        osrel.ends_with("VENDOR_URL=\"https://www.siderolabs.com/\"\n"),
        "{osrel}"
    );
    let linux = objcopy_section(&uki, ".linux", t.path());
    assert_eq!(sha256(&linux), sha256_file(&assets().join("amd64/vmlinuz")));
    let initrd = objcopy_section(&uki, ".initrd", t.path());
    assert_eq!(
        sha256(&initrd),
        sha256_file(&assets().join("amd64/initramfs.xz"))
    );
    let uname = String::from_utf8(objcopy_section(&uki, ".uname", t.path())).unwrap();
    assert!(
        kernel_root().join(&uname).is_dir() || uname.chars().next().unwrap().is_ascii_digit(),
        ".uname {uname:?}"
    );
    assert_eq!(objcopy_section(&uki, ".profile", t.path()), b"ID=main");
    let splash = objcopy_section(&uki, ".splash", t.path());
    assert_eq!(&splash[..2], b"BM");

    // imager inspect
    let i = ok(imager().arg("inspect").arg(&uki));
    assert!(i.contains("PE32+ x86-64"), "{i}");
    assert!(i.contains("unsigned"), "{i}");
    assert!(i.contains(&format!("kernel release {uname}")), "{i}");
    assert!(
        i.contains(&format!("profile ID=main: cmdline {}", expected.trim_end())),
        "{i}"
    );
    assert!(
        i.contains(&format!(
            ".linux     {:>10}  {}",
            linux.len(),
            sha256(&linux)
        )),
        "{i}"
    );

    // a stub with a COFF symbol table (Debian's, unstripped) is refused
    let debian_stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    if debian_stub.is_file() {
        let profile = format!(
            "baseProfileName: metal-uki\narch: amd64\ninput:\n  sdStub:\n    path: {}\n",
            debian_stub.display()
        );
        let o = run(
            imager().args(["-", "--output"]).arg(t.path().join("c")),
            Some(profile.as_bytes()),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("COFF symbol table"), "{err}");
        assert!(!t.path().join("c/metal-amd64-uki.efi").exists());
    }

    // the UKI as the firmware's default boot file on a FAT disk (QEMU's vvfat)
    let esp = t.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(&uki, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let m = qemu_harness::Machine {
        extra: vec![
            "-drive".into(),
            format!(
                "file=fat:{},format=raw,if=virtio,readonly=on",
                esp.display()
            ),
        ],
        ..Default::default()
    };
    let booted = boot_to_ready(&m);
    assert!(
        booted.line.contains("node-runtime: ready"),
        "{}",
        booted.line
    );
    let console = booted.console.join("\n");
    assert!(
        console.contains("node_runtime.test_poweroff"),
        "the kernel got the UKI's .cmdline:\n{console}"
    );
}
