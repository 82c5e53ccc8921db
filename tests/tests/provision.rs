//! Provisioning (docs/formats/install.md, "From the node"): an ISO boots into maintenance
//! mode, fetches its machine configuration from `talos.config=URL` (an HTTP server of the
//! test, which fails the first two requests), pulls the installer image named in it from a
//! real registry through the proxy its `machine.env` names (the API test: through the
//! configuration's mirror), runs the image's own `installer` against the
//! empty disk, stores the configuration in STATE and reboots; the disk then boots by itself
//! to `installed=true` with the configuration's hostname applied.
#![allow(clippy::unwrap_used)]

use e2e::connectproxy::ConnectProxy;
use e2e::node::{
    Installer, apply_config, authed, ca_block, gen_config, in_maintenance, nodectl,
    publish_installer, wait, wait_installing,
};
use e2e::registry::{Registry, free_port};
use e2e::*;
use qemu_harness::{DiskKind, Firmware, Machine, field, user_nic};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves `body` at any path on 127.0.0.1; the first two requests get a 503. Returns the
/// port, the request counter and the request lines seen.
fn serve(body: String) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, sn) = (count.clone(), seen.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            sn.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_string());
            let n = c.fetch_add(1, Ordering::SeqCst);
            let resp = if n < 2 {
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
    (port, count, seen)
}

const UUID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

/// A system extension whose service prints `greeting=$GREETING` (test-service `check-pid1`)
/// on the console; it sets no environment of its own.
fn greeter_extension(dir: &Path) -> std::path::PathBuf {
    e2e::fixture::service_extension(
        dir,
        "greeter",
        "name: greeter\ncontainer:\n  entrypoint: ./svc\n  args: [check-pid1]\nrestart: never\n\
         logToConsole: true\n",
    )
}

#[test]
fn iso_maintenance_fetches_config_installs_and_reboots_into_the_disk() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let greeter = greeter_extension(t.path());
    publish_installer(
        &reg,
        t.path(),
        &Installer {
            repo: "installer",
            tag: "v1",
            version: "v1.14.0",
            args: &["node_runtime.test_poweroff=30"],
            extensions: &[&greeter],
            ..Default::default()
        },
    );
    let port = reg.addr().port();
    // the registry is reachable under its name only through the proxy of machine.env
    let proxy = ConnectProxy::start(reg.addr());
    let config = format!(
        "version: v1alpha1\nmachine:\n  type: controlplane\n  install:\n    disk: /dev/vda\n    \
         image: registry.lab.invalid:{port}/installer:v1\n    extraKernelArgs: [ignored=1]\n  \
         network:\n    hostname: installed-node\n  env:\n    http_proxy: http://10.0.2.2:{}\n    \
         no_proxy: 10.0.2.2,.cluster.local\n    GREETING: from-machine-env\n  registries:\n    \
         mirrors:\n      registry.lab.invalid:{port}:\n        endpoints: \
         [http://registry.lab.invalid:{port}]\n  kubelet:\n    image: x\ncluster:\n  clusterName: c\n",
        proxy.port()
    );
    let (http, requests, seen) = serve(config.clone());
    let iso_dir = t.path().join("iso");
    ok(imager()
        .args(["iso", "--output"])
        .arg(&iso_dir)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args([
            "--extra-kernel-arg",
            &format!(
                "talos.config=http://10.0.2.2:{http}/${{uuid}}?code=${{code}}&serial=${{serial}}\
                 &mac=${{mac}}&host=${{hostname}}"
            ),
        ])
        // ${code} is META 0x0b, given on the ISO's command line
        .args(["--meta", "0x0b=lab/42"]));
    let iso = iso_dir.join("metal-amd64.iso");
    let disk = t.path().join("disk.raw");
    blank_disk(&disk, 6 << 30);
    let mut extra = user_nic("n0", "");
    extra.extend(["-uuid", UUID, "-smbios", "type=1,serial=SER-0042"].map(String::from));
    let m = Machine {
        firmware: Firmware::Uefi,
        disks: vec![
            (disk.clone(), DiskKind::VirtioWritable),
            (iso.clone(), DiskKind::Cdrom),
        ],
        extra,
        memory_mib: 2048,
        ..Default::default()
    };
    let mut run = m.start().unwrap();
    let done = wait_installing(&mut run, "node-runtime: install done", 600);
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
    // the first two fetches failed and were retried; ${uuid} is the machine's
    assert!(line("node-runtime: config-fetch").contains("attempt=1 error="));
    assert!(line("config-fetch url=").contains(UUID));
    assert!(line("attempt=2 error=").contains("retry_in=2s"));
    // the server refused its first two requests, then answered; a fetch tried before the
    // network was up fails before reaching it (one more retry line)
    let fetches: Vec<&String> = console
        .iter()
        .filter(|l| l.contains("node-runtime: config-fetch"))
        .collect();
    assert_eq!(
        fetches
            .iter()
            .filter(|l| l.contains("error=\"http status: 503\""))
            .count(),
        2,
        "{fetches:#?}"
    );
    let answered = fetches.last().unwrap();
    assert!(answered.contains(" bytes="), "{answered}");
    assert!(
        fetches[..fetches.len() - 1]
            .iter()
            .all(|l| l.contains(" error=")),
        "{fetches:#?}"
    );
    assert!(requests.load(Ordering::SeqCst) >= 3);
    // Talos's variables, each substituted for every attempt (the default hostname is there
    // once the network is), values percent-encoded
    assert!(
        seen.lock().unwrap().iter().any(|r| r
            == &format!(
                "GET /{UUID}?code=lab%2F42&serial=SER-0042&mac=52:54:00:12:34:56&\
                 host=talos-123456 HTTP/1.1"
            )),
        "{:?}",
        seen.lock().unwrap()
    );
    assert!(line("node-runtime: config source=").contains("install-disk=/dev/vda"));
    for na in ["cluster", "machine.kubelet", "machine.type"] {
        assert!(
            console
                .iter()
                .any(|l| l.ends_with(&format!("config not-applied={na}"))),
            "{na} not listed"
        );
    }
    assert!(line("node-runtime: install pulled=").contains("registry.lab.invalid"));
    // machine.env's http_proxy carried the pull (the guest cannot resolve the name itself)
    let targets = proxy.targets();
    assert!(
        !targets.is_empty()
            && targets
                .iter()
                .all(|t| t == &format!("registry.lab.invalid:{port}")),
        "{targets:?}"
    );
    assert!(line("install extra-kernel-args=ignored").contains("reason=uki"));
    assert!(line("installer: installed").contains("(sd-boot, UKI)"));
    assert!(done.contains("disk=/dev/vda"));
    // the reboot ends QEMU (-no-reboot)
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the install"
    );
    // the disk boots by itself, with the stored configuration; its extension service gets
    // machine.env
    let mut run = Machine {
        firmware: Firmware::Uefi,
        disks: vec![(disk.clone(), DiskKind::VirtioWritable)],
        extra: user_nic("n0", ""),
        ..Default::default()
    }
    .start()
    .unwrap();
    let ready = wait(&mut run, "node-runtime: ready meta=", 300);
    let greeted = wait(&mut run, "ext-greeter: pid=1", 60);
    assert!(greeted.ends_with("greeting=from-machine-env"), "{greeted}");
    let b = Booted {
        line: ready,
        console: run.console().to_vec(),
        powered_off: run.finish(Duration::from_secs(60)),
    };
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
    assert!(
        b.console
            .iter()
            .any(|l| l.contains("node-runtime: volume name=EPHEMERAL")
                && l.contains("mount=/var boots=1")),
        "{}",
        b.console.join("\n")
    );
    // independent tools find the install-mode partitions, their filesystems, and the
    // configuration in STATE
    let p = ok(Command::new("sgdisk").arg("-p").arg(&disk));
    for name in ["EFI", "META", "STATE", "EPHEMERAL"] {
        assert!(p.contains(&format!("  {name}\n")), "{name}:\n{p}");
    }
    let l = gpt::read(&mut std::fs::File::open(&disk).unwrap(), 512, 6 << 30).unwrap();
    for (name, fs) in [("EFI", "vfat"), ("STATE", "ext4"), ("EPHEMERAL", "ext4")] {
        let part = l.by_name(name).unwrap();
        let img = t.path().join(format!("{name}.img"));
        extract(&disk, part.offset(512), part.size(512).min(256 << 20), &img);
        let id = ok(Command::new("blkid").arg("-p").arg(&img));
        assert!(id.contains(&format!("TYPE=\"{fs}\"")), "{name}: {id}");
        if name == "STATE" {
            let cat = ok(Command::new("debugfs")
                .args(["-R", "cat /config.yaml"])
                .arg(&img));
            assert_eq!(cat, config, "the configuration in STATE");
        }
        std::fs::remove_file(&img).unwrap();
    }
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

/// `nodectl version` with neither `--insecure` nor a client configuration (no
/// `$TALOSCONFIG`, a `$HOME` without `.talos/config`).
fn run_env_free_nodectl(port: u16) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    run(
        Command::new(bin("nodectl"))
            .env_remove("TALOSCONFIG")
            .env("HOME", home.path())
            .args([
                "--nodes",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "version",
            ]),
        None,
    )
}

/// The maintenance API: `nodectl` (talosctl's role) reads the version and META of a node in
/// maintenance, a configuration that does not parse comes back as an error and the node stays
/// in maintenance, a valid one is installed; `--insecure` is required; an embedded
/// configuration is taken at once; `reboot` reboots.
#[test]
fn maintenance_api_takes_the_configuration_from_nodectl() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let port = reg.addr().port();
    // the installer image signed with a release key, under the name the node verifies (it
    // pulls 127.0.0.1:<port>/… through the configuration's mirror 10.0.2.2:<port>)
    let release = cosign::SigningKey::from_seed(b"release");
    let release_key = t.path().join("release.key");
    std::fs::write(&release_key, release.to_pkcs8_pem()).unwrap();
    // the installed system would stay up 150 s after ready, but stops feeding its watchdog
    // 70 s after arming it
    let image = publish_installer(
        &reg,
        t.path(),
        &Installer {
            repo: "signed/installer",
            tag: "v1",
            version: "v1.14.0",
            key: Some(&release_key),
            args: &[
                "node_runtime.test_poweroff=150",
                "node_runtime.test_watchdog_stop=70",
            ],
            ..Default::default()
        },
    );
    // the cluster's CA and a client configuration (talosctl gen config's role), and another
    // pair whose CA the node does not know
    let (lab, stranger) = (
        gen_config(t.path(), "lab"),
        gen_config(t.path(), "stranger"),
    );
    let ca_block = ca_block(&lab);
    let other_pub = cosign::SigningKey::from_seed(b"other")
        .public_key()
        .to_pem();
    let meta = t.path().join("meta.yaml");
    std::fs::write(&meta, "hostname: from-iso\n").unwrap();
    let iso_dir = t.path().join("iso");
    ok(imager()
        .args(["iso", "--output"])
        .arg(&iso_dir)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        // lets the configuration's INSTALLER_TEST_PAUSE reach the installer
        .args(["--extra-kernel-arg", "node_runtime.test_install_pause"])
        .arg("--meta")
        .arg(format!("0xc=@{}", meta.display())));
    let iso = iso_dir.join("metal-amd64.iso");
    let disk = t.path().join("disk.raw");
    blank_disk(&disk, 6 << 30);
    let api = free_port();
    let machine = |disks: Vec<(std::path::PathBuf, DiskKind)>| Machine {
        firmware: Firmware::Uefi,
        disks,
        extra: {
            // a hardware watchdog that resets the machine (which -no-reboot turns into
            // QEMU's exit)
            let mut e = user_nic("n0", &format!(",hostfwd=tcp:127.0.0.1:{api}-:50000"));
            e.extend(["-device", "i6300esb", "-action", "watchdog=reset"].map(String::from));
            e
        },
        memory_mib: 2048,
        ..Default::default()
    };
    let mut run = machine(vec![
        (disk.clone(), DiskKind::VirtioWritable),
        (iso.clone(), DiskKind::Cdrom),
    ])
    .start()
    .unwrap();
    let listening = run
        .wait_for(
            "node-runtime: maintenance api listening",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(listening.contains("client-auth=none"), "{listening}");
    // without --insecure or a client configuration nothing is sent; a client configuration
    // does not trust the maintenance certificate
    let o = run_env_free_nodectl(api);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = nodectl(
        api,
        &[
            "--talosconfig",
            lab.join("talosconfig").to_str().unwrap(),
            "version",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = String::from_utf8(nodectl(api, &["--insecure", "version"]).stdout).unwrap();
    assert!(
        v.contains("maintenance: true") && v.contains("arch: amd64"),
        "{v}"
    );
    let m = String::from_utf8(nodectl(api, &["--insecure", "get", "meta"]).stdout).unwrap();
    assert!(m.contains("0x0c  hostname: from-iso"), "{m}");
    // schema errors go back to the sender; the node stays in maintenance
    let bad = t.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: v1alpha1\nmachine:\n  install:\n    disk: vda\n",
    )
    .unwrap();
    let o = apply_config(api, &bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("machine.install.disk") && err.contains("not a /dev path"),
        "{err}"
    );
    // a disk that does not exist: one clear line, nothing written, still in maintenance
    let nodisk = t.path().join("nodisk.yaml");
    std::fs::write(
        &nodisk,
        format!(
            "version: v1alpha1\nmachine:\n  install:\n    disk: /dev/vdz\n    image: \
             10.0.2.2:{port}/installer:v1\n"
        ),
    )
    .unwrap();
    let o = apply_config(api, &nodisk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = run
        .wait_for(
            "node-runtime: install error",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(120),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(e.contains("/dev/vdz: no such disk"), "{e}");
    assert_eq!(
        std::fs::metadata(&disk).unwrap().blocks(),
        0,
        "the disk was written"
    );
    // a configuration for the signed image: `machine` lines added, documents appended
    let config = |machine: &str, docs: &str| {
        format!(
            "version: v1alpha1\nmachine:\n  install:\n    diskSelector:\n      size: '>= 4GB'\n    \
             image: {image}\n{machine}  registries:\n    mirrors:\n      127.0.0.1:{port}:\n        \
             endpoints: [http://10.0.2.2:{port}]\ncluster: {{}}\n{docs}"
        )
    };
    let policy = |pem: &str| {
        format!(
            "---\napiVersion: v1alpha1\nkind: ImageVerificationConfig\nrules:\n  - image: \
             '127.0.0.1:*/signed/*'\n    publicKey:\n      certificate: |\n{}",
            pem.lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        )
    };
    // signed, but not by the key the policy names: refused before anything is written
    let wrong = t.path().join("wrong-key.yaml");
    std::fs::write(&wrong, config("", &policy(&other_pub))).unwrap();
    assert!(apply_config(api, &wrong).status.success());
    let e = run
        .wait_for(
            "node-runtime: install error",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        e.contains("signature verification failed under rule \\\"127.0.0.1:*/signed/*\\\""),
        "{e}"
    );
    assert_eq!(
        std::fs::metadata(&disk).unwrap().blocks(),
        0,
        "the disk was written"
    );
    // the right key, and the installer's test hook: power is cut once everything but the
    // partition tables is on the disk
    let paused = t.path().join("paused.yaml");
    std::fs::write(
        &paused,
        config(
            "  env:\n    INSTALLER_TEST_PAUSE: '1'\n",
            &policy(&release.public_key().to_pem()),
        ),
    )
    .unwrap();
    assert!(apply_config(api, &paused).status.success());
    wait_installing(&mut run, "installer: test pause", 600);
    let verified = run
        .console()
        .iter()
        .find(|l| l.contains("install verify="))
        .cloned()
        .unwrap_or_default();
    assert!(
        verified.contains(&format!(
            "install verify=127.0.0.1:{port}/signed/installer result=verified"
        )) && verified.contains("signed by key"),
        "{verified}"
    );
    drop(run);
    assert!(
        std::fs::metadata(&disk).unwrap().blocks() > 0,
        "nothing written"
    );
    assert!(
        gpt::read(&mut std::fs::File::open(&disk).unwrap(), 512, 6 << 30).is_err(),
        "a partition table after the install was cut"
    );
    // the ISO boots into maintenance again and installs
    let mut run = machine(vec![
        (disk.clone(), DiskKind::VirtioWritable),
        (iso.clone(), DiskKind::Cdrom),
    ])
    .start()
    .unwrap();
    in_maintenance(&mut run);
    let good = t.path().join("good.yaml");
    std::fs::write(
        &good,
        config(
            &format!("{ca_block}  network:\n    hostname: api-node\n    interfaces:\n      - deviceSelector:\n          \
             hardwareAddr: '52:54:00:*'\n          driver: virtio_net\n        dhcp: true\n        \
             addresses: [192.168.77.5/24]\n        routes:\n          - network: 198.51.100.0/24\n            \
             gateway: 192.168.77.1\n            metric: 100\n        vip:\n          ip: 192.168.77.9\n"),
            &format!(
                "{}---\napiVersion: v1alpha1\nkind: WatchdogTimerConfig\ndevice: /dev/watchdog0\n\
                 timeout: 15s\n",
                policy(&release.public_key().to_pem())
            ),
        ),
    )
    .unwrap();
    let o = apply_config(api, &good);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("install disk none") && out.contains("cluster"),
        "{out}"
    );
    wait_installing(&mut run, "node-runtime: install done", 600);
    let console = run.console().to_vec();
    assert!(
        console
            .iter()
            .any(|l| l.contains("config source=\"api\" install-disk=none")),
        "{}",
        console.join("\n")
    );
    assert!(
        console
            .iter()
            .any(|l| l.ends_with("config not-applied=machine.network.interfaces[0].vip")),
        "{}",
        console.join("\n")
    );
    // the selector chose the one disk of at least 4 GB (the CD is not a candidate)
    assert!(
        console
            .iter()
            .any(|l| l.contains("install disk-selector matched=/dev/vda")),
        "{}",
        console.join("\n")
    );
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the install"
    );
    let mut run = machine(vec![(disk.clone(), DiskKind::VirtioWritable)])
        .start()
        .unwrap();
    let listening = run
        .wait_for(
            "node-runtime: api listening",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listening.contains("tls=machine-ca") && listening.contains("client-auth=required"),
        "{listening}"
    );
    let console = run.console().to_vec();
    let ready = console
        .iter()
        .find(|l| l.contains("node-runtime: ready meta="))
        .unwrap_or_else(|| panic!("{}", console.join("\n")));
    assert_eq!(field(ready, "installed"), Some("true"), "{ready}");
    // the ISO's META (from its cmdline) went into the disk's META; the hostname is applied
    let want = format!("0x0c:{}", sha256(b"hostname: from-iso\n"));
    assert!(
        field(ready, "meta").is_some_and(|m| m.contains(&want)),
        "{ready}"
    );
    let has = |needle: &str| {
        assert!(
            console.iter().any(|l| l.contains(needle)),
            "no {needle:?}:\n{}",
            console.join("\n")
        )
    };
    // the installed node's API: mutual TLS under machine.ca
    let authed = |dir: &Path, args: &[&str]| authed(api, dir, args);
    let o = authed(&lab, &["version"]);
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        v.contains("maintenance: false") && v.contains("version: v1.14.0"),
        "{v}"
    );
    let m = String::from_utf8(authed(&lab, &["get", "meta"]).stdout).unwrap();
    assert!(m.contains("0x0c  hostname: from-iso"), "{m}");
    // a client certificate from another CA, and a TLS client without one, are refused
    for o in [
        authed(&stranger, &["version"]),
        nodectl(api, &["--insecure", "version"]),
    ] {
        assert_eq!(
            o.status.code(),
            Some(4),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // without any client configuration nothing is sent
    let o = run_env_free_nodectl(api);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    has("config source=state hostname=api-node");
    // machine.network.interfaces: the selector found eth0, its address and route applied
    // from the configuration layer
    has("network address address=192.168.77.5/24 link=eth0 layer=configuration");
    has("network route dst=198.51.100.0/24 gateway=192.168.77.1 link=eth0 layer=configuration");
    // WatchdogTimerConfig: armed and fed; once the feeding stops, the hardware resets the
    // machine by itself (the i6300esb resets after up to two timeouts), long before the
    // node's own poweroff
    let armed = console
        .iter()
        .find(|l| l.contains("node-runtime: watchdog device="))
        .unwrap_or_else(|| panic!("{}", console.join("\n")));
    assert!(
        armed.contains("device=/dev/watchdog0 timeout_s=15 feed_every_s=3"),
        "{armed}"
    );
    run.wait_for(
        "node-runtime: watchdog feeding=stopped",
        qemu_harness::DEFAULT_FAILURES,
        Duration::from_secs(120),
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stopped = std::time::Instant::now();
    match run.wait_for(
        "node-runtime: poweroff",
        &[],
        Duration::from_secs(100),
        false,
    ) {
        Err(qemu_harness::HarnessError::Exited { .. }) => {}
        other => panic!("no watchdog reset: {other:?}"),
    }
    assert!(
        stopped.elapsed() <= Duration::from_secs(45),
        "the reset took {:?}",
        stopped.elapsed()
    );
    // META and the reset through the installed node's API (its watchdog is let go 70 s after
    // each installed boot, long after these calls)
    let mut run = machine(vec![(disk.clone(), DiskKind::VirtioWritable)])
        .start()
        .unwrap();
    run.wait_for(
        "node-runtime: api listening",
        qemu_harness::DEFAULT_FAILURES,
        Duration::from_secs(300),
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for args in [
        &["meta", "write", "0x0d", "written-by-api"][..],
        &["meta", "delete", "0x0c"][..],
    ] {
        let o = authed(&lab, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = authed(&lab, &["meta", "delete", "0x0c"]);
    assert_eq!(o.status.code(), Some(2), "deleting a missing key");
    let m = String::from_utf8(authed(&lab, &["get", "meta"]).stdout).unwrap();
    assert!(
        m.contains("0x0d  written-by-api") && !m.contains("0x0c"),
        "{m}"
    );
    let o = authed(
        &lab,
        &["reset", "--graceful=true", "--wipe-mode", "system-disk"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run.wait_for(
        "node-runtime: reset meta-deleted=",
        qemu_harness::DEFAULT_FAILURES,
        Duration::from_secs(120),
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("node-runtime: reset disk=/dev/vda graceful=true")),
        "{}",
        run.console().join("\n")
    );
    assert!(
        run.finish(Duration::from_secs(60)),
        "no reboot after the reset"
    );
    // the wiped disk boots into maintenance mode: no installation, no configuration
    let mut run = machine(vec![(disk.clone(), DiskKind::VirtioWritable)])
        .start()
        .unwrap();
    in_maintenance(&mut run);
    drop(run);
    // independent tools find no filesystem in STATE or EPHEMERAL
    let l = gpt::read(&mut std::fs::File::open(&disk).unwrap(), 512, 6 << 30).unwrap();
    for name in ["STATE", "EPHEMERAL"] {
        let part = l.by_name(name).unwrap();
        let img = t.path().join(format!("{name}-after-reset.img"));
        extract(&disk, part.offset(512), part.size(512).min(64 << 20), &img);
        let o = Command::new("blkid").arg("-p").arg(&img).output().unwrap();
        assert!(
            !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("TYPE="),
            "{name}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        std::fs::remove_file(&img).unwrap();
    }
    // an ISO with an embedded configuration (the embedded-config extension) takes it at
    // once; without a disk its install fails and the node stays in maintenance, where the
    // API reboots it: QEMU (-no-reboot) ends
    let embedded = t.path().join("embedded");
    ok(imager()
        .args(["iso", "--output"])
        .arg(&embedded)
        .args([
            "--extra-kernel-arg",
            "console=ttyS0",
            "--embedded-config-path",
        ])
        .arg(&good));
    let mut run = machine(vec![(embedded.join("metal-amd64.iso"), DiskKind::Cdrom)])
        .start()
        .unwrap();
    let err = run
        .wait_for(
            "node-runtime: install error",
            qemu_harness::DEFAULT_FAILURES,
            Duration::from_secs(300),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(err.contains("diskSelector matches no disk"), "{err}");
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("config source=\"embedded\" install-disk=none"))
    );
    // the API may start after the embedded configuration was tried
    let mut tries = 0;
    let o = loop {
        let o = nodectl(api, &["--insecure", "reboot"]);
        tries += 1;
        if o.status.success() || tries == 30 {
            break o;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        run.finish(Duration::from_secs(60)),
        "the node did not reboot"
    );
}
