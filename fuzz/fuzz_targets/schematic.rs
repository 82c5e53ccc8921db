//! Image Factory schematics: strict parsing and the canonical YAML, which must read back as
//! the same schematic and the same text (so that its ID is stable).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("schematic"), |data: &[u8]| {
    let Ok(s) = schematic::parse(data) else {
        return;
    };
    let _ = s.validate();
    let Ok(text) = s.canonical() else {
        return;
    };
    let back = schematic::parse(text.as_bytes()).expect("the canonical text parses");
    assert_eq!(back.canonical().expect("canonical again"), text);
    assert_eq!(back.id().expect("id"), s.id().expect("id"));
});
