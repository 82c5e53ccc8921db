//! GPT read-back (node-runtime finds META that way): both headers, both arrays, CRCs. Odd
//! first bytes get their CRCs fixed first so that the checks behind them are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: fuzz::write_seeds("gpt"), |data: &[u8]| {
    for sector in [512usize, 4096] {
        let mut disk = data.to_vec();
        if data.first().is_some_and(|b| b & 1 == 1) {
            fuzz::fix_gpt_crcs(&mut disk, sector);
        }
        let len = disk.len() as u64;
        let _ = gpt::read(&mut std::io::Cursor::new(disk), sector as u64, len);
    }
});
