//! Upgrades of an installed node (docs/formats/upgrade.md), on both boot paths: GRUB under
//! SeaBIOS (A/B slots, GRUB's one-shot `next_entry`) and systemd-boot under OVMF (a UKI
//! beside the booted one, boot counting). Each test installs v1.14.0 from the ISO through
//! the maintenance API, then drives the installed node with `nodectl` over mutual TLS:
//! upgrade to v1.14.1 (staged on GRUB, after a power cut in the middle of the first try on
//! systemd-boot), with EPHEMERAL and META kept; then to a v1.14.2 whose node-runtime fails
//! before ready, after which the machine comes back on v1.14.1 by itself and says so. The
//! test only restarts QEMU when the guest reboots (`-no-reboot`) or when it kills it.
#![allow(clippy::unwrap_used)]

use e2e::fixture::service_extension;
use e2e::node::{
    Installer, apply_config, authed, ca_block, gen_config, in_maintenance, out, publish_installer,
    wait,
};
use e2e::registry::{Registry, free_port};
use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field, user_nic};
use std::time::Duration;

/// Every installed system stays up this long at most, then powers off.
const UP: &str = "node_runtime.test_poweroff=900";

/// The `boots=N` of the EPHEMERAL volume line of the last boot.
fn boots(run: &qemu_harness::Run) -> u64 {
    run.console()
        .iter()
        .rev()
        .find(|l| l.contains("volume name=EPHEMERAL"))
        .and_then(|l| field(l, "boots"))
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no boots=:\n{}", run.console().join("\n")))
}

fn ready(run: &qemu_harness::Run) -> String {
    run.console()
        .iter()
        .rev()
        .find(|l| l.contains("node-runtime: ready meta="))
        .cloned()
        .unwrap_or_else(|| panic!("no ready line:\n{}", run.console().join("\n")))
}

/// A system extension whose service counts its runs in a file under `/var` (EPHEMERAL):
/// `attempt=N` in its log.
fn counter_extension(dir: &std::path::Path) -> std::path::PathBuf {
    service_extension(
        dir,
        "counter",
        "name: counter\ncontainer:\n  entrypoint: ./svc\n  args: [fail-until, \"1\", /data/count]\n  \
         mounts:\n    - source: /var/lib/counter\n      destination: /data\n      type: bind\n      \
         options: [rbind, rw]\nrestart: untilSuccess\n",
    )
}

/// How many runs the service has counted in `/var/lib/counter/count` (`attempt=<n>` in its
/// log, read with `nodectl logs`): one per boot that reached the services since EPHEMERAL was
/// formatted, unless the power was cut before the count reached the disk.
fn counted(run: &mut qemu_harness::Run, api: u16, lab: &std::path::Path) -> u64 {
    wait(
        run,
        "node-runtime: service id=ext-counter state=Finished",
        120,
    );
    let log = out(&authed(api, lab, &["logs", "ext-counter"]));
    let s = out(&authed(api, lab, &["services"]));
    assert!(s.contains("ext-counter Finished"), "{s}");
    log.lines()
        .filter_map(|l| l.strip_prefix("attempt="))
        .next_back()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt= in the log:\n{log}"))
}

fn chain(firmware: Firmware, grub: bool) {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let port = reg.addr().port();
    let ext = counter_extension(t.path());
    let image = |tag: &str, version: &str, args: &[&str]| {
        publish_installer(
            &reg,
            t.path(),
            &Installer {
                repo: "installer",
                tag,
                version,
                args,
                extensions: &[&ext],
                ..Default::default()
            },
        );
        format!("10.0.2.2:{port}/installer:{tag}")
    };
    // v1 lets the installer's test hook through; v3 is broken
    let v1 = image("v1", "v1.14.0", &[UP, "node_runtime.test_install_pause"]);
    let v2 = image("v2", "v1.14.1", &[UP]);
    let v3 = image(
        "v3",
        "v1.14.2",
        &[UP, "node_runtime.test_fail_before_ready"],
    );
    let lab = gen_config(t.path(), "lab");
    let cfg = t.path().join("node.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: v1alpha1\nmachine:\n  type: controlplane\n{}  install:\n    disk: /dev/vda\n    \
             image: {v1}\n  registries:\n    mirrors:\n      10.0.2.2:{port}:\n        \
             endpoints: [http://10.0.2.2:{port}]\n",
            ca_block(&lab)
        ),
    )
    .unwrap();
    let iso_dir = t.path().join("iso");
    ok(imager()
        .args(["iso", "--output"])
        .arg(&iso_dir)
        .args(["--extra-kernel-arg", "console=ttyS0"]));
    let disk = t.path().join("disk.raw");
    blank_disk(&disk, 6 << 30);
    let api = free_port();
    let machine = |with_iso: bool| {
        let mut disks = vec![(disk.clone(), DiskKind::VirtioWritable)];
        if with_iso {
            disks.push((iso_dir.join("metal-amd64.iso"), DiskKind::Cdrom));
        }
        Machine {
            firmware,
            disks,
            extra: user_nic("n0", &format!(",hostfwd=tcp:127.0.0.1:{api}-:50000")),
            memory_mib: 2048,
            ..Default::default()
        }
        .start()
        .unwrap()
    };
    let nodectl = |args: &[&str]| authed(api, &lab, args);
    let installed = |run: &mut qemu_harness::Run| {
        wait(run, "node-runtime: api listening", 300);
        ready(run)
    };

    // v1 from the ISO
    let mut run = machine(true);
    in_maintenance(&mut run);
    out(&apply_config(api, &cfg));
    wait(&mut run, "node-runtime: install done", 600);
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the install"
    );
    let mut run = machine(false);
    let r = installed(&mut run);
    assert!(
        r.contains("installed=true version=v1.14.0 disk=/dev/vda"),
        "{r}"
    );
    let first_boots = boots(&run);
    assert_eq!(counted(&mut run, api, &lab), 1);
    out(&nodectl(&["meta", "write", "0x0c", "kept by upgrades"]));
    // the calls of an installed node
    assert!(out(&nodectl(&["dmesg"])).contains("Linux version"));
    assert!(out(&nodectl(&["services"])).starts_with("SERVICE STATE PID RESTARTS"));
    let o = nodectl(&["logs", "ext-nothing"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no service ext-nothing"));

    let before_v2;
    if grub {
        // staged: nothing happens until the next reboot
        let s = out(&nodectl(&[
            "upgrade",
            "--image",
            &v2,
            "--preserve",
            "--stage",
        ]));
        assert!(s.contains("upgrade staged"), "{s}");
        wait(&mut run, "node-runtime: upgrade staged image=", 30);
        assert!(out(&nodectl(&["version"])).contains("version: v1.14.0"));
        let m = out(&nodectl(&["get", "meta"]));
        assert!(m.contains(&format!("0x07  {v2}")), "{m}");
        assert!(m.contains("0x08  {\"preserve\":true}"), "{m}");
        assert!(
            !run.console()
                .iter()
                .any(|l| l.contains("node-runtime: upgrade image=")),
            "{}",
            run.console().join("\n")
        );
        out(&nodectl(&["reboot"]));
        assert!(run.finish(Duration::from_secs(60)), "no reboot");
        // the next boot is still v1.14.0, which applies the staged upgrade
        let mut run2 = machine(false);
        let r = installed(&mut run2);
        assert!(r.contains("version=v1.14.0"), "{r}");
        wait(&mut run2, "node-runtime: upgrade staged-apply", 120);
        // the counter ran on this boot too (the reboots synced both counts)
        wait(
            &mut run2,
            "node-runtime: service id=ext-counter state=Finished",
            120,
        );
        before_v2 = 2;
        wait(&mut run2, "node-runtime: upgrade done previous=A", 600);
        assert!(
            run2.finish(Duration::from_secs(60)),
            "no reboot after the upgrade"
        );
    } else {
        // power cut while the new UKI is written: the node still boots v1.14.0
        out(&nodectl(&[
            "upgrade",
            "--image",
            &v2,
            "--preserve",
            "--test-pause",
        ]));
        wait(&mut run, "installer: test pause", 600);
        drop(run);
        let mut run2 = machine(false);
        let r = installed(&mut run2);
        // the upgrade that did not take is reported as a rollback to the booted version
        assert!(
            r.ends_with(
                "installed=true version=v1.14.0 disk=/dev/vda rollback from=unknown to=v1.14.0"
            ),
            "{r}"
        );
        wait(
            &mut run2,
            "node-runtime: upgrade rolled-back from=unknown to=v1.14.0",
            60,
        );
        // the first boot's count may not have reached the disk before the power went
        before_v2 = counted(&mut run2, api, &lab);
        assert!((1..=2).contains(&before_v2), "{before_v2}");
        out(&nodectl(&["upgrade", "--image", &v2, "--preserve"]));
        let done = wait(&mut run2, "node-runtime: upgrade done", 600);
        assert!(done.contains("previous=talos-v1.14.0.efi"), "{done}");
        assert!(
            run2.console().iter().any(|l| l
                .contains("installer: upgraded to v1.14.1 (sd-boot, UKI)")
                && l.contains("Talos-v1.14.1+1.efi")),
            "{}",
            run2.console().join("\n")
        );
        assert!(
            run2.finish(Duration::from_secs(60)),
            "no reboot after the upgrade"
        );
    }

    // v1.14.1, on trial, reaches ready and is blessed; /var and META were kept
    let mut run = machine(false);
    let r = installed(&mut run);
    assert!(r.contains("installed=true version=v1.14.1"), "{r}");
    let blessed = wait(
        &mut run,
        "node-runtime: upgrade blessed version=v1.14.1",
        60,
    );
    assert!(
        blessed.contains(if grub {
            "default=B previous=A"
        } else {
            "entry=Talos-v1.14.1.efi"
        }),
        "{blessed}"
    );
    let kept_boots = boots(&run);
    assert!(kept_boots > first_boots, "{kept_boots} after {first_boots}");
    // one more run than on the boot before the upgrade
    let on_v2 = counted(&mut run, api, &lab);
    assert_eq!(on_v2, before_v2 + 1);
    let m = out(&nodectl(&["get", "meta"]));
    assert!(
        m.contains("0x0c  kept by upgrades") && !m.contains("0x06"),
        "{m}"
    );
    assert!(out(&nodectl(&["version"])).contains("version: v1.14.1"));

    // the broken v1.14.2: on GRUB without --preserve (EPHEMERAL formatted again)
    let mut args = vec!["upgrade", "--image", v3.as_str()];
    if !grub {
        args.push("--preserve");
    }
    out(&nodectl(&args));
    wait(&mut run, "node-runtime: upgrade done", 600);
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the upgrade"
    );
    let mut run = machine(false);
    run.wait_for(
        "node-runtime: upgrade revert to=",
        &["Kernel panic"],
        Duration::from_secs(300),
        std::env::var_os("E2E_ECHO").is_some(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("node-runtime: error:") && l.contains("test_fail_before_ready")),
        "{}",
        run.console().join("\n")
    );
    // the failed boot reboots by itself
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the failure"
    );

    // back on v1.14.1, reported on the ready line
    let mut run = machine(false);
    let r = installed(&mut run);
    assert!(
        r.contains("installed=true version=v1.14.1")
            && r.ends_with("rollback from=v1.14.2 to=v1.14.1"),
        "{r}"
    );
    wait(
        &mut run,
        "node-runtime: upgrade rolled-back from=v1.14.2 to=v1.14.1",
        60,
    );
    let after = boots(&run);
    if grub {
        // formatted by the v1.14.2 upgrade: its failed boot was the first
        assert_eq!(after, 2);
    } else {
        // the failed boot mounted EPHEMERAL too
        assert_eq!(after, kept_boots + 2);
    }
    let m = out(&nodectl(&["get", "meta"]));
    assert!(
        m.contains("0x0c  kept by upgrades") && !m.contains("0x06"),
        "{m}"
    );
}

#[test]
fn grub_upgrade_keeps_data_and_rolls_back_a_broken_version() {
    chain(Firmware::Bios, true);
}

#[test]
fn sd_boot_upgrade_survives_a_power_cut_and_rolls_back_a_broken_version() {
    chain(Firmware::Uefi, false);
}
