//! Which int8 matrix kernel tract uses on AVX-512 VNNI AMD cores (issue 17).
//!
//! Why: tract 0.23 chooses between its `avx512vnni_mmm_i32_16x16` (zmm) and `_8x8` (ymm) kernels
//! by timing a VPDPBUSD loop at both widths once per process (`tract_linalg::x86_64::fma_width`):
//! on a core that retires one 512-bit VPDPBUSD per cycle, as AMD Zen 4 / Zen 5 do (double-pumped),
//! the probe finds no throughput upside and takes 8x8. On our model's convolutions the 16x16
//! tile is faster all the same (fewer panel passes per MAC): on the development machine (AMD
//! EPYC, family 25 model 17, Zen 4) `bench_infer` with `TRACT_AVX512_FMA_UNITS=2` against `=1`,
//! interleaved, 1 thread, gave 85.2-91.6 against 95.5-96.6 ms a slice, and tract_probe's matrix
//! products 38 against 48-52 ms (figures in `docs/tract-int8-notes.md`, §7).
//!
//! What: on x86-64 Linux, on an AMD CPU with AVX-512 VNNI, [`apply`] installs the knob's value
//! `2` as a process-wide config default, *below* the environment: an operator's
//! `TRACT_AVX512_FMA_UNITS` still wins. Elsewhere (Intel, where the probe tells one-port client
//! cores from two-port servers; aarch64 boards, where the knob is inert) tract's own choice stays.
//! Outputs do not depend on the tile: both kernels compute the same exact i32 sums.
//!
//! On x86-64 CPUs with AVX2 and no VNNI, the pick is [`super::madd16`]'s own kernel and tier.

/// Set the 512-bit FMA-port knob for AMD AVX-512 VNNI cores (see the module docs). Returns the
/// value installed, if any. Idempotent; must run before tract first picks a kernel.
pub fn apply() -> Option<&'static str> {
    if super::madd16::active() {
        log::debug!("int8 matrix products: {}", super::madd16::NAME);
    }
    if !amd_with_avx512_vnni() {
        return None;
    }
    match tract_onnx::tract_core::knobs::set_config_global("TRACT_AVX512_FMA_UNITS", "2") {
        Ok(()) => Some("2"),
        Err(e) => {
            log::warn!("int8 kernel pick left to tract: {e:#}");
            None
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amd_with_avx512_vnni() -> bool {
    std::is_x86_feature_detected!("avx512vnni")
        && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("vendor_id"))
                .is_some_and(|l| l.contains("AuthenticAMD"))
        })
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amd_with_avx512_vnni() -> bool {
    false
}
