//! Output kinds other than disk images, and whole profiles from stdin (`imager -`).
#![allow(clippy::unwrap_used)]

use e2e::*;

fn stdin_build(yaml: &str, out: &std::path::Path) -> String {
    let mut c = imager();
    c.arg("-").arg("--output").arg(out).arg("--json");
    let r = run(&mut c, Some(yaml.as_bytes()));
    assert!(
        r.status.success(),
        "imager - failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8(r.stdout).unwrap()
}

#[test]
fn cmdline_from_a_stdin_profile_carries_meta_as_installer_meta_base64() {
    let out = tempfile::tempdir().unwrap();
    let long = "v".repeat(300);
    let yaml = format!(
        "baseProfileName: metal\narch: amd64\ncustomization:\n  extraKernelArgs:\n    - console=ttyS0\n    - -pti\n  metaContents:\n    - key: 0xa\n      value: '{{\"hostnames\":[]}}'\n    - key: 12\n      value: {long}\noutput:\n  kind: cmdline\n  outFormat: raw\n"
    );
    let json = stdin_build(&yaml, out.path());
    assert!(json.contains("\"kind\":\"cmdline\""), "{json}");
    let text = std::fs::read_to_string(out.path().join("cmdline-metal-amd64")).unwrap();
    let enc = text
        .split(' ')
        .find_map(|a| a.strip_prefix("talos.environment=INSTALLER_META_BASE64="))
        .unwrap_or_else(|| panic!("no INSTALLER_META_BASE64 in {text}"));
    assert!(
        text.starts_with("talos.platform=metal console=ttyS0 slab_nomerge consoleblank=0 "),
        "{text}"
    );
    // longer than 256 bytes: gzip branch (docs/formats/meta.md), and it decodes back to both values
    let vals = adv::env::decode(enc).unwrap();
    assert_eq!(
        vals,
        vec![(0x0a, "{\"hostnames\":[]}".to_string()), (0x0c, long)]
    );
    assert_eq!(dir_entries(out.path()), vec!["cmdline-metal-amd64"]);
}

#[test]
fn kernel_and_initramfs_kinds_copy_their_inputs_under_talos_names() {
    let out = tempfile::tempdir().unwrap();
    for (kind, name, input) in [
        ("kernel", "kernel-amd64", "vmlinuz"),
        ("initramfs", "initramfs-metal-amd64.xz", "initramfs.xz"),
    ] {
        ok(imager()
            .args([
                "metal",
                "--arch",
                "amd64",
                "--output-kind",
                kind,
                "--output",
            ])
            .arg(out.path()));
        // metal's outFormat .zst applies to every kind, as in Talos
        let zst = out.path().join(format!("{name}.zst"));
        let raw = out.path().join(name);
        decompress(&zst, &raw);
        assert_eq!(
            sha256_file(&raw),
            sha256_file(&assets().join("amd64").join(input)),
            "{kind}"
        );
    }
}

#[test]
fn stdin_profile_builds_a_raw_image_and_dump_profile_shows_defaults() {
    let out = tempfile::tempdir().unwrap();
    let yaml = "arch: amd64\nplatform: metal\nsecureboot: false\noutput:\n  kind: image\n  imageOptions:\n    diskSize: 1306525696\n    bootloader: sd-boot\n  outFormat: raw\n";
    let json = stdin_build(yaml, out.path());
    assert!(json.contains("metal-amd64.raw"), "{json}");
    // --json reports the artifact's real digest
    let digest = sha256_file(&out.path().join("metal-amd64.raw"));
    assert!(json.contains(&format!("\"sha256\":\"{digest}\"")), "{json}");
    let size = std::fs::metadata(out.path().join("metal-amd64.raw"))
        .unwrap()
        .len();
    assert_eq!(size, 2_355_101_696);
    let dump = ok(imager().args(["metal", "--arch", "arm64", "--dump-profile"]));
    for want in [
        "arch: arm64",
        "platform: metal",
        "version: v1.14.0",
        "diskSize: 2355101696",
        "bootloader: sd-boot",
        "outFormat: .zst",
        "/arm64/vmlinuz",
    ] {
        assert!(dump.contains(want), "{want} missing from:\n{dump}");
    }
}
