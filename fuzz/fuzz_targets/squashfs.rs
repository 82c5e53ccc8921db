//! The squashfs reader used on the base rootfs (its kernel modules are copied out).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("squashfs"), |data: &[u8]| {
    let Ok(fs) = backhand::FilesystemReader::from_reader(std::io::Cursor::new(data)) else {
        return;
    };
    for node in fs.files() {
        if let backhand::InnerNode::File(f) = &node.inner {
            let mut r = fs.file(f).reader();
            let _ = std::io::copy(&mut std::io::Read::take(&mut r, 1 << 20), &mut std::io::sink());
        }
    }
});
