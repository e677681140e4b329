//! The dark-pixel counting kernel.
//!
//! Written so that the compiler vectorises it without `unsafe` or intrinsics: each ROI row is
//! cut into fixed-width chunks of `LANES` u16 values; every chunk is compared with the
//! threshold and the 0/1 results are added into `LANES` independent u16 accumulators (one
//! compare and one add per pixel, no branch, no float). The accumulators are widened into a
//! u32 total before they could overflow. The row remainder (250 % 32 = 26 values for the
//! paper's ROI) is counted the same branch-free way one value at a time.
//!
//! [`count_below_naive`] is the obviously-correct reference; a property test checks that the
//! two agree on random images, regions and thresholds, and `cargo bench --bench select`
//! compares their speed.

use std::ops::Range;

const LANES: usize = 32;
/// Chunks that may be added into a u16 lane before it could overflow (each adds at most 1).
const FLUSH_EVERY: usize = u16::MAX as usize;

/// Number of pixels `< threshold` in `rows` × `cols` of a row-major image of `width` columns.
///
/// # Panics
/// If the region does not lie inside `pixels` (callers check image size first).
pub fn count_below(pixels: &[u16], width: usize, rows: Range<usize>, cols: Range<usize>, threshold: u16) -> u32 {
    assert!(cols.end <= width, "ROI columns {cols:?} outside width {width}");
    assert!(rows.end * width <= pixels.len(), "ROI rows {rows:?} outside image");
    let mut acc = [0u16; LANES];
    let mut pending = 0usize;
    let mut total = 0u32;
    for r in rows {
        let row = &pixels[r * width + cols.start..r * width + cols.end];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            if pending == FLUSH_EVERY {
                total += flush(&mut acc);
                pending = 0;
            }
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += u16::from(v < threshold);
            }
            pending += 1;
        }
        total += chunks
            .remainder()
            .iter()
            .map(|&v| u32::from(v < threshold))
            .sum::<u32>();
    }
    total + flush(&mut acc)
}

fn flush(acc: &mut [u16; LANES]) -> u32 {
    let s = acc.iter().map(|&a| u32::from(a)).sum();
    *acc = [0; LANES];
    s
}

/// The reference: one pixel at a time, with a branch, exactly as the paper's Python loop.
pub fn count_below_naive(pixels: &[u16], width: usize, rows: Range<usize>, cols: Range<usize>, threshold: u16) -> u32 {
    let mut count = 0;
    for r in rows {
        for c in cols.clone() {
            if pixels[r * width + c] < threshold {
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image() -> impl Strategy<Value = (usize, usize, Vec<u16>)> {
        (1usize..200, 1usize..40).prop_flat_map(|(w, h)| {
            // Mix of small values (near the threshold) and the full range.
            let px = prop_oneof![0u16..600, any::<u16>()];
            (Just(w), Just(h), proptest::collection::vec(px, w * h))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn kernel_matches_naive((w, h, px) in image(), t in prop_oneof![0u16..700, any::<u16>()],
                                a in 0usize..200, b in 0usize..200, c in 0usize..40, d in 0usize..40) {
            let cols = a.min(b) % (w + 1)..a.max(b).min(w);
            let cols = cols.start.min(cols.end)..cols.end;
            let rows = c.min(d).min(h)..c.max(d).min(h);
            prop_assert_eq!(count_below(&px, w, rows.clone(), cols.clone(), t),
                            count_below_naive(&px, w, rows, cols, t));
        }
    }

    #[test]
    fn kernel_flushes_before_lanes_overflow() {
        // One row 32*70000 wide, every pixel dark: each lane sees 70,000 ones, more than u16.
        let w = LANES * 70_000;
        let px = vec![0u16; w];
        assert_eq!(count_below(&px, w, 0..1, 0..w, 1), w as u32);
    }
}
