//! The binary morphology the mask is built with: border flood fill, 3x3 closing, hole filling,
//! on flat row-major masks with caller-owned scratch buffers (no allocation per slice).

/// The border pixels' indices, each once: top row, bottom row, then the left and right columns
/// between them.
pub(super) fn border_indices(w: usize, h: usize) -> impl Iterator<Item = usize> {
    let top = 0..w;
    let bottom = (if h > 1 { (h - 1) * w } else { w })..h * w;
    let sides = (1..h.saturating_sub(1)).flat_map(move |y| {
        let l = y * w;
        let r = y * w + w - 1;
        std::iter::once(l).chain((r != l).then_some(r))
    });
    top.chain(bottom).chain(sides)
}

/// Relabels the 4-connected region of `from` pixels containing `seed` to `to`; returns its size.
pub(super) fn flood(lab: &mut [u32], stack: &mut Vec<u32>, w: usize, h: usize, seed: usize, from: u32, to: u32) -> u64 {
    debug_assert_eq!(lab[seed], from);
    stack.clear();
    lab[seed] = to;
    stack.push(seed as u32);
    let mut count = 0u64;
    while let Some(i) = stack.pop() {
        let i = i as usize;
        count += 1;
        let (x, y) = (i % w, i / w);
        let mut visit = |j: usize| {
            if lab[j] == from {
                lab[j] = to;
                stack.push(j as u32);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    count
}

/// Step 4: closing with the 3x3 square over the in-image part of each neighbourhood, in place
/// (separable: a row pass and a column pass for the dilation, then the same for the erosion).
pub(crate) fn close3x3(mask: &mut [bool], tmp: &mut Vec<bool>, w: usize, h: usize) {
    tmp.clear();
    tmp.resize(w * h, false);
    // Dilation: OR over in-image neighbours.
    pass_rows(mask, tmp, w, |a, b, c| a | b | c, false);
    pass_cols(tmp, mask, w, h, |a, b, c| a | b | c, false);
    // Erosion: AND over in-image neighbours.
    pass_rows(mask, tmp, w, |a, b, c| a & b & c, true);
    pass_cols(tmp, mask, w, h, |a, b, c| a & b & c, true);
}

/// `dst[x] = op(src[x-1], src[x], src[x+1])` per row; neighbours outside the row read `pad`.
fn pass_rows(src: &[bool], dst: &mut [bool], w: usize, op: impl Fn(bool, bool, bool) -> bool, pad: bool) {
    for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
        for x in 0..w {
            let l = if x > 0 { s[x - 1] } else { pad };
            let r = if x + 1 < w { s[x + 1] } else { pad };
            d[x] = op(l, s[x], r);
        }
    }
}

/// `dst[y] = op(src[y-1], src[y], src[y+1])` per column; neighbours outside read `pad`.
fn pass_cols(src: &[bool], dst: &mut [bool], w: usize, h: usize, op: impl Fn(bool, bool, bool) -> bool, pad: bool) {
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let u = if y > 0 { src[i - w] } else { pad };
            let d = if y + 1 < h { src[i + w] } else { pad };
            dst[i] = op(u, src[i], d);
        }
    }
}

/// Step 5: every non-mask pixel not 4-connected through non-mask pixels to the border becomes
/// mask. `lab` and `stack` are scratch.
pub(crate) fn fill_holes(mask: &mut [bool], lab: &mut Vec<u32>, stack: &mut Vec<u32>, w: usize, h: usize) {
    const BG: u32 = 0;
    const REACHED: u32 = 2;
    lab.clear();
    lab.extend(mask.iter().map(|&m| if m { 1 } else { BG }));
    for i in border_indices(w, h) {
        if lab[i] == BG {
            flood(lab, stack, w, h, i, BG, REACHED);
        }
    }
    for (m, &l) in mask.iter_mut().zip(lab.iter()) {
        *m = l != REACHED;
    }
}
