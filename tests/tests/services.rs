//! Extension services end to end (seed "Extension Services"): a tarball system extension
//! carries the static `test-service` binary as the root of several containers under
//! `/usr/local/lib/containers/<name>/` and their configurations in
//! `/usr/local/etc/containers/*.yaml`. One boot (PXE set, direct kernel boot), kept up 25 s
//! after ready (`node_runtime.test_poweroff=25`), with a virtio NIC on QEMU user networking
//! whose address comes from DHCP after the services have started. The console shows that
//!
//! - a service depending on `network: [addresses]` waits, and runs only after DHCP bound an
//!   address and the network set the `network.addresses` key;
//! - `untilSuccess` (`fail-until 3` with its counter on a writable bind mount) runs three
//!   times, then finishes and is not restarted;
//! - `never` with exit 1 fails once and is not restarted;
//! - `always` is restarted with growing gaps (1 s, 2 s, 4 s) and its output goes to the log
//!   file, not the console;
//! - a missing entrypoint fails with a reason, and invalid files are reported, while the
//!   others run;
//! - the service process is PID 1 of its own PID namespace with a fresh /proc, a read-only
//!   root (writable with `writeableRootfs`) and the configured environment, and a `service:` dependency waits for the other
//!   service to run;
//! - `time` and `configuration` dependencies keep a service waiting.
#![allow(clippy::unwrap_used)]

use e2e::fixture::{Tar, manifest};
use e2e::*;
use qemu_harness::{DEFAULT_FAILURES, Firmware, Machine};
use std::time::Duration;

const SERVICES: &[(&str, &str)] = &[
    (
        "net-hello",
        "name: net-hello\ncontainer:\n  entrypoint: ./svc\n  args: [hello]\ndepends:\n  - network: [addresses]\nrestart: never\nlogToConsole: true\n",
    ),
    (
        "retry",
        "name: retry\ncontainer:\n  entrypoint: ./svc\n  args: [fail-until, \"3\", /state/count]\n  mounts:\n    - source: /system/state/retry\n      destination: /state\n      type: bind\n      options: [rbind, rw]\nrestart: untilSuccess\nlogToConsole: true\n",
    ),
    (
        "once-fails",
        "name: once-fails\ncontainer:\n  entrypoint: ./svc\n  args: [exit, \"1\"]\nrestart: never\n",
    ),
    (
        "flappy",
        "name: flappy\ncontainer:\n  entrypoint: ./svc\n  args: [sleep-exit, \"1\", \"0\"]\nrestart: always\nlogToConsole: false\n",
    ),
    (
        "no-entry",
        "name: no-entry\ncontainer:\n  entrypoint: ./missing\nrestart: never\n",
    ),
    (
        "pid1",
        "name: pid1\ncontainer:\n  entrypoint: ./svc\n  args: [check-pid1]\n  environment: [GREETING=hi]\nrestart: never\nlogToConsole: true\n",
    ),
    (
        "pid1-rw",
        "name: pid1-rw\ncontainer:\n  entrypoint: /svc\n  args: [check-pid1]\n  security:\n    writeableRootfs: true\ndepends:\n  - service: ext-pid1\nrestart: never\nlogToConsole: true\n",
    ),
    (
        "waits",
        "name: waits\ncontainer:\n  entrypoint: ./svc\n  args: [hello]\ndepends:\n  - time: true\n  - configuration: true\nrestart: never\nlogToConsole: true\n",
    ),
];

const INVALID: &[(&str, &str)] = &[
    (
        "zz-bad.yaml",
        "name: bad\ncontainer:\n  entrypoint: ./svc\nrestart: never\nbogus: 1\n",
    ),
    (
        "zz-restart.yaml",
        "name: bad2\ncontainer:\n  entrypoint: ./svc\nrestart: sometimes\n",
    ),
];

fn extension(dir: &std::path::Path) -> std::path::PathBuf {
    let svc = std::fs::read(bin("test-service")).unwrap();
    let mut t = Tar::new()
        .file(
            "manifest.yaml",
            0o644,
            manifest("services", "0.1.0", ">= v1.9.0").as_bytes(),
        )
        .dir("rootfs", 0o755)
        .dir("rootfs/usr", 0o755)
        .dir("rootfs/usr/local", 0o755)
        .dir("rootfs/usr/local/etc", 0o755)
        .dir("rootfs/usr/local/etc/containers", 0o755)
        .dir("rootfs/usr/local/lib", 0o755)
        .dir("rootfs/usr/local/lib/containers", 0o755);
    for (name, yaml) in SERVICES {
        t = t
            .file(
                &format!("rootfs/usr/local/etc/containers/{name}.yaml"),
                0o644,
                yaml.as_bytes(),
            )
            .dir(&format!("rootfs/usr/local/lib/containers/{name}"), 0o755)
            .file(
                &format!("rootfs/usr/local/lib/containers/{name}/svc"),
                0o755,
                &svc,
            );
    }
    for (file, yaml) in INVALID {
        t = t.file(
            &format!("rootfs/usr/local/etc/containers/{file}"),
            0o644,
            yaml.as_bytes(),
        );
    }
    let p = dir.join("services.tar");
    std::fs::write(&p, t.finish()).unwrap();
    p
}

/// Console lines of service `id` (its state lines).
fn states<'a>(console: &'a [String], id: &str) -> Vec<&'a str> {
    let key = format!("node-runtime: service id={id} ");
    console
        .iter()
        .filter(|l| l.contains(&key))
        .map(|l| l.as_str())
        .collect()
}

fn index_of(console: &[String], needle: &str) -> usize {
    console
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} line:\n{}", console.join("\n")))
}

#[test]
fn extension_services_run_with_dependencies_restarts_and_namespaces() {
    let t = tempfile::tempdir().unwrap();
    let ext = extension(t.path());
    let out = t.path().join("pxe");
    ok(imager()
        .args(["metal", "--output-kind", "pxe", "--output"])
        .arg(&out)
        .arg("--system-extension-image")
        .arg(&ext)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff=25"]));
    let cmdline = std::fs::read_to_string(out.join("cmdline-metal-amd64")).unwrap();
    let m = Machine {
        firmware: Firmware::Bios,
        direct: Some((
            out.join("kernel-amd64"),
            out.join("initramfs-amd64.xz"),
            cmdline,
        )),
        // the address comes from QEMU's DHCP server, after the services have started
        extra: qemu_harness::user_nic("n0", ""),
        ..Default::default()
    };
    let mut run = m.start().unwrap();
    run.wait_for(
        "node-runtime: ready meta=",
        DEFAULT_FAILURES,
        Duration::from_secs(300),
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ready_at = run.elapsed();
    run.wait_for(
        "node-runtime: poweroff",
        DEFAULT_FAILURES,
        Duration::from_secs(120),
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "ready after {:.1} s, poweroff after {:.1} s",
        ready_at.as_secs_f64(),
        run.elapsed().as_secs_f64()
    );
    let console = run.console().to_vec();
    assert!(run.finish(Duration::from_secs(60)), "the guest powers off");
    let all = console.join("\n");
    let count = |lines: &[&str], needle: &str| lines.iter().filter(|l| l.contains(needle)).count();

    // discovery: 8 valid, 2 invalid with a reason each
    index_of(
        &console,
        "node-runtime: services dir=/usr/local/etc/containers valid=8 invalid=2",
    );
    let bad = &console[index_of(
        &console,
        "node-runtime: service-invalid file=/usr/local/etc/containers/zz-bad.yaml reason=",
    )];
    assert!(bad.contains("unknown field `bogus`"), "{bad}");
    let bad = &console[index_of(
        &console,
        "node-runtime: service-invalid file=/usr/local/etc/containers/zz-restart.yaml reason=",
    )];
    assert!(bad.contains("sometimes"), "{bad}");
    assert!(!all.contains("id=ext-bad "), "{all}");

    // network dependency: Waiting, then the key, then Running and the output
    // DHCP may bind before the services are discovered: a Waiting line, when there is one,
    // comes before the key
    let waiting = console.iter().position(|l| {
        l.contains(
            "node-runtime: service id=ext-net-hello state=Waiting reason=\"waiting for network.addresses\"",
        )
    });
    let bound = index_of(
        &console,
        "node-runtime: network dhcp link=eth0 state=bound address=10.0.2.15/24",
    );
    let key = index_of(&console, "node-runtime: ready-key network.addresses");
    assert!(bound < key, "the key is set once DHCP bound the address");
    let running = index_of(
        &console,
        "node-runtime: service id=ext-net-hello state=Running pid=",
    );
    let hello = index_of(&console, "ext-net-hello: hello from test-service");
    let done = index_of(
        &console,
        "node-runtime: service id=ext-net-hello state=Finished exit=0",
    );
    assert!(
        waiting.is_none_or(|w| w < key) && key < running && running < hello && hello < done,
        "{all}"
    );

    // untilSuccess: three runs (exit 1, 1, 0), then nothing more
    let retry = states(&console, "ext-retry");
    assert_eq!(count(&retry, "state=Running"), 3, "{retry:#?}");
    assert_eq!(count(&retry, "state=Failed exit=1"), 2, "{retry:#?}");
    assert!(
        retry
            .last()
            .unwrap()
            .ends_with("state=Finished exit=0 restarts=2"),
        "{retry:#?}"
    );
    for n in 1..=3 {
        index_of(&console, &format!("ext-retry: attempt={n}"));
    }
    assert!(!all.contains("ext-retry: attempt=4"), "{all}");
    assert_eq!(
        count(
            &retry,
            "state=Waiting reason=\"restarting in 1s\" restarts=1"
        ),
        1
    );
    assert_eq!(
        count(
            &retry,
            "state=Waiting reason=\"restarting in 2s\" restarts=2"
        ),
        1
    );

    // never + exit 1: failed once
    let once = states(&console, "ext-once-fails");
    assert_eq!(
        once,
        [
            "node-runtime: service id=ext-once-fails state=Preparing",
            once[1],
            "node-runtime: service id=ext-once-fails state=Failed exit=1",
        ],
        "{once:#?}"
    );
    assert!(once[1].contains("state=Running pid="), "{once:#?}");

    // always: restarted with growing gaps; its output goes to the log file only
    let flappy = states(&console, "ext-flappy");
    assert!(count(&flappy, "state=Running") >= 4, "{flappy:#?}");
    for (gap, n) in [(1, 1), (2, 2), (4, 3)] {
        assert_eq!(
            count(
                &flappy,
                &format!("state=Waiting reason=\"restarting in {gap}s\" restarts={n}")
            ),
            1,
            "{flappy:#?}"
        );
    }
    assert!(!all.contains("ext-flappy: "), "{all}");

    // missing entrypoint: one Failed line with the reason, never Running
    let none = states(&console, "ext-no-entry");
    assert_eq!(
        none,
        [
            "node-runtime: service id=ext-no-entry state=Preparing",
            "node-runtime: service id=ext-no-entry state=Failed reason=\"entrypoint ./missing not found in /usr/local/lib/containers/no-entry\"",
        ],
        "{none:#?}"
    );

    // namespaces: PID 1 with its own /proc; the root read-only unless writeableRootfs; a
    // `service:` dependency is met once the other service runs
    index_of(&console, "ext-pid1: pid=1 root=ro proc=yes greeting=hi");
    index_of(&console, "ext-pid1-rw: pid=1 root=rw proc=yes greeting=-");
    let pid1_running = index_of(
        &console,
        "node-runtime: service id=ext-pid1 state=Running pid=",
    );
    let rw_preparing = index_of(
        &console,
        "node-runtime: service id=ext-pid1-rw state=Preparing",
    );
    assert!(pid1_running < rw_preparing, "{all}");

    // time and configuration never come in this boot
    let waits = states(&console, "ext-waits");
    assert_eq!(
        waits,
        [
            "node-runtime: service id=ext-waits state=Waiting reason=\"waiting for time, configuration\""
        ],
        "{waits:#?}"
    );
}
