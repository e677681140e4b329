//! Selection benchmarks (`cargo bench --bench select`):
//! - `roi_count/{vectorised,naive}`: the dark-pixel kernel on one 512x512 slice (25,000 ROI
//!   pixels per iteration; criterion reports elements/s).
//! - `select_series/all_shared`: decode + count + select of the five shared ct16 series
//!   (criterion reports series/s). `bench/compare_select.sh` runs this and the numpy peer
//!   (`bench/select_numpy.py`) in one go and prints the ratios quoted in the README.

use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ctsentinel::ingest::{self, SliceDecoder};
use ctsentinel::select::{count_below, count_below_naive, DARK_BELOW, ROI_COLS, ROI_PIXELS, ROI_ROWS};

fn shared_ct16() -> Option<PathBuf> {
    let p = std::env::var_os("CTSENTINEL_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
        .join("ct16");
    p.is_dir().then_some(p)
}

/// A real mid-chest slice when the shared data is there, else a deterministic noise image.
fn one_slice() -> Vec<u16> {
    if let Some(ct16) = shared_ct16() {
        let mut d = SliceDecoder::new();
        if let Ok(s) = d.decode(&ct16.join("covid/ctmd_P001/SR_1/IM00025.tif")) {
            return s.pixels.to_vec();
        }
    }
    eprintln!("!!! ../shared/data missing: kernel benchmark on synthetic noise, end-to-end skipped");
    let mut x = 0x9E37_79B9u32;
    (0..512 * 512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 2048) as u16
        })
        .collect()
}

fn kernel(c: &mut Criterion) {
    let px = one_slice();
    let mut g = c.benchmark_group("roi_count");
    g.throughput(Throughput::Elements(u64::from(ROI_PIXELS)));
    g.bench_function("vectorised", |b| {
        b.iter(|| count_below(black_box(&px), 512, ROI_ROWS, ROI_COLS, black_box(DARK_BELOW)))
    });
    g.bench_function("naive", |b| {
        b.iter(|| count_below_naive(black_box(&px), 512, ROI_ROWS, ROI_COLS, black_box(DARK_BELOW)))
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let Some(ct16) = shared_ct16() else { return };
    let mut series = Vec::new();
    for p in [
        "covid/ctmd_P001",
        "normal/ctmd_normal001",
        "cap/ctmd_cap001",
        "lungcancer/ldx_A0001",
    ] {
        series.extend(ingest::discover(&ct16.join(p)).expect("shared series"));
    }
    let mut g = c.benchmark_group("select_series");
    g.throughput(Throughput::Elements(series.len() as u64));
    g.sample_size(20);
    let mut dec = SliceDecoder::new();
    g.bench_function("all_shared", |b| {
        b.iter(|| {
            for s in &series {
                let r = ctsentinel::pipeline::select_series(s, &mut dec);
                assert!(r.rejected.is_none());
                black_box(r);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, kernel, end_to_end);
criterion_main!(benches);
