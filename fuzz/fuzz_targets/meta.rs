//! The META partition (Talos ADV, both copies) and `INSTALLER_META_BASE64`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("meta"), |data: &[u8]| {
    if let Ok((adv, _)) = adv::Adv::from_partition(data) {
        for (tag, v) in adv.iter() {
            assert_eq!(adv.get(tag), Some(v));
        }
        // what we read, we write back readable
        let again = adv::Adv::from_partition(&adv.to_partition()).expect("re-read");
        assert_eq!(again.0.iter().count(), adv.iter().count());
    }
    let _ = adv::Adv::decode_copy(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = adv::env::decode(s);
    }
});
