//! node-runtime's machine configuration parser (docs/formats/machine-config.md): text from the
//! network (`talos.config=URL`), the maintenance API, the kernel command line and STATE.
//! Whatever parses must hold what the parser promises: names and values that reach the
//! console, an environment or a kernel command line free of control characters, trusted roots
//! that a TLS configuration takes, rules whose verifiers build, and a network layer built
//! without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod console {
    pub fn say(_: &str) {}
}
#[path = "../../node-runtime/src/net/config.rs"]
#[allow(dead_code)]
pub mod netconfig;
mod net {
    pub use super::netconfig as config;
}
#[path = "../../node-runtime/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;
#[path = "../../node-runtime/src/config.rs"]
#[allow(dead_code)]
mod config;

fuzz_target!(init: fuzz::write_seeds("machine_config"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = config::parse(text) else {
        return;
    };
    let clean = |s: &str| !s.chars().any(char::is_control);
    assert!(c.env.iter().all(|(k, v)| clean(k) && !k.contains('=') && clean(v)));
    assert!(
        c.install
            .extra_kernel_args
            .iter()
            .all(|a| !a.is_empty() && !a.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
    );
    assert!(c.install.disk.is_empty() || (c.install.disk.starts_with("/dev/") && !c.install.disk.contains("..")));
    assert!(c.trusted_roots.iter().all(|r| r.count >= 1 && clean(&r.name)));
    assert!(oci::client::tls_config(&c.extra_cas(), false).is_ok());
    for r in &c.image_rules {
        assert!(r.verifier().is_ok());
    }
    let links = [config::SysLink {
        name: "eth0".into(),
        hardware_addr: "52:54:00:12:34:56".into(),
        driver: "virtio_net".into(),
        bus_path: "/pci0000:00/0000:00:03.0/virtio0".into(),
        pci_id: "1AF4:1000".into(),
        physical: true,
    }];
    let _ = c.network_layer(&links);
    // the text reads back the same
    let again = config::parse(&c.text).expect("a parsed text parses again");
    assert_eq!(again.not_applied, c.not_applied);
    assert_eq!(again.complete, c.complete);
});
