//! One core's peak int8 and fp32 multiply-accumulate rates on an x86-64 CPU with AVX-512 VNNI,
//! measured: 12 independent chains of 512-bit VPDPBUSD (64 u8 x i8 MACs each) and of 512-bit
//! VFMADD (16 fp32 FMAs each), enough to cover their latency, so the loop runs at the issue
//! rate. Why measured: a server core boosts well above the "cpu MHz" /proc/cpuinfo gives, and
//! whether one or two 512-bit units do the work differs between Zen 4 (one, double-pumped) and
//! Zen 5 (two), so a per-cycle figure times the nominal clock would misstate the peak.
//! Built and run by `bench/project_boards.py` (rustc -O -C target-cpu=native); prints JSON.
use std::arch::x86_64::*;
use std::time::Instant;

#[target_feature(enable = "avx512f,avx512vnni")]
fn vnni(iters: u64) -> i32 {
    let (a, b) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_dpbusd_epi32(*x, a, b);
        }
    }
    acc.iter().fold(0, |s, x| s.wrapping_add(_mm512_reduce_add_epi32(*x)))
}

#[target_feature(enable = "avx512f")]
fn fma(iters: u64) -> f32 {
    let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    let mut acc = [_mm512_set1_ps(0.5); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|x| _mm512_reduce_add_ps(*x)).sum()
}

fn main() {
    assert!(
        is_x86_feature_detected!("avx512vnni"),
        "this CPU has no AVX-512 VNNI: peak_x86 measures only that"
    );
    let iters = 50_000_000u64;
    let (mut int8, mut fp32) = (0f64, 0f64);
    for _ in 0..3 {
        let t = Instant::now();
        // SAFETY: AVX-512F and VNNI were detected above.
        let r = unsafe { vnni(iters) };
        int8 = int8.max(iters as f64 * 12.0 * 64.0 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        // SAFETY: as above.
        let f = unsafe { fma(iters) };
        fp32 = fp32.max(iters as f64 * 12.0 * 16.0 / t.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box((r, f));
    }
    println!("{{\"int8_gmacs\": {int8:.1}, \"fp32_gfmas\": {fp32:.1}}}");
}
