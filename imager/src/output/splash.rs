//! The UKI's `.splash`: a BMP that systemd-stub shows while it boots (Talos embeds Sidero's
//! logo; this is our own, drawn here so the image stays reproducible and small).

/// Width and height of the splash, in pixels.
const SIZE: u32 = 128;

/// A 128×128 24-bit uncompressed BMP (BITMAPINFOHEADER, rows bottom-up, padded to 4 bytes):
/// a white "T" on dark blue.
pub fn bmp() -> Vec<u8> {
    let row = (SIZE * 3).div_ceil(4) * 4;
    let pixels = row * SIZE;
    let mut b = Vec::with_capacity(54 + pixels as usize);
    b.extend(b"BM");
    b.extend((54 + pixels).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(54u32.to_le_bytes());
    b.extend(40u32.to_le_bytes());
    b.extend((SIZE as i32).to_le_bytes());
    b.extend((SIZE as i32).to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // BI_RGB
    b.extend(pixels.to_le_bytes());
    b.extend(2835u32.to_le_bytes()); // 72 dpi
    b.extend(2835u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    for y in (0..SIZE).rev() {
        for x in 0..SIZE {
            let bar = (24..40).contains(&y) && (20..108).contains(&x);
            let stem = (40..108).contains(&y) && (56..72).contains(&x);
            // BGR
            b.extend(if bar || stem {
                [0xff, 0xff, 0xff]
            } else {
                [0x40, 0x20, 0x10]
            });
        }
        b.extend(std::iter::repeat_n(0u8, (row - SIZE * 3) as usize));
    }
    b
}
