//! Goldens: `--dump-profile` of every built-in profile × {amd64, arm64} equals the files in
//! tests/golden/profiles (derived independently by tests/golden/gen_profiles.py), and the
//! kernel cmdline of every platform equals docs/formats/cmdline.md.
#![allow(clippy::unwrap_used)]

use e2e::*;

#[test]
fn dump_profile_matches_the_goldens() {
    let names = builtin_profiles();
    assert_eq!(names.len(), 32, "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        for arch in ["amd64", "arm64"] {
            let golden = root().join(format!("tests/golden/profiles/{name}-{arch}.yaml"));
            let want = std::fs::read_to_string(&golden).unwrap();
            let got = ok(imager().args([
                name.as_str(),
                "--arch",
                arch,
                "--install-dir",
                "/usr/install",
                "--dump-profile",
            ]));
            if got != want {
                failures.push(format!("{name} {arch}:\n--- golden\n{want}--- dump\n{got}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const D114: &str = "slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never";

fn cmdline(args: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let mut c = imager();
    c.args(args)
        .args(["--output-kind", "cmdline", "--output"])
        .arg(out.path());
    ok(&mut c);
    let name = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = name.to_string_lossy().to_string();
    if file.ends_with(".tar.gz") {
        // Talos tars every output of a .tar.gz profile as `disk.raw` (docs/formats/outputs.md),
        // even a cmdline
        ok(std::process::Command::new("tar").args(["-xzOf", &file, "disk.raw"]))
    } else if [".zst", ".gz", ".xz"].iter().any(|s| file.ends_with(s)) {
        let raw = out.path().join("cmdline");
        decompress(&name, &raw);
        std::fs::read_to_string(raw).unwrap()
    } else {
        std::fs::read_to_string(name).unwrap()
    }
}

#[test]
fn cmdline_per_platform_matches_spec_section_10() {
    let serial = "console=tty1 console=ttyS0 net.ifnames=0";
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["metal", "--arch", "amd64"],
            format!("talos.platform=metal console=tty0 {D114}"),
        ),
        (
            vec!["metal", "--arch", "arm64"],
            format!("talos.platform=metal console=ttyAMA0 console=tty0 {D114}"),
        ),
        (
            vec!["aws", "--arch", "amd64"],
            format!("talos.platform=aws {serial} nvme_core.io_timeout=4294967295 {D114}"),
        ),
        (
            vec!["azure", "--arch", "amd64"],
            format!(
                "talos.platform=azure console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1 {D114}"
            ),
        ),
        (
            vec!["gcp", "--arch", "amd64"],
            format!(
                "talos.platform=gcp console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1 {D114}"
            ),
        ),
        (
            vec!["akamai", "--arch", "amd64"],
            format!(
                "talos.platform=akamai console=ttyS0 console=tty0 console=tty1 net.ifnames=0 {D114}"
            ),
        ),
        (
            vec!["digital-ocean", "--arch", "amd64"],
            format!(
                "talos.platform=digital-ocean console=ttyS0 console=tty0 console=tty1 net.ifnames=0 {D114}"
            ),
        ),
        (
            vec!["alibabacloud", "--arch", "amd64"],
            format!("talos.platform=alibabacloud {serial} {D114}"),
        ),
        (
            vec!["cloudstack", "--arch", "amd64"],
            format!("talos.platform=cloudstack {serial} {D114}"),
        ),
        (
            vec!["exoscale", "--arch", "amd64"],
            format!("talos.platform=exoscale {serial} {D114}"),
        ),
        (
            vec!["hcloud", "--arch", "amd64"],
            format!("talos.platform=hcloud {serial} {D114}"),
        ),
        (
            vec!["nocloud", "--arch", "amd64"],
            format!("talos.platform=nocloud {serial} {D114}"),
        ),
        (
            vec!["opennebula", "--arch", "amd64"],
            format!("talos.platform=opennebula {serial} {D114}"),
        ),
        (
            vec!["openstack", "--arch", "amd64"],
            format!("talos.platform=openstack {serial} {D114}"),
        ),
        (
            vec!["oracle", "--arch", "amd64"],
            format!("talos.platform=oracle {serial} talos.dashboard.disabled=1 {D114}"),
        ),
        (
            vec!["scaleway", "--arch", "amd64"],
            format!("talos.platform=scaleway {serial} talos.dashboard.disabled=1 {D114}"),
        ),
        (
            vec!["upcloud", "--arch", "amd64"],
            format!("talos.platform=upcloud net.ifnames=0 {D114}"),
        ),
        (
            vec!["vultr", "--arch", "amd64"],
            format!("talos.platform=vultr net.ifnames=0 {D114}"),
        ),
        (
            vec!["vmware", "--arch", "amd64"],
            format!(
                "talos.platform=vmware talos.config=guestinfo console=tty0 console=ttyS0 earlyprintk=ttyS0,115200 net.ifnames=0 {D114}"
            ),
        ),
        (
            vec!["vmware", "--arch", "arm64"],
            format!(
                "talos.platform=vmware talos.config=guestinfo console=tty0 console=ttyAMA0 net.ifnames=0 {D114}"
            ),
        ),
        (
            vec!["metal", "--arch", "amd64", "--platform", "equinixMetal"],
            format!("talos.platform=equinixMetal console=ttyS1,115200n8 {D114}"),
        ),
        (
            vec!["metal", "--arch", "arm64", "--platform", "equinixMetal"],
            format!("talos.platform=equinixMetal console=ttyAMA0,115200 {D114}"),
        ),
        (
            vec!["metal", "--arch", "amd64", "--platform", "container"],
            format!("talos.platform=container {D114}"),
        ),
    ];
    let mut failures = Vec::new();
    for (args, want) in &cases {
        let got = cmdline(args);
        if &got != want {
            failures.push(format!("{args:?}\n  want {want}\n  got  {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn extra_kernel_args_replace_console_and_delete_defaults() {
    let got = cmdline(&[
        "metal",
        "--arch",
        "amd64",
        "--extra-kernel-arg",
        "console=ttyS0,115200",
        "--extra-kernel-arg",
        "-selinux",
        "--extra-kernel-arg",
        "-pti=on",
        "--extra-kernel-arg",
        "talos.platform=nocloud",
        "--extra-kernel-arg",
        "quiet",
    ]);
    assert_eq!(
        got,
        "talos.platform=nocloud console=ttyS0,115200 slab_nomerge consoleblank=0 printk.devkmsg=on module.sig_enforce=1 proc_mem.force_override=never quiet"
    );
}
