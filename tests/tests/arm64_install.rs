//! arm64 provisioning (docs/arm64.md, docs/formats/install.md "From the node"): the arm64 ISO
//! boots under `qemu-system-aarch64 -M virt` with AAVMF into maintenance mode, fetches its
//! machine configuration from `talos.config=URL`, pulls an arm64 installer image (its
//! entrypoint the `installer` binary cross-built for aarch64) from a real registry, installs
//! onto the empty virtio disk and reboots; the disk then boots by itself to `installed=true`
//! with the configuration's hostname. Over mutual TLS (the configuration's machine CA) the
//! installed node is then upgraded with `nodectl upgrade` to a second arm64 installer image:
//! systemd-boot under AAVMF boots the new UKI on trial (boot counting), which reaches ready
//! and is blessed (docs/formats/upgrade.md).
#![allow(clippy::unwrap_used)]

use e2e::node::{
    Installer, authed, ca_block, gen_config, out, publish_installer, wait, wait_installing,
};
use e2e::registry::{Registry, free_port};
use e2e::*;
use qemu_harness::{Arch, DiskKind, Firmware, Machine, field, user_nic};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

/// Serves `body` at any path on 127.0.0.1; the port.
fn serve(body: String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

#[test]
fn arm64_iso_installs_from_an_arm64_installer_image_and_the_disk_boots_and_upgrades() {
    let t = tempfile::tempdir().unwrap();
    // the installer binary of the image is an aarch64 executable
    let file = ok(Command::new("file").arg("-b").arg(bin_arm64("installer")));
    assert!(
        file.contains("ARM aarch64") && file.contains("statically linked"),
        "{file}"
    );
    let reg = Registry::start();
    // the installed systems stay up at most this long, then power off
    let up = "node_runtime.test_poweroff=900";
    let publish = |tag: &str, version: &str| {
        publish_installer(
            &reg,
            t.path(),
            &Installer {
                repo: "installer",
                tag,
                version,
                args: &[up],
                arch: "arm64",
                ..Default::default()
            },
        )
    };
    let image = publish("arm64", "v1.14.0");
    let v2 = publish("arm64-v2", "v1.14.1");
    let port = reg.addr().port();
    let lab = gen_config(t.path(), "lab");
    let config = format!(
        "version: v1alpha1\nmachine:\n  type: controlplane\n{}  install:\n    disk: /dev/vda\n    \
         image: {image}\n  network:\n    hostname: arm64-installed\n  registries:\n    mirrors:\n      \
         127.0.0.1:{port}:\n        endpoints: [http://10.0.2.2:{port}]\ncluster: {{}}\n",
        ca_block(&lab)
    );
    let http = serve(config);
    let iso_dir = t.path().join("iso");
    ok(imager()
        .args(["iso", "--arch", "arm64", "--output"])
        .arg(&iso_dir)
        .args(["--extra-kernel-arg", "console=ttyAMA0"])
        .args([
            "--extra-kernel-arg",
            &format!("talos.config=http://10.0.2.2:{http}/config"),
        ]));
    let iso = iso_dir.join("metal-arm64.iso");
    let disk = t.path().join("disk.raw");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(6 << 30).unwrap();
    drop(f);
    let mut run = Machine {
        arch: Arch::Arm64,
        firmware: Firmware::Uefi,
        disks: vec![
            (disk.clone(), DiskKind::VirtioWritable),
            (iso, DiskKind::Cdrom),
        ],
        extra: user_nic("n0", ""),
        memory_mib: 2048,
        ..Default::default()
    }
    .start()
    .unwrap();
    let done = wait_installing(&mut run, "node-runtime: install done", 900);
    eprintln!("installed after {:.1} s", run.elapsed().as_secs_f64());
    assert!(done.contains("disk=/dev/vda"), "{done}");
    let console = run.console().to_vec();
    let has = |needle: &str| {
        console
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}:\n{}", console.join("\n")))
            .clone()
    };
    assert!(has("node-runtime: init stage=initramfs kernel=").contains("arm64"));
    assert!(has("node-runtime: install pulled=").contains("installer:arm64"));
    assert!(has("installer: installed").contains("(sd-boot, UKI)"));
    assert!(
        run.finish(Duration::from_secs(120)),
        "no reboot after the install"
    );
    // the disk alone, under AAVMF, its API forwarded
    let api = free_port();
    let installed = || {
        let mut run = Machine {
            arch: Arch::Arm64,
            firmware: Firmware::Uefi,
            disks: vec![(disk.clone(), DiskKind::VirtioWritable)],
            extra: user_nic("n0", &format!(",hostfwd=tcp:127.0.0.1:{api}-:50000")),
            memory_mib: 2048,
            ..Default::default()
        }
        .start()
        .unwrap();
        let ready = wait(&mut run, "node-runtime: ready meta=", 300);
        eprintln!("ready after {:.1} s: {ready}", run.elapsed().as_secs_f64());
        wait(&mut run, "node-runtime: api listening", 60);
        (run, ready)
    };
    let (mut run, ready) = installed();
    assert_eq!(field(&ready, "installed"), Some("true"), "{ready}");
    assert_eq!(field(&ready, "disk"), Some("/dev/vda"), "{ready}");
    assert_eq!(field(&ready, "version"), Some("v1.14.0"), "{ready}");
    wait(&mut run, "config source=state hostname=arm64-installed", 10);
    let nodectl = |args: &[&str]| out(&authed(api, &lab, args));
    assert!(nodectl(&["version"]).contains("version: v1.14.0"));

    // the upgrade: a second UKI, on trial, then blessed once ready
    nodectl(&["upgrade", "--image", &v2, "--preserve"]);
    let done = wait_installing(&mut run, "node-runtime: upgrade done", 600);
    assert!(done.contains("previous=talos-v1.14.0.efi"), "{done}");
    assert!(
        run.console().iter().any(
            |l| l.contains("installer: upgraded to v1.14.1 (sd-boot, UKI)")
                && l.contains("Talos-v1.14.1+1.efi")
        ),
        "{}",
        run.console().join("\n")
    );
    assert!(
        run.finish(Duration::from_secs(120)),
        "no reboot after the upgrade"
    );
    let (mut run, ready) = installed();
    assert_eq!(field(&ready, "version"), Some("v1.14.1"), "{ready}");
    let blessed = wait(
        &mut run,
        "node-runtime: upgrade blessed version=v1.14.1",
        60,
    );
    assert!(
        blessed.contains("entry=Talos-v1.14.1.efi previous=talos-v1.14.0.efi"),
        "{blessed}"
    );
    assert!(nodectl(&["version"]).contains("version: v1.14.1"));
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("config source=state hostname=arm64-installed")),
        "{}",
        run.console().join("\n")
    );
    drop(run);
    // independent tools find the install-mode partitions
    let p = ok(Command::new("sgdisk").arg("-p").arg(&disk));
    for name in ["EFI", "META", "STATE", "EPHEMERAL"] {
        assert!(p.contains(&format!("  {name}\n")), "{name}:\n{p}");
    }
}
