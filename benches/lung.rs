//! Lung mask and frame benchmarks (`cargo bench --bench lung`), per 512x512 slice:
//! - `lung/mask`: [`LungMasker::compute`] (air, outside, components, closing, holes, verdict);
//! - `lung/mask_and_frame_256`: the mask plus the framed 256x256 model input;
//! - `lung/select_kernel`: the selection rule's dark-pixel count on the same slice, for the
//!   ratio against what the appliance already does per slice.
//!
//! On a real mid-chest slice when ../shared/data is there, else on the generated chest phantom.

use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ctsentinel::classify::Preprocessing;
use ctsentinel::ingest::SliceDecoder;
use ctsentinel::lung::{phantom, LungFrame, LungInput, LungMasker, DEFAULT_INTERCEPT};
use ctsentinel::select::{count_below, DARK_BELOW, ROI_COLS, ROI_ROWS};

fn shared_ct16() -> Option<PathBuf> {
    let p = std::env::var_os("CTSENTINEL_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
        .join("ct16");
    p.is_dir().then_some(p)
}

/// (pixels, spacing): the COVID patient's slice 25 (0.748 mm), or the phantom at 0.7 mm.
fn one_slice() -> (Vec<u16>, f64) {
    if let Some(ct16) = shared_ct16() {
        let mut d = SliceDecoder::new();
        if let Ok(s) = d.decode(&ct16.join("covid/ctmd_P001/SR_1/IM00025.tif")) {
            return (s.pixels.to_vec(), 0.748046875);
        }
    }
    eprintln!("!!! ../shared/data missing: lung benchmark on the generated chest phantom");
    (
        phantom::render(&phantom::chest(), 512, 512, 0.7, DEFAULT_INTERCEPT),
        0.7,
    )
}

fn lung(c: &mut Criterion) {
    let (px, s) = one_slice();
    let input = LungInput::new(&px, 512, 512).with_spacing(Some(s));
    let pre = Preprocessing::HuWindow {
        center: -500.0,
        width: 1500.0,
        stored_intercept: -1024.0,
        frame: ctsentinel::classify::preprocess::Frame::Whole,
        outside: ctsentinel::classify::preprocess::Outside::Air,
        eight_bit: None,
    };
    let mut m = LungMasker::new();
    let mut f = LungFrame::default();
    let mut x = Vec::new();
    m.compute(&input, &mut f).unwrap();
    assert!(f.plausible.is_ok(), "benchmark slice: {:?}", f.plausible);

    let mut g = c.benchmark_group("lung");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mask", |b| b.iter(|| m.compute(black_box(&input), &mut f).unwrap()));
    g.bench_function("mask_and_frame_256", |b| {
        b.iter(|| {
            m.compute(black_box(&input), &mut f).unwrap();
            m.framed_input(&input, &f, &pre, 256, &mut x).unwrap();
            black_box(&x);
        })
    });
    g.bench_function("select_kernel", |b| {
        b.iter(|| count_below(black_box(&px), 512, ROI_ROWS, ROI_COLS, black_box(DARK_BELOW)))
    });
    g.finish();
}

criterion_group!(benches, lung);
criterion_main!(benches);
