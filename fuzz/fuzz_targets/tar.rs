//! The tar walk of extensions and image layers (whiteouts, links, paths, bounds).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("tar"), |data: &[u8]| {
    let dir = fuzz::scratch("tar");
    let Ok(mut t) = imager::inputs::tree::Tree::new(&dir.join("blobs"), 64 << 20) else {
        return;
    };
    // two layers: the second may white out the first
    if t.apply_tar(data, 0, true).is_ok() {
        let _ = t.apply_tar(data, 1, true);
    }
    let _ = t.entries().len();
});
