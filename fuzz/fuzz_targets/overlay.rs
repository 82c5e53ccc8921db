//! Board overlay descriptions (`overlay.yaml` from overlay images, with the profile's board
//! name and options): `board\0options-yaml\0overlay.yaml`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("overlay"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (Some(board), Some(options), Some(yaml)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    imager::inputs::overlay::fuzz_describe(yaml, board, options);
});
