//! Tiny but real baseline JPEGs for simulated user photos.
//!
//! Each image is a 32×32 grid of flat-coloured 8×8 blocks (YCbCr, no subsampling) whose colours come from a seed,
//! plus a comment segment naming the seed, so every user gets distinct bytes (and a distinct ETag) while any JPEG
//! decoder can open the result. Flat blocks need only DC coefficients, so the entropy coder stays trivial.

/// Side length in pixels.
pub const SIZE: u16 = 32;
const BLOCKS: usize = (SIZE as usize) / 8;

/// A valid JPEG for `seed`: same seed, same bytes.
pub fn photo(seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(400);
    out.extend_from_slice(&[0xFF, 0xD8]); // SOI
                                          // APP0 JFIF 1.01, no thumbnail.
    segment(&mut out, 0xE0, &[b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
    segment(&mut out, 0xFE, format!("entradir graph-sim photo {seed}").as_bytes());
    // DQT: table 0, all ones, so coefficients are stored as computed.
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1u8; 64]);
    segment(&mut out, 0xDB, &dqt);
    // SOF0: 8-bit, SIZE×SIZE, 3 components, 1×1 sampling, quant table 0.
    let s = SIZE.to_be_bytes();
    segment(
        &mut out,
        0xC0,
        &[8, s[0], s[1], s[0], s[1], 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0],
    );
    // DHT DC table 0: categories 0..=11, all 4-bit codes (0000..1011).
    let mut dc = vec![0x00];
    let mut bits = [0u8; 16];
    bits[3] = 12;
    dc.extend_from_slice(&bits);
    dc.extend(0u8..12);
    segment(&mut out, 0xC4, &dc);
    // DHT AC table 0: EOB (00) and one filler symbol, both 2-bit codes.
    let mut ac = vec![0x10];
    let mut bits = [0u8; 16];
    bits[1] = 2;
    ac.extend_from_slice(&bits);
    ac.extend_from_slice(&[0x00, 0x01]);
    segment(&mut out, 0xC4, &ac);
    // SOS: 3 components, all tables 0, full spectral range.
    segment(&mut out, 0xDA, &[3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]);

    let mut w = BitWriter::default();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pred = [0i32; 3];
    let base = [next(&mut rng) % 256, next(&mut rng) % 256, next(&mut rng) % 256];
    for _ in 0..BLOCKS * BLOCKS {
        let jitter = next(&mut rng) % 64;
        let rgb = [(base[0] + jitter) % 256, (base[1] + jitter / 2) % 256, base[2]];
        for (c, level) in ycbcr(rgb).into_iter().enumerate() {
            // DC of a flat block with level shift: 8 × (value − 128).
            let dc = 8 * (level - 128);
            let diff = dc - pred[c];
            pred[c] = dc;
            let (cat, bits) = magnitude(diff);
            w.put(cat, 4);
            if cat > 0 {
                w.put(bits, cat);
            }
            w.put(0b00, 2); // EOB
        }
    }
    out.extend_from_slice(&w.finish());
    out.extend_from_slice(&[0xFF, 0xD9]); // EOI
    out
}

fn next(state: &mut u64) -> i32 {
    // xorshift64: deterministic and dependency-free; quality does not matter for colours.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 33) as i32
}

fn ycbcr([r, g, b]: [i32; 3]) -> [i32; 3] {
    let (r, g, b) = (r as f64, g as f64, b as f64);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as i32)
}

/// JPEG magnitude category and the value's bits (negative values as one's complement).
fn magnitude(v: i32) -> (u32, u32) {
    let a = v.unsigned_abs();
    let cat = 32 - a.leading_zeros();
    let bits = if v >= 0 { a } else { (v - 1) as u32 & ((1 << cat) - 1) };
    (cat, bits)
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    let len = (body.len() + 2) as u16;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        for i in (0..bits).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.byte();
            }
        }
    }

    fn byte(&mut self) {
        let b = self.acc as u8;
        self.out.push(b);
        if b == 0xFF {
            self.out.push(0x00); // byte stuffing
        }
        self.acc = 0;
        self.n = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_deterministic_and_distinct() {
        assert_eq!(photo(7), photo(7));
        assert_ne!(photo(7), photo(8));
        let p = photo(7);
        assert_eq!(&p[..2], &[0xFF, 0xD8]);
        assert_eq!(&p[p.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn magnitude_follows_the_jpeg_table() {
        assert_eq!(magnitude(0), (0, 0));
        assert_eq!(magnitude(1), (1, 1));
        assert_eq!(magnitude(-1), (1, 0));
        assert_eq!(magnitude(-3), (2, 0));
        assert_eq!(magnitude(5), (3, 5));
        assert_eq!(magnitude(-1024), (11, 1023));
    }

    #[test]
    fn a_jpeg_decoder_opens_them() {
        for seed in [0, 1, 42, 4711, u64::MAX] {
            let bytes = photo(seed);
            let mut d = jpeg_decoder::Decoder::new(bytes.as_slice());
            let pixels = d.decode();
            let info = d.info();
            assert!(pixels.is_ok(), "seed {seed}: {pixels:?}");
            let pixels = pixels.unwrap_or_default();
            assert_eq!(info.map(|i| (i.width, i.height)), Some((SIZE, SIZE)));
            assert_eq!(pixels.len(), usize::from(SIZE) * usize::from(SIZE) * 3);
            assert!(pixels.iter().any(|p| *p != pixels[0]), "blocks differ in colour");
        }
    }
}
