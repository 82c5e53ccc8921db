//! node-runtime's DHCP reply parser and option 121 decoder (packets from the network).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../node-runtime/src/net/dhcp.rs"]
#[allow(dead_code)]
mod dhcp;

fuzz_target!(init: fuzz::write_seeds("dhcp"), |data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let xid = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mac = &data[4..10];
    let mut p = data[10..].to_vec();
    // make the fixed fields match often enough to reach the options
    if p.len() >= 240 {
        p[0] = 2;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[28..34].copy_from_slice(mac);
        p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    }
    if let Some((_, lease)) = dhcp::parse(&p, xid, mac) {
        let t = lease.timers();
        assert!(t.renew <= t.rebind && t.rebind <= t.expire);
        assert!(lease.hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    }
    let _ = dhcp::classless_routes(&data[10..]);
});
