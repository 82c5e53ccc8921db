//! Kernel modules shipped by extensions: the ELF image (sections, .modinfo, exported and
//! needed symbols) as depmod reads it, and the modules.dep / modules.alias / load-list texts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("modules_dep"), |data: &[u8]| {
    let _ = kmod::depmod::inspect_module(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kmod::ModDep::parse(text);
    let _ = kmod::alias::Aliases::parse(text);
    let _ = kmod::parse_list(text);
});
