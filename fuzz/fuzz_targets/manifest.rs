//! System extension `manifest.yaml`, `extensions.yaml` and version constraints.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("manifest"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = sysext::Manifest::parse(text) {
        let _ = m.check_compatibility("1.14.0");
    }
    let _ = sysext::Config::parse(text);
});
