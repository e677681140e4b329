//! Unit tests of the lung mask and frame on generated phantoms (`phantom.rs`).

use super::phantom::{chest, render, Ellipse, BODY, GROUND_GLASS, LEFT_LUNG, NODULE, RIGHT_LUNG, TRACHEA};
use super::*;

const PRE: Preprocessing = Preprocessing::HuWindow {
    center: -500.0,
    width: 1500.0,
    stored_intercept: -1024.0,
    frame: crate::classify::preprocess::Frame::Whole,
    outside: crate::classify::preprocess::Outside::Air,
    eight_bit: None,
};

fn frame_of(shapes: &[Ellipse], w: usize, h: usize, s: f64, spacing: Option<f64>) -> (Vec<u16>, LungFrame) {
    let px = render(shapes, w, h, s, DEFAULT_INTERCEPT);
    let f = LungMasker::new()
        .frame(&LungInput::new(&px, w, h).with_spacing(spacing))
        .unwrap();
    (px, f)
}

/// Pixel column (or row) whose centre is at `mm` from the image centre.
fn px_at(mm: f64, n: usize, s: f64) -> usize {
    (mm / s + n as f64 / 2.0 - 0.5).round() as usize
}

fn at(f: &LungFrame, x: usize, y: usize) -> bool {
    f.mask[y * f.width + x]
}

#[test]
fn chest_phantom_gives_two_plausible_lungs_with_the_drawn_box() {
    let s = 0.7;
    let (_, f) = frame_of(&chest(), 512, 512, s, Some(s));
    assert_eq!(f.plausible, Ok(()), "{:?}", f.stats);
    assert!(
        f.stats.components[0] > 0 && f.stats.components[1] > 0,
        "two components kept"
    );
    let b = f.bbox.unwrap();
    // The union of the two lung ellipses spans x -125..120 mm, y -85..75 mm.
    let near = |got: usize, want: f64| (got as f64 - want).abs() <= 1.0;
    let edge = |mm: f64| mm / s + 256.0;
    assert!(near(b.x0, edge(-125.0)), "{b:?}");
    assert!(near(b.x1, edge(120.0)), "{b:?}");
    assert!(near(b.y0, edge(-85.0)), "{b:?}");
    assert!(near(b.y1, edge(75.0)), "{b:?}");
    // Each lung's area is close to its ellipse's (ground glass and nodule inside included).
    let right = std::f64::consts::PI * 55.0 * 80.0 / (s * s);
    let left = std::f64::consts::PI * 50.0 * 78.0 / (s * s);
    let total = f.stats.lung_area as f64;
    assert!(
        (total / (right + left) - 1.0).abs() < 0.01,
        "{total} vs {}",
        right + left
    );
    assert!((f.stats.left as f64 / right - 1.0).abs() < 0.01, "{:?}", f.stats);
}

#[test]
fn nodule_and_ground_glass_inside_a_lung_are_in_the_mask() {
    let s = 0.7;
    let shapes = chest();
    let (px, f) = frame_of(&shapes, 512, 512, s, Some(s));
    let n = shapes[NODULE];
    let (x, y) = (px_at(n.cx, 512, s), px_at(n.cy, 512, s));
    assert_eq!(px[y * 512 + x], 1064, "the nodule is soft tissue, not air");
    assert!(at(&f, x, y), "nodule centre filled into the mask");
    assert!(at(&f, px_at(70.0, 512, s), px_at(20.0, 512, s)), "ground glass");
}

#[test]
fn air_outside_the_body_the_trachea_and_the_table_pockets_are_not_lung() {
    let s = 0.7;
    let shapes = chest();
    let (px, f) = frame_of(&shapes, 512, 512, s, Some(s));
    assert!(!at(&f, 0, 0) && !at(&f, 511, 511) && !at(&f, 256, 5), "outside air");
    let t = shapes[TRACHEA];
    assert!(!at(&f, px_at(t.cx, 512, s), px_at(t.cy, 512, s)), "trachea");
    assert!(!at(&f, px_at(-60.0, 512, s), px_at(135.0, 512, s)), "table pocket");
    // Nothing in the mask outside the body ellipse.
    let body = shapes[BODY];
    for (i, &m) in f.mask.iter().enumerate() {
        let (x, y) = (i % 512, i / 512);
        let dx = ((x as f64 + 0.5 - 256.0) * s - body.cx) / body.rx;
        let dy = ((y as f64 + 0.5 - 256.0) * s - body.cy) / body.ry;
        assert!(!m || dx * dx + dy * dy < 1.0, "mask pixel ({x}, {y}) outside the body");
    }
    assert_eq!(px[0], 24);
}

#[test]
fn chest_without_lungs_has_no_lungs() {
    let mut shapes = chest();
    shapes.retain(|e| e.hu != -850 && e.hu != -550);
    let (_, f) = frame_of(&shapes, 512, 512, 0.7, Some(0.7));
    assert_eq!(f.plausible, Err(Implausible::NoLungs));
    assert!(f.bbox.is_none() && f.frame.is_none() && !f.mask.iter().any(|&m| m));
}

#[test]
fn all_air_and_all_tissue_slices_are_implausible() {
    let air = vec![24u16; 128 * 96];
    let f = LungMasker::new().frame(&LungInput::new(&air, 128, 96)).unwrap();
    assert_eq!(f.plausible, Err(Implausible::NoLungs));
    assert_eq!(f.stats.body_area, 0);
    let tissue = vec![1064u16; 128 * 96];
    let f = LungMasker::new().frame(&LungInput::new(&tissue, 128, 96)).unwrap();
    assert_eq!(f.plausible.unwrap_err().code(), "field_of_view_cuts_body");
}

#[test]
fn one_lung_is_implausible() {
    let mut shapes = chest();
    shapes.remove(GROUND_GLASS); // first: it lies in the left lung, and alone it is air in tissue
    shapes.remove(LEFT_LUNG);
    let (_, f) = frame_of(&shapes, 512, 512, 0.7, Some(0.7));
    assert!(
        matches!(f.plausible, Err(Implausible::OneLung { smaller: 0, .. })),
        "{:?}",
        f.plausible
    );
}

#[test]
fn a_tiny_second_lung_is_one_lung() {
    // 12 x 16 mm: 603 mm², above the component minimum, so it is kept, yet far too small.
    let mut shapes = chest();
    shapes.remove(GROUND_GLASS);
    shapes[LEFT_LUNG] = Ellipse::new(70.0, -5.0, 12.0, 16.0, -850);
    let (_, f) = frame_of(&shapes, 512, 512, 0.7, Some(0.7));
    assert!(f.stats.components[1] > 0, "kept: {:?}", f.stats);
    assert!(
        matches!(f.plausible, Err(Implausible::OneLung { .. })),
        "{:?}",
        f.plausible
    );
}

#[test]
fn a_component_under_the_minimum_area_is_dropped() {
    // 10 mm radius: 314 mm² < 500 mm².
    let mut shapes = chest();
    shapes.remove(GROUND_GLASS);
    shapes[LEFT_LUNG] = Ellipse::new(70.0, -5.0, 10.0, 10.0, -850);
    let (_, f) = frame_of(&shapes, 512, 512, 0.7, Some(0.7));
    assert_eq!(f.stats.components[1], 0, "{:?}", f.stats);
    assert!(!at(&f, px_at(70.0, 512, 0.7), px_at(-5.0, 512, 0.7)));
}

#[test]
fn lungs_touching_the_border_of_a_narrow_field_of_view_are_implausible() {
    // The same chest reconstructed over 179 mm: the lungs cross the left and right edges (and
    // join the outside air), the chest wall fills the top and bottom rows.
    let s = 0.35;
    let (px, f) = frame_of(&chest(), 512, 512, s, Some(s));
    assert!(
        px[256 * 512] < 624 && px[256 * 512 + 511] < 624,
        "lung air on both side edges"
    );
    assert!(
        matches!(f.plausible, Err(Implausible::FieldOfViewCutsBody { .. })),
        "{:?} {:?}",
        f.plausible,
        f.stats
    );
}

#[test]
fn joined_lungs_are_two_lungs_not_one() {
    // A bridge of lung between the two lungs (as when the anterior junction line is thinner
    // than a pixel): one component spanning both sides of the body is still a pair of lungs.
    let mut shapes = chest();
    shapes.push(Ellipse::new(0.0, 30.0, 40.0, 6.0, -850));
    let (_, f) = frame_of(&shapes, 512, 512, 0.7, Some(0.7));
    assert_eq!(f.stats.components[1], 0, "one joined component: {:?}", f.stats);
    assert_eq!(f.plausible, Ok(()));
}

#[test]
fn lungs_far_too_small_or_too_large_for_the_body() {
    // Two 14 mm lungs (615 mm² each) in the standard body: under 1/20 of it.
    let mut small = chest();
    small.remove(GROUND_GLASS);
    small[RIGHT_LUNG] = Ellipse::new(-70.0, -5.0, 14.0, 14.0, -850);
    small[LEFT_LUNG] = Ellipse::new(70.0, -5.0, 14.0, 14.0, -850);
    let (_, f) = frame_of(&small, 512, 512, 0.7, Some(0.7));
    assert!(
        matches!(f.plausible, Err(Implausible::LungsTooSmall { .. })),
        "{:?}",
        f.plausible
    );
    // A 7-8 mm shell of tissue around one huge (joined) lung: 89% of the body.
    let large = vec![
        Ellipse::new(0.0, 0.0, 160.0, 115.0, 40),
        Ellipse::new(0.0, 0.0, 152.0, 108.0, -850),
    ];
    let (_, f) = frame_of(&large, 512, 512, 0.7, Some(0.7));
    assert!(
        matches!(f.plausible, Err(Implausible::LungsTooLarge { .. })),
        "{:?}",
        f.plausible
    );
}

#[test]
fn equal_components_are_kept_in_raster_order_of_their_first_pixel() {
    // Three identical discs on one row, 160 px apart at 0.625 mm/px (so their pixel counts are
    // equal, not just nearly): the left and middle ones are kept.
    let s = 0.625;
    let mut shapes = vec![Ellipse::new(0.0, 0.0, 150.0, 100.0, 40)];
    for cx in [-100.0, 0.0, 100.0] {
        shapes.push(Ellipse::new(cx, 0.0, 30.0, 30.0, -850));
    }
    let (_, f) = frame_of(&shapes, 512, 512, s, Some(s));
    assert_eq!(f.stats.components[0], f.stats.components[1]);
    let y = px_at(0.0, 512, s);
    assert!(at(&f, px_at(-100.0, 512, s), y) && at(&f, px_at(0.0, 512, s), y));
    assert!(
        !at(&f, px_at(100.0, 512, s), y),
        "the third (latest first pixel) is dropped"
    );
}

#[test]
fn non_square_non_512_slices_work() {
    let s = 1.2;
    let (w, h) = (300, 220);
    let (_, f) = frame_of(&chest(), w, h, s, Some(s));
    assert_eq!(f.plausible, Ok(()), "{:?}", f.stats);
    assert_eq!(f.mask.len(), w * h);
    let b = f.bbox.unwrap();
    assert!((b.x0 as f64 - (-125.0 / s + 150.0)).abs() <= 1.0, "{b:?}");
    assert!((b.y1 as f64 - (75.0 / s + 110.0)).abs() <= 1.0, "{b:?}");
    let mut out = Vec::new();
    let px = render(&chest(), w, h, s, DEFAULT_INTERCEPT);
    LungMasker::new()
        .framed_input(&LungInput::new(&px, w, h).with_spacing(Some(s)), &f, &PRE, 96, &mut out)
        .unwrap();
    assert_eq!(out.len(), 96 * 96);
}

#[test]
fn frame_is_fixed_in_millimetres_and_centred_on_the_lungs() {
    for s in [0.59, 0.7, 0.84] {
        let (_, f) = frame_of(&chest(), 512, 512, s, Some(s));
        let fr = f.frame.unwrap();
        assert_eq!(fr.side, (FRAME_MM / s).ceil() as usize, "spacing {s}");
        let b = f.bbox.unwrap();
        let (cx, cy) = (fr.x0 as f64 + fr.side as f64 / 2.0, fr.y0 as f64 + fr.side as f64 / 2.0);
        assert!((cx - (b.x0 + b.x1) as f64 / 2.0).abs() <= 0.5 && (cy - (b.y0 + b.y1) as f64 / 2.0).abs() <= 0.5);
    }
    // Lungs wider than the frame grow it to the lungs plus the margin.
    let big = vec![
        Ellipse::new(0.0, 0.0, 240.0, 130.0, 40),
        Ellipse::new(-110.0, 0.0, 100.0, 90.0, -850),
        Ellipse::new(110.0, 0.0, 100.0, 90.0, -850),
    ];
    let (_, f) = frame_of(&big, 800, 512, 0.7, Some(0.7));
    let (b, fr) = (f.bbox.unwrap(), f.frame.unwrap());
    assert_eq!(fr.side, b.width() + 2 * margin_px(0.7));
    assert!(fr.side > frame_px(0.7));
}

#[test]
fn spacing_normalisation_gives_the_same_input_at_different_fields_of_view() {
    // The same anatomy at 0.6 and 0.8 mm/px (fields of view 307 and 410 mm).
    let size = 128;
    let framed = |s: f64, spacing: Option<f64>| {
        let (px, f) = frame_of(&chest(), 512, 512, s, spacing);
        let mut out = Vec::new();
        LungMasker::new()
            .framed_input(
                &LungInput::new(&px, 512, 512).with_spacing(spacing),
                &f,
                &PRE,
                size,
                &mut out,
            )
            .unwrap();
        out
    };
    let mad = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    let same = mad(&framed(0.6, Some(0.6)), &framed(0.8, Some(0.8)));
    let unknown = mad(&framed(0.6, None), &framed(0.8, None));
    // Measured: 0.0002 with the spacing, 0.021 without it.
    assert!(same < 0.002, "known spacing: mean abs diff {same}");
    assert!(
        unknown > 10.0 * same,
        "without spacing the scale differs: {unknown} vs {same}"
    );
}

#[test]
fn framed_input_is_air_outside_the_lungs_and_the_window_inside() {
    let s = 0.7;
    let (px, f) = frame_of(&chest(), 512, 512, s, Some(s));
    let fr = f.frame.unwrap();
    let size = fr.side; // no resampling: one model pixel per frame pixel
    let mut out = Vec::new();
    LungMasker::new()
        .framed_input(
            &LungInput::new(&px, 512, 512).with_spacing(Some(s)),
            &f,
            &PRE,
            size,
            &mut out,
        )
        .unwrap();
    let air = (-1000.0 + 1250.0) / 1500.0;
    let lung = (-850.0 + 1250.0) / 1500.0;
    let at_mm = |xm: f64, ym: f64| {
        let (x, y) = (px_at(xm, 512, s) as i64 - fr.x0, px_at(ym, 512, s) as i64 - fr.y0);
        out[y as usize * size + x as usize]
    };
    assert!((at_mm(-70.0, -40.0) - lung).abs() < 1e-6, "lung");
    assert!((at_mm(0.0, 0.0) - air).abs() < 1e-6, "mediastinum is masked to air");
    assert!((at_mm(-150.0, 0.0) - air).abs() < 1e-6, "chest wall is masked to air");
    assert!((out[0] - air).abs() < 1e-6, "frame corner");
    assert!(out.iter().all(|&v| v >= air - 1e-6), "nothing below air");
}

#[test]
fn the_masker_gives_the_same_answers_when_reused_across_sizes() {
    let mut m = LungMasker::new();
    let a = render(&chest(), 512, 512, 0.7, DEFAULT_INTERCEPT);
    let b = render(&chest(), 300, 220, 1.2, DEFAULT_INTERCEPT);
    let ia = LungInput::new(&a, 512, 512).with_spacing(Some(0.7));
    let ib = LungInput::new(&b, 300, 220).with_spacing(Some(1.2));
    let fa = m.frame(&ia).unwrap();
    let fb = m.frame(&ib).unwrap();
    let mut out = LungFrame::default();
    m.compute(&ia, &mut out).unwrap();
    assert_eq!(out, fa);
    m.compute(&ib, &mut out).unwrap();
    assert_eq!(out, fb);
    assert_eq!(fb, LungMasker::new().frame(&ib).unwrap());
    let (mut x, mut y) = (Vec::new(), Vec::new());
    m.framed_input(&ia, &fa, &PRE, 64, &mut x).unwrap();
    m.framed_input(&ib, &fb, &PRE, 64, &mut y).unwrap();
    let mut z = Vec::new();
    LungMasker::new().framed_input(&ia, &fa, &PRE, 64, &mut z).unwrap();
    assert_eq!(x, z);
}

#[test]
fn intercept_shifts_the_air_threshold() {
    // Stored values with intercept 0 (stored = HU, clamped at 0 by the renderer, so shift).
    let px = render(&chest(), 256, 256, 1.4, DEFAULT_INTERCEPT);
    let shifted: Vec<u16> = px.iter().map(|&v| v + 1000).collect();
    let mut m = LungMasker::new();
    let a = m.frame(&LungInput::new(&px, 256, 256).with_spacing(Some(1.4))).unwrap();
    let b = m
        .frame(
            &LungInput::new(&shifted, 256, 256)
                .with_spacing(Some(1.4))
                .with_intercept(-2024.0),
        )
        .unwrap();
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.plausible, Ok(()));
    assert_eq!(air_stored(-2024.0), 1024);
}

#[test]
fn closing_bridges_a_one_pixel_gap_and_never_removes_border_pixels() {
    let (w, h) = (7, 5);
    let mut m = vec![false; w * h];
    for x in [0, 1, 2, 4, 5, 6] {
        m[2 * w + x] = true; // a row with a gap at x = 3, touching both side edges
    }
    m[0] = true; // a lone corner pixel
    close3x3(&mut m, &mut Vec::new(), w, h);
    // Row 2 whole (gap bridged, edge pixels kept: outside neighbours never veto the erosion),
    // the corner, and (0, 1): its in-image neighbourhood is all inside the dilation.
    let mut want = vec![false; w * h];
    (0..w).for_each(|x| want[2 * w + x] = true);
    want[0] = true;
    want[w] = true;
    assert_eq!(m, want);
}

#[test]
fn fill_holes_fills_enclosed_background_only() {
    // A ring with a hole, and a U open to the border.
    let rows = ["#####.", "#..#..", "#####.", "......", "#.#...", "###..."];
    let w = 6;
    let mut m: Vec<bool> = rows.concat().chars().map(|c| c == '#').collect();
    fill_holes(&mut m, &mut Vec::new(), &mut Vec::new(), w, rows.len());
    assert!(m[w + 1] && m[w + 2], "ring hole filled");
    assert!(!m[4 * w + 1], "a U open upwards is not a hole");
    assert!(!m[w + 4], "outside");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let px = vec![0u16; 10];
    let mut m = LungMasker::new();
    assert!(matches!(
        m.frame(&LungInput::new(&px, 3, 3)),
        Err(LungError::Shape { .. })
    ));
    assert!(matches!(
        m.frame(&LungInput::new(&[], 0, 3)),
        Err(LungError::Empty { .. })
    ));
    let px = vec![0u16; 9];
    let i = LungInput::new(&px, 3, 3);
    assert_eq!(
        m.frame(&i.with_spacing(Some(0.0))).unwrap_err(),
        LungError::Spacing(0.0)
    );
    assert!(matches!(
        m.frame(&i.with_spacing(Some(f64::NAN))),
        Err(LungError::Spacing(_))
    ));
    assert!(matches!(
        m.frame(&i.with_intercept(f64::INFINITY)),
        Err(LungError::Intercept(_))
    ));
    let f = m.frame(&i).unwrap();
    assert_eq!(m.framed_input(&i, &f, &PRE, 8, &mut Vec::new()), Err(LungError::NoMask));
    let other = vec![0u16; 16];
    assert!(matches!(
        m.framed_input(&LungInput::new(&other, 4, 4), &f, &PRE, 8, &mut Vec::new()),
        Err(LungError::Mismatch { .. })
    ));
}

#[test]
fn outside_keep_frames_the_whole_slice_as_an_all_lung_mask_would() {
    use crate::classify::preprocess::Outside;
    let (px, f) = frame_of(&chest(), 512, 512, 0.7, Some(0.7));
    let input = LungInput::new(&px, 512, 512).with_spacing(Some(0.7));
    let keep = match PRE {
        Preprocessing::HuWindow {
            center,
            width,
            stored_intercept,
            frame,
            ..
        } => Preprocessing::HuWindow {
            center,
            width,
            stored_intercept,
            frame,
            outside: Outside::Keep,
            eight_bit: None,
        },
        p => p,
    };
    let mut m = LungMasker::new();
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    m.framed_input(&input, &f, &keep, 96, &mut a).unwrap();
    let mut all = f.clone();
    all.mask.iter_mut().for_each(|v| *v = true);
    m.framed_input(&input, &all, &PRE, 96, &mut b).unwrap();
    assert_eq!(a, b, "keep = the frame of an all-true mask");
    m.framed_input(&input, &f, &PRE, 96, &mut c).unwrap();
    assert_ne!(a, c, "the body wall is kept, not turned to air");
}
