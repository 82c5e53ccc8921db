//! Provisioning (docs/formats/install.md, "From the node"): an ISO boots into maintenance
//! mode, fetches its machine configuration from `talos.config=URL` (an HTTP server of the
//! test, which fails the first request), pulls the installer image named in it from a real
//! registry through the configuration's mirror, runs the image's own `installer` against the
//! empty disk, stores the configuration in STATE and reboots; the disk then boots by itself
//! to `installed=true` with the configuration's hostname applied.
#![allow(clippy::unwrap_used)]

use e2e::registry::Registry;
use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field, user_nic};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Serves `body` at any path on 127.0.0.1; the first request gets a 503. Returns the port and
/// the request counter.
fn serve(body: String) -> (u16, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let n = c.fetch_add(1, Ordering::SeqCst);
            let resp = if n == 0 {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (port, count)
}

fn publish_installer(reg: &Registry, dir: &Path) -> String {
    let base = dir.join("base");
    ok(Command::new(bin("base-assets"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["publish", "--arch", "amd64", "--assets"])
        .arg(assets())
        .arg("--installer")
        .arg(bin("installer"))
        .arg("--oci-layout")
        .arg(&base));
    let profile = format!(
        "baseProfileName: installer\narch: amd64\ninput:\n  baseInstaller:\n    ociPath: {}\n\
         customization:\n  extraKernelArgs:\n    - console=ttyS0\n    - node_runtime.test_poweroff\n",
        base.display()
    );
    let target = format!("{}/installer:v1", reg.host());
    let o = run(
        imager()
            .args(["-", "--insecure", "--push", &target, "--output"])
            .arg(dir.join("out")),
        Some(profile.as_bytes()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    target
}

#[test]
fn iso_maintenance_fetches_config_installs_and_reboots_into_the_disk() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    publish_installer(&reg, t.path());
    let port = reg.addr().port();
    let config = format!(
        "version: v1alpha1\nmachine:\n  type: controlplane\n  install:\n    disk: /dev/vda\n    \
         image: 10.0.2.2:{port}/installer:v1\n    extraKernelArgs: [ignored=1]\n  network:\n    \
         hostname: installed-node\n  registries:\n    mirrors:\n      10.0.2.2:{port}:\n        \
         endpoints: [http://10.0.2.2:{port}]\n  kubelet:\n    image: x\ncluster:\n  clusterName: c\n"
    );
    let (http, requests) = serve(config);
    let iso_dir = t.path().join("iso");
    ok(imager()
        .args(["iso", "--output"])
        .arg(&iso_dir)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args([
            "--extra-kernel-arg",
            &format!("talos.config=http://10.0.2.2:{http}/config.yaml?u=${{uuid}}"),
        ]));
    let iso = iso_dir.join("metal-amd64.iso");
    let disk = t.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let m = Machine {
        firmware: Firmware::Uefi,
        disks: vec![
            (disk.clone(), DiskKind::VirtioWritable),
            (iso.clone(), DiskKind::Cdrom),
        ],
        extra: user_nic("n0", ""),
        memory_mib: 2048,
        ..Default::default()
    };
    let mut run = m.start().unwrap();
    let mut failures = vec!["node-runtime: install error"];
    failures.extend(qemu_harness::DEFAULT_FAILURES);
    let done = run
        .wait_for(
            "node-runtime: install done",
            &failures,
            Duration::from_secs(600),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let console = run.console().to_vec();
    let line = |needle: &str| {
        console
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}:\n{}", console.join("\n")))
            .clone()
    };
    assert!(line("node-runtime: ready meta=").contains("installed=false"));
    assert!(line("node-runtime: maintenance waiting").contains("machine configuration"));
    // the first fetch failed and was retried
    assert!(line("node-runtime: config-fetch").contains("attempt=1 error="));
    assert!(line("attempt=2 bytes=").contains("config-fetch"));
    assert!(requests.load(Ordering::SeqCst) >= 2);
    assert!(line("node-runtime: config source=").contains("install-disk=/dev/vda"));
    for na in ["cluster", "machine.kubelet", "machine.type"] {
        assert!(
            console
                .iter()
                .any(|l| l.ends_with(&format!("config not-applied={na}"))),
            "{na} not listed"
        );
    }
    assert!(line("node-runtime: install pulled=").contains("installer:v1"));
    assert!(line("install extra-kernel-args=ignored").contains("reason=uki"));
    assert!(line("installer: installed").contains("(sd-boot, UKI)"));
    assert!(done.contains("disk=/dev/vda"));
    // the reboot ends QEMU (-no-reboot)
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the install"
    );
    // the disk boots by itself, with the stored configuration
    let b = boot_to_ready(&Machine {
        firmware: Firmware::Uefi,
        disks: vec![(disk.clone(), DiskKind::VirtioWritable)],
        extra: user_nic("n0", ""),
        ..Default::default()
    });
    assert_eq!(field(&b.line, "installed"), Some("true"), "{}", b.line);
    assert_eq!(field(&b.line, "disk"), Some("/dev/vda"), "{}", b.line);
    let state = b
        .console
        .iter()
        .find(|l| l.contains("node-runtime: config source=state"))
        .unwrap_or_else(|| panic!("{}", b.console.join("\n")));
    assert!(state.contains("hostname=installed-node"), "{state}");
    assert!(
        b.console
            .iter()
            .any(|l| l.contains("network configuration-layer source=machine-config hostnames=1")),
        "{}",
        b.console.join("\n")
    );
    assert!(b.powered_off);
    // the ISO again (SeaBIOS told to boot the CD), with the disk installed: it halts
    // instead of installing twice
    let mut extra = user_nic("n0", "");
    extra.extend(["-boot".to_string(), "order=d".to_string()]);
    let mut run = Machine {
        firmware: Firmware::Bios,
        disks: vec![(disk, DiskKind::Virtio), (iso, DiskKind::Cdrom)],
        extra,
        ..Default::default()
    }
    .start()
    .unwrap();
    let halt = run
        .wait_for(
            "node-runtime: halt reason=installed",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(halt.contains("disk=/dev/vda"), "{halt}");
    drop(run);
}
