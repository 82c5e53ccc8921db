//! A tiny synthetic PE32+ for tests and fuzz seeds (feature `testing`).

/// A PE32+ stub: DOS header (`e_lfanew` = 0x40), COFF, a 240-byte optional header with 16
/// directories, `.text` and `.sdmagic` (file alignment 0x200, section alignment 0x1000), and
/// `symbols` bytes of "symbol table" at the end when non-zero.
pub fn stub(symbols: usize) -> Vec<u8> {
    let mut d = vec![0u8; 0x200];
    d[..2].copy_from_slice(b"MZ");
    d[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    d[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    d[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    d[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
    d[coff + 4..coff + 8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    d[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
    let opt = coff + 20;
    d[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    d[opt + 2] = 2; // linker version
    d[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
    d[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
    d[opt + 56..opt + 60].copy_from_slice(&0x3000u32.to_le_bytes());
    d[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
    d[opt + 64..opt + 68].copy_from_slice(&0xdeadu32.to_le_bytes()); // checksum
    d[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    let st = opt + 240;
    for (i, (name, va, chars)) in [
        (b".text\0\0\0", 0x1000u32, 0x6000_0020u32),
        (b".sdmagic", 0x2000, 0x4000_0040),
    ]
    .iter()
    .enumerate()
    {
        let at = st + 40 * i;
        d[at..at + 8].copy_from_slice(*name);
        d[at + 8..at + 12].copy_from_slice(&0x10u32.to_le_bytes());
        d[at + 12..at + 16].copy_from_slice(&va.to_le_bytes());
        d[at + 16..at + 20].copy_from_slice(&0x200u32.to_le_bytes());
        d[at + 20..at + 24].copy_from_slice(&(0x200 + 0x200 * i as u32).to_le_bytes());
        d[at + 36..at + 40].copy_from_slice(&chars.to_le_bytes());
    }
    d.extend(std::iter::repeat_n(0xcc, 0x10));
    d.resize(0x400, 0);
    d.extend(b"#### sd-stub ###");
    d.resize(0x600, 0);
    if symbols > 0 {
        d[coff + 8..coff + 12].copy_from_slice(&0x600u32.to_le_bytes());
        d[coff + 12..coff + 16].copy_from_slice(&3u32.to_le_bytes());
        d.extend(std::iter::repeat_n(0x55, symbols));
    }
    d
}
