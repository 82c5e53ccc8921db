//! newc cpio archives (the base initramfs is read back to find `rootfs.sqsh`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("cpio"), |data: &[u8]| {
    let _ = cpio::read_all(data);
});
