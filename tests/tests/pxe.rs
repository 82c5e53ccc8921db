//! The PXE set (kernel, initramfs, cmdline, iPXE script) boots by QEMU direct kernel boot
//! (`-kernel/-initrd/-append`) to the ready line, and node-runtime reads the `--meta` value
//! back from `talos.environment=INSTALLER_META_BASE64=…`: once through the plain branch of
//! docs/formats/meta.md and once through the gzip branch (values longer than 256 bytes).
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use e2e::*;
use qemu_harness::{Firmware, Machine, field};
use std::path::Path;

fn build_pxe(out: &Path, meta_arg: &str) -> String {
    ok(imager()
        .args([
            "metal",
            "--arch",
            "amd64",
            "--output-kind",
            "pxe",
            "--output",
        ])
        .arg(out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff"])
        .args(["--meta", meta_arg]));
    assert_eq!(
        dir_entries(out),
        vec![
            "cmdline-metal-amd64",
            "initramfs-amd64.xz",
            "kernel-amd64",
            "metal-amd64.ipxe"
        ]
    );
    let cmdline = std::fs::read_to_string(out.join("cmdline-metal-amd64")).unwrap();
    let script = std::fs::read_to_string(out.join("metal-amd64.ipxe")).unwrap();
    assert_eq!(
        script,
        format!(
            "#!ipxe\n\nimgfree\nkernel kernel-amd64 {cmdline}\ninitrd initramfs-amd64.xz\nboot\n"
        )
    );
    assert_eq!(
        sha256_file(&out.join("kernel-amd64")),
        sha256_file(&assets().join("amd64/vmlinuz"))
    );
    cmdline
}

fn encoded(cmdline: &str) -> Vec<u8> {
    let enc = cmdline
        .split(' ')
        .find_map(|a| a.strip_prefix("talos.environment=INSTALLER_META_BASE64="))
        .unwrap_or_else(|| panic!("no INSTALLER_META_BASE64 in {cmdline}"));
    base64::engine::general_purpose::STANDARD
        .decode(enc)
        .unwrap()
}

fn boot_pxe(out: &Path, cmdline: &str) -> (String, Vec<String>) {
    let b = boot_to_ready(&Machine {
        firmware: Firmware::Bios,
        direct: Some((
            out.join("kernel-amd64"),
            out.join("initramfs-amd64.xz"),
            cmdline.to_string(),
        )),
        ..Default::default()
    });
    assert!(b.powered_off, "the guest did not power off");
    (b.line, b.console)
}

fn check(meta_value: &[u8], gzip: bool, meta_arg: &str) {
    let out = tempfile::tempdir().unwrap();
    let cmdline = build_pxe(out.path(), meta_arg);
    let raw = encoded(&cmdline);
    assert_eq!(
        raw.starts_with(&[0x1f, 0x8b]),
        gzip,
        "gzip branch expected: {gzip}"
    );
    let (line, console) = boot_pxe(out.path(), &cmdline);
    let want = format!("0x0a:{}", sha256(meta_value));
    assert_eq!(field(&line, "meta"), Some(want.as_str()), "{line}");
    assert!(
        console
            .iter()
            .any(|l| l.contains("node-runtime: meta absent")),
        "a disk was found?"
    );
    let imp = console
        .iter()
        .find(|l| l.contains("node-runtime: meta-import"))
        .unwrap();
    assert!(imp.contains("from=cmdline keys=1 imported=1"), "{imp}");
}

#[test]
fn pxe_set_boots_with_meta_plain() {
    let value = br#"{"hostnames":[{"hostname":"pxe-node","layer":"platform"}]}"#;
    check(
        value,
        false,
        &format!("0xa={}", std::str::from_utf8(value).unwrap()),
    );
}

#[test]
fn pxe_set_boots_with_meta_gzip() {
    let path = root().join("hack/examples/network.yaml");
    let value = std::fs::read(&path).unwrap();
    assert!(value.len() > 256);
    check(&value, true, &format!("0xa=@{}", path.display()));
}

/// The iPXE script itself: SeaBIOS runs QEMU's iPXE ROM, which gets the script over
/// DHCP/TFTP from the output directory and fetches the kernel and initramfs it names.
#[test]
fn ipxe_script_network_boots_over_tftp() {
    let out = tempfile::tempdir().unwrap();
    let value = b"ipxe";
    build_pxe(out.path(), "0xa=ipxe");
    let m = Machine {
        firmware: Firmware::Bios,
        extra: vec![
            "-netdev".into(),
            format!(
                "user,id=n0,tftp={},bootfile=metal-amd64.ipxe",
                out.path().display()
            ),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
            "-boot".into(),
            "n".into(),
        ],
        ..Default::default()
    };
    let booted = boot_to_ready(&m);
    let line = booted.line;
    let want = format!("0x0a:{}", sha256(value));
    assert_eq!(field(&line, "meta"), Some(want.as_str()), "{line}");
    assert!(booted.powered_off, "the guest did not power off");
}
