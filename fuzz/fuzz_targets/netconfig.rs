//! node-runtime's META 0x0a platform network configuration (YAML or JSON).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../node-runtime/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;
#[path = "../../node-runtime/src/net/config.rs"]
#[allow(dead_code)]
mod config;

fuzz_target!(init: fuzz::write_seeds("netconfig"), |data: &[u8]| {
    let _ = config::PlatformConfig::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = config::from_cmdline(&cmdline::Cmdline::parse(s));
    }
});
