//! Generated chest phantoms: the inputs of the model's known-answer test.
//!
//! Why here: the known answers belong to the model (its card names them, `scripts/make-kat.py`
//! computes them in Python with the same integer formulas), and the self-test (service) and the
//! bedside screen samples (present) both need a slice; both sit downstream of `classify`.

/// Side of the phantom slices (the COVID-CTset slice size).
pub const PHANTOM_SIDE: usize = 512;
/// A 512x512 chest phantom of stored values (HU + 1024): air, a soft-tissue body, two dark
/// lungs, and `k * 3` ground-glass-like blobs in the lungs. Integer arithmetic only.
pub fn phantom(k: u32) -> Vec<u16> {
    let n = PHANTOM_SIDE as i64;
    let mut px = vec![24u16; PHANTOM_SIDE * PHANTOM_SIDE]; // air, -1000 HU
    let blobs: Vec<(i64, i64, i64)> = (0..k as i64 * 3)
        .map(|i| {
            let side = if i % 2 == 0 { -1 } else { 1 };
            (
                256 + side * (80 + (i * 37) % 40),
                180 + (i * 53) % 150,
                10 + (i * 7 + k as i64 * 5) % 14,
            )
        })
        .collect();
    for y in 0..n {
        for x in 0..n {
            let (dx, dy) = (x - 256, y - 256);
            let mut v = 24;
            if dx * dx + dy * dy * 2 < 230 * 230 {
                v = 1064; // soft tissue, +40 HU
                let adx = dx.abs();
                if (adx - 100) * (adx - 100) * 4 + dy * dy < 150 * 150 {
                    v = 174; // lung, -850 HU
                    if blobs
                        .iter()
                        .any(|&(bx, by, r)| (x - bx) * (x - bx) + (y - by) * (y - by) < r * r)
                    {
                        v = 474; // ground glass, -550 HU
                    }
                }
            }
            px[(y * n + x) as usize] = v as u16;
        }
    }
    px
}
