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

/// A machine whose only disk is a FAT directory (QEMU's vvfat) holding `uki` as the
/// firmware's default boot file.
fn esp_machine(uki: &Path, esp: &Path, firmware: qemu_harness::Firmware) -> qemu_harness::Machine {
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::copy(uki, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    qemu_harness::Machine {
        firmware,
        extra: vec![
            "-drive".into(),
            format!(
                "file=fat:{},format=raw,if=virtio,readonly=on",
                esp.display()
            ),
        ],
        ..Default::default()
    }
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

    let m = esp_machine(&uki, &t.path().join("esp"), qemu_harness::Firmware::Uefi);
    let booted = boot_to_ready(&m);
    assert!(
        booted.line.contains("node-runtime: ready"),
        "{}",
        booted.line
    );
    assert!(
        booted.line.contains("secureboot=setup pcr11=none"),
        "plain OVMF has no platform key (setup mode), no TPM: {}",
        booted.line
    );
    let console = booted.console.join("\n");
    assert!(
        console.contains("node_runtime.test_poweroff"),
        "the kernel got the UKI's .cmdline:\n{console}"
    );
}

/// Keys for a SecureBoot UKI: OVMF's snakeoil key (decrypted with openssl) and certificate for
/// Authenticode, a fresh RSA key for PCR policies; returns (profile YAML, snakeoil cert).
fn secureboot_profile(dir: &Path, key: &Path, cert: &Path) -> String {
    let pcr = rsa_key(&dir.join("pcr.key"));
    format!(
        "baseProfileName: secureboot-metal-uki\narch: amd64\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0\n    - node_runtime.test_poweroff\ninput:\n  secureboot:\n    secureBootSigner:\n      keyPath: {}\n      certPath: {}\n    pcrSigner:\n      keyPath: {}\n",
        key.display(),
        cert.display(),
        pcr.display()
    )
}

/// `secureboot-metal-uki`: the UKI is Authenticode-signed (sbverify accepts it with the
/// signing certificate, refuses another), carries `.pcrpkey` and a `.pcrsig` whose policies
/// are over the predicted PCR 11, is reproducible, and boots to the ready line under OVMF with
/// SecureBoot enforced (snakeoil keys enrolled); the same UKI signed with another key is
/// refused by the firmware.
#[test]
fn secureboot_uki_signed_and_booted_under_secureboot() {
    let t = tempfile::tempdir().unwrap();
    let snakeoil = Path::new(SNAKEOIL_PEM);
    let key = snakeoil_key(t.path());
    let profile = secureboot_profile(t.path(), &key, snakeoil);
    let uki = build_stdin(&profile, &t.path().join("a"));
    let again = build_stdin(&profile, &t.path().join("b"));
    assert_eq!(
        sha256_file(&uki),
        sha256_file(&again),
        "two signed builds differ"
    );

    assert!(sbverify(&uki, snakeoil), "sbverify refused the UKI");
    let other_dir = t.path().join("other");
    let (other_key, other_cert) = other_key_and_cert(&other_dir);
    assert!(
        !sbverify(&uki, &other_cert),
        "sbverify accepted another certificate"
    );

    let i = ok(imager().arg("inspect").arg(&uki));
    assert!(i.contains("signed by O=SnakeOil"), "{i}");
    for s in [".pcrpkey", ".pcrsig", ".profile"] {
        assert!(i.contains(&format!("  {s} ")), "{s} missing:\n{i}");
    }
    // the .pcrsig policy (sha256 bank) is over the PCR 11 that inspect predicts
    let sig: serde_json::Value =
        serde_json::from_slice(&objcopy_section(&uki, ".pcrsig", t.path())).unwrap();
    let predicted = i
        .lines()
        .find(|l| l.contains("PCR 11 at enter-machined"))
        .and_then(|l| l.split("sha256=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .to_string();
    let value: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&predicted[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut policy_input = vec![0u8; 32];
    policy_input.extend(0x17fu32.to_be_bytes());
    policy_input.extend(1u32.to_be_bytes());
    policy_input.extend(0x000bu16.to_be_bytes());
    policy_input.extend([3, 0, 8, 0]);
    policy_input.extend(hex::decode(sha256(&value)).unwrap());
    assert_eq!(sig["sha256"][0]["pol"], sha256(&policy_input), "{sig}");
    assert_eq!(sig["sha256"][0]["pcrs"], serde_json::json!([11]));

    // SecureBoot firmware with the snakeoil keys enrolled boots it
    let boot = |uki: &Path, name: &str| {
        esp_machine(
            uki,
            &t.path().join(name),
            qemu_harness::Firmware::UefiSecureBootSnakeoil,
        )
    };
    // … and with a TPM (swtpm), PCR 11 ends where inspect predicts for enter-machined: the
    // stub measured the sections, node-runtime the three phases
    let tpm_dir = t.path().join("tpm");
    std::fs::create_dir_all(&tpm_dir).unwrap();
    let sock = tpm_dir.join("swtpm.sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", tpm_dir.display()))
        .args(["--ctrl"])
        .arg(format!("type=unixio,path={}", sock.display()))
        .args(["--flags", "startup-clear"])
        .spawn()
        .expect("swtpm (hack/deps.sh)");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut m = boot(&uki, "esp");
    m.extra.extend(
        [
            "-chardev",
            &format!("socket,id=chrtpm,path={}", sock.display()),
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ]
        .map(String::from),
    );
    let booted = boot_to_ready(&m);
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    assert!(
        booted.line.contains("node-runtime: ready"),
        "{}",
        booted.line
    );
    assert!(
        booted.line.contains("secureboot=enabled"),
        "{}",
        booted.line
    );
    let pcr11 = qemu_harness::field(&booted.line, "pcr11").unwrap_or_default();
    assert_eq!(
        pcr11, predicted,
        "PCR 11 at ready vs imager inspect's prediction:\n{}\n{i}",
        booted.line
    );

    // signed with another key: the firmware refuses to start it
    let profile = secureboot_profile(&other_dir, &other_key, &other_cert);
    let wrong = build_stdin(&profile, &t.path().join("c"));
    assert_refused(&boot(&wrong, "esp-wrong"));
}
