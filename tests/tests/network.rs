//! Metal network configuration and DHCP in the booted node (seeds "Metal Network
//! Configuration", "Networking Resources"), over QEMU user networking with a virtio NIC:
//!
//! - META 0xa with a static address, default route, hostname, resolver, a bond enslaving a
//!   second NIC and a VLAN (both with addresses) is applied through rtnetlink, /etc/resolv.conf and /etc/hosts are written, and the node answers a TCP probe
//!   through a QEMU hostfwd to that static address;
//! - without META, DHCP gives the address (10.0.2.15 from QEMU's DHCP server) and the probe
//!   reaches it there;
//! - with an invalid 0xa document the node says so on the console and falls back to DHCP.
#![allow(clippy::unwrap_used)]

use e2e::*;
use qemu_harness::{DEFAULT_FAILURES, Firmware, Machine, user_nic};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

const STATIC: &str = "addresses:
  - address: 10.0.2.20/24
    linkName: eth0
    family: inet4
    scope: global
    flags: permanent
    layer: platform
  - address: 192.168.5.2/24
    linkName: eth0.5
    family: inet4
    scope: global
    flags: permanent
    layer: platform
  - address: 192.168.100.2/24
    linkName: bond0
    family: inet4
    scope: global
    flags: permanent
    layer: platform
links:
  - name: eth1
    up: true
    masterName: bond0
    slaveIndex: 0
    layer: platform
  - name: bond0
    logical: true
    up: true
    mtu: 0
    kind: bond
    type: ether
    bondMaster:
      mode: active-backup
    layer: platform
  - name: eth0.5
    logical: true
    up: true
    kind: vlan
    parentName: eth0
    vlan:
      vlanID: 5
      protocol: 802.1q
    layer: platform
  - name: eth0
    logical: false
    up: true
    mtu: 1500
    kind: \"\"
    type: ether
    layer: platform
routes:
  - family: inet4
    dst: \"\"
    src: \"\"
    gateway: 10.0.2.2
    outLinkName: eth0
    table: main
    priority: 1024
    scope: global
    type: unicast
    protocol: static
    layer: platform
hostnames:
  - hostname: node-static
    domainname: example.org
    layer: platform
resolvers:
  - dnsServers:
      - 10.0.2.3
    layer: platform
timeServers:
  - timeServers:
      - 10.0.2.4
    layer: platform
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn build(out: &Path, meta: Option<&str>) -> String {
    let mut c = imager();
    c.args(["metal", "--output-kind", "pxe", "--output"])
        .arg(out)
        .args(["--extra-kernel-arg", "console=ttyS0"])
        .args(["--extra-kernel-arg", "node_runtime.test_poweroff=30"])
        .args([
            "--extra-kernel-arg",
            "node_runtime.test_stat=/etc/resolv.conf,/etc/hosts",
        ]);
    if let Some(m) = meta {
        let f = out.with_extension("yaml");
        std::fs::write(&f, m).unwrap();
        c.arg("--meta").arg(format!("0xa=@{}", f.display()));
    }
    ok(&mut c);
    std::fs::read_to_string(out.join("cmdline-metal-amd64")).unwrap()
}

/// Boots the PXE set with a virtio NIC whose guest `guest_ip:50100` (the status endpoint) is forwarded to a local
/// port; waits for `until` on the console, probes the status endpoint, returns (console,
/// probe answer).
fn boot(
    out: &Path,
    cmdline: String,
    guest_ip: &str,
    until: &str,
    second_nic: bool,
) -> (Vec<String>, String) {
    let port = free_port();
    let m = Machine {
        firmware: Firmware::Bios,
        direct: Some((
            out.join("kernel-amd64"),
            out.join("initramfs-amd64.xz"),
            cmdline,
        )),
        extra: user_nic(
            "n0",
            &format!(",hostfwd=tcp:127.0.0.1:{port}-{guest_ip}:50100"),
        )
        .into_iter()
        .chain(if second_nic {
            user_nic("n1", "")
        } else {
            Vec::new()
        })
        .collect(),
        ..Default::default()
    };
    let mut run = m.start().unwrap();
    run.wait_for(until, DEFAULT_FAILURES, Duration::from_secs(240), false)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let mut s = String::new();
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = c.read_to_string(&mut s);
        }
        if !s.is_empty() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let console = run.console().to_vec();
    // the node stays up 30 s after ready for the probe; nothing more to see
    run.finish(Duration::ZERO);
    (console, answer)
}

fn has(console: &[String], s: &str) {
    assert!(
        console.iter().any(|l| l.contains(s)),
        "no {s:?} on the console:\n{}",
        console.join("\n")
    );
}

#[test]
fn static_address_from_meta_answers_a_tcp_probe() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("pxe");
    let cmdline = build(&out, Some(STATIC));
    let (console, answer) = boot(
        &out,
        cmdline,
        "10.0.2.20",
        "node-runtime: ready meta=",
        true,
    );
    has(
        &console,
        "network platform-config source=meta-0x0a links=4 addresses=3 routes=1",
    );
    // loading the bonding module creates bond0; its mode is then set
    has(
        &console,
        "network link name=bond0 updated kind=bond mode=active-backup layer=platform",
    );
    has(
        &console,
        "network link name=eth0.5 created kind=vlan vlan=5 layer=platform",
    );
    has(&console, "network link name=eth1 master=bond0");
    has(
        &console,
        "network address address=192.168.5.2/24 link=eth0.5 layer=platform",
    );
    has(
        &console,
        "network address address=192.168.100.2/24 link=bond0 layer=platform",
    );
    has(
        &console,
        "network address address=10.0.2.20/24 link=eth0 layer=platform",
    );
    has(
        &console,
        "network route dst=default gateway=10.0.2.2 link=eth0 layer=platform",
    );
    has(
        &console,
        "network hostname=node-static.example.org source=platform",
    );
    has(&console, "network time-servers=10.0.2.4 layer=platform");
    let resolv = "nameserver 10.0.2.3\n";
    has(
        &console,
        &format!(
            "test-stat path=/etc/resolv.conf type=file mode=0644 size={} sha256={}",
            resolv.len(),
            sha256(resolv.as_bytes())
        ),
    );
    let hosts =
        "127.0.0.1 localhost\n::1 localhost\n127.0.1.1 node-static.example.org node-static\n";
    has(
        &console,
        &format!(
            "test-stat path=/etc/hosts type=file mode=0644 size={} sha256={}",
            hosts.len(),
            sha256(hosts.as_bytes())
        ),
    );
    assert!(
        !console.iter().any(|l| l.contains("network dhcp link=")),
        "DHCP ran on a configured or enslaved link"
    );
    assert!(!console.iter().any(|l| l.contains("network error=")));
    assert_eq!(
        answer,
        "node-runtime hostname=node-static.example.org addresses=192.168.100.2/24,10.0.2.20/24,192.168.5.2/24\n"
    );
}

#[test]
fn dhcp_without_meta_and_as_fallback_for_an_invalid_document() {
    let t = tempfile::tempdir().unwrap();
    for (name, meta) in [
        ("none", None),
        ("invalid", Some("addresses: {address: [\n")),
    ] {
        let out = t.path().join(name);
        let cmdline = build(&out, meta);
        let (console, answer) = boot(
            &out,
            cmdline,
            "10.0.2.15",
            "network dhcp link=eth0 state=bound address=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3",
            false,
        );
        if meta.is_some() {
            has(&console, "network platform-config source=meta-0x0a error=");
            has(&console, "fallback=dhcp");
        } else {
            assert!(!console.iter().any(|l| l.contains("platform-config")));
        }
        assert!(
            answer.starts_with("node-runtime hostname=talos-")
                && answer.ends_with(" addresses=10.0.2.15/24\n"),
            "{name}: probe answered {answer:?}"
        );
    }
}
