//! Profiles (stdin, files, built-in bases): YAML → untyped value → strict typing → defaults
//! and validation, then the dump.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("profile"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(v) = imager::profile::parse_yaml(text, "fuzz") else {
        return;
    };
    let _ = imager::profile::from_value(v.clone(), "fuzz");
    if let Ok(r) = imager::profile::resolve(v, "fuzz", std::path::Path::new("/usr/install"), &Default::default()) {
        let _ = r.profile.to_yaml();
    }
});
