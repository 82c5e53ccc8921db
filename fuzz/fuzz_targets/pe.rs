//! PE images (UKIs, systemd-boot, stubs given as `input.sdStub`, files given to
//! `imager inspect`): headers, sections, the Authenticode digest, signatures, assembly,
//! symbol stripping and the bzImage release.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("pe"), |data: &[u8]| {
    if let Ok(pe) = pe::Pe::parse(data) {
        for s in &pe.sections {
            let _ = pe.section_data(s);
        }
        let _ = pe.authenticode_sha256();
        for sig in pe.signatures() {
            let _ = secureboot::authenticode::signer_subjects(sig);
        }
        let sections = [(".cmdline", pe::Source::Bytes(b"console=ttyS0".to_vec()))];
        let _ = pe::assemble(data, &sections, 0, &mut std::io::sink());
    }
    let _ = pe::strip_symbols(data);
    let _ = pe::bzimage_release(data);
    let _ = secureboot::authenticode::signer_subjects(data);
});
