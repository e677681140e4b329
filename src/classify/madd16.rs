//! An exact int8 matrix kernel for x86-64 CPUs with AVX2 but no VNNI, plugged into tract
//! (issue 17).
//!
//! Why: on such CPUs (AMD Zen 1/2/3, Intel Haswell to Skylake, which is what many clinic
//! boxes and CI runners are) tract 0.23's only integer tier is `avx2_mmm_i32_8x8`, which widens
//! every i8 operand to i32 and multiplies with VPMULLD: one ymm VPMULLD does 8 multiply-adds.
//! On the development machine's Zen 1 EPYC (family 23 model 1) that made the int8 model 2.8x
//! *slower* than the same network in fp32 (`bench/compare_infer.sh 2 5`: 1,210.6 against
//! 425.7 ms a slice, 93% of it in that kernel; `docs/tract-int8-notes.md` §7). ONNX Runtime's
//! fast path on these CPUs (VPMADDUBSW) is no way out: it saturates at int16 and changes results.
//!
//! What: the same 8x8 tile and the same packings as tract's AVX2 kernel, with the inner loop on
//! VPMADDWD: two k steps of eight rows are interleaved and sign-extended to i16, and one VPMADDWD
//! per column multiplies and adds the pair into i32 — 16 multiply-adds an instruction, and exact,
//! since |i8 x i8| + |i8 x i8| <= 2^15 fits the i32 lane with room to spare. The fused epilogue
//! (bias, zero-point corrections, requantization, clamps, store) is tract's generic semantics,
//! op for op, so every output equals tract's own kernel's bit for bit: the unit tests here run
//! both kernels on the same operands and epilogues, and `tests/int8_kernel.rs` compares the
//! whole model's probabilities.
//!
//! How it is chosen: [`MADD_TIER`] is a tract dispatch tier (tract collects tiers and kernels
//! with `inventory`) that speaks only for i32 accumulators on x86-64 with AVX2 and without AVX-512
//! VNNI or AVX-VNNI, where VPDPBUSD kernels are faster; everywhere else it is silent and tract's
//! own choice stands (aarch64 boards: SDOT / SMLAL). `CTSENTINEL_AVX2_MADD=0` in the environment
//! silences it, which is how benchmarks time tract's own kernel beside it in the same run.
//!
//! `unsafe`: a tract kernel is called with raw pointers into packed panels and output tiles
//! (`FusedKerSpec`), so its body dereferences them; the AVX2 body is a `#[target_feature]`
//! function, reached only through tract's dispatch, which runs a kernel only where its declared
//! instruction set ([`Isa::X86_64Avx2`]) is present. Both are fenced below with `// SAFETY:`.
#![allow(unsafe_code)]

use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
use tract_linalg::mmm::{DynKernel, FusedKerSpec, MatMatMul, OutputStoreKer, Query, Suitable};
use tract_linalg::mmm_routines::MmmRoutine;
use tract_linalg::mmm_tiers::MmmTier;
use tract_linalg::pack::PackedFormat;
use tract_linalg::{ScaleShiftAndRound, Scaler};
use tract_onnx::prelude::DatumType;

/// The kernel's name, as tract reports it (`tract_probe`, the self-test's kernel line).
pub const NAME: &str = "ctsentinel_avx2_madd_i32_8x8";

const MR: usize = 8;
const NR: usize = 8;

/// The environment switch that hands the choice back to tract (`0`, `false`, `off`, `no`).
pub const ENV_SWITCH: &str = "CTSENTINEL_AVX2_MADD";

/// The kernel as tract sees it: tile, packings (identical to `avx2_mmm_i32_8x8`'s, so tract's
/// im2col and weight packing need no change), stores, instruction set.
pub fn kernel() -> DynKernel<MR, NR, i32> {
    let mut k = DynKernel::<MR, NR, i32>::new(
        NAME,
        run,
        PackedFormat::new(DatumType::I32, MR, 256),
        PackedFormat::new(DatumType::I32, NR, 4),
    )
    .with_packing(
        PackedFormat::new(DatumType::I8, MR, 256),
        PackedFormat::new(DatumType::I8, NR, 4),
    )
    .with_store::<i8>()
    .with_isa(IsaReq::ANY.needing(&[Isa::X86_64Avx2]))
    // Switched off, it must lose every tie too (tract's fallback ranks kernels by preference).
    .with_boost(|| {
        if enabled() {
            0
        } else {
            tract_linalg::isa::NEVER_PREFERRED
        }
    });
    k.arch = Some(Arch::X86_64);
    k.built = cfg!(target_arch = "x86_64");
    k
}

fn make() -> Box<dyn MatMatMul> {
    kernel().mmm()
}

inventory::submit! {
    MmmRoutine { make }
}

/// Whether the tier speaks on a machine: AVX2 and no VNNI of either width.
pub fn applies(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx2) && !isa.has(Isa::X86_64Avx512Vnni) && !isa.has(Isa::X86_64AvxVnni)
}

/// Whether the environment leaves the tier on (see [`ENV_SWITCH`]).
pub fn enabled() -> bool {
    match std::env::var(ENV_SWITCH) {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"),
        Err(_) => true,
    }
}

/// True when tract will run this kernel for the model's int8 products on this machine.
pub fn active() -> bool {
    cfg!(target_arch = "x86_64") && applies(&tract_linalg::isa::native()) && enabled()
}

fn preferred(_isa: &IsaSet, dt: DatumType, query: &Query, _suitable: &[Suitable]) -> Option<&'static str> {
    match (dt, query.n) {
        // A matrix-vector product keeps tract's own pick, as its AVX2 tier does.
        (DatumType::I32, Some(1)) => None,
        (DatumType::I32, _) if enabled() => Some(NAME),
        _ => None,
    }
}

/// The dispatch tier. Precedence 9 is above every tract x86-64 tier (1-8); it never meets the
/// VNNI and AMX tiers, which apply only where [`applies`] is false.
pub const MADD_TIER: MmmTier = MmmTier {
    arch: Some(Arch::X86_64),
    precedence: 9,
    name: "ctsentinel-avx2-madd",
    applies,
    preferred,
};

inventory::submit! {
    MADD_TIER
}

/// The tile, column-major: `t[col][row]`.
type Tile = [[i32; MR]; NR];

/// tract's kernel entry: interpret the fused op list on one 8x8 tile. 0 is success; 1 an op
/// this kernel does not implement (tract then reports an error, never a wrong number).
///
/// # Safety
/// Every pointer in `ops` must be valid for the tile it describes, as tract guarantees for the
/// kernels it dispatches; the AVX2 matrix product needs a CPU with AVX2 (the kernel's `isa`).
unsafe fn run(ops: &[FusedKerSpec<i32>]) -> isize {
    let mut t: Tile = [[0; MR]; NR];
    for op in ops {
        // SAFETY: the pointers come from tract's op list for this tile (see the fn's contract).
        let status = unsafe { apply(&mut t, op) };
        match status {
            Step::Next => {}
            Step::Done => return 0,
            Step::Unsupported => return 1,
        }
    }
    0
}

enum Step {
    Next,
    Done,
    Unsupported,
}

fn each(t: &mut Tile, f: impl Fn(usize, usize, i32) -> i32) {
    for (c, col) in t.iter_mut().enumerate() {
        for (r, x) in col.iter_mut().enumerate() {
            *x = f(r, c, *x);
        }
    }
}

/// One op of the epilogue, with tract's generic kernel's semantics (`tract_linalg::generic::mmm`:
/// scalar and per-row/per-column ops take the operand first, `Sub` is operand minus tile,
/// `SubF` tile minus operand), wrapping as tract's assembly does.
unsafe fn apply(t: &mut Tile, op: &FusedKerSpec<i32>) -> Step {
    use FusedKerSpec as F;
    // SAFETY (whole body): pointers as in `run`'s contract; row vectors hold MR values, column
    // vectors NR, tiles reach row < MR, col < NR through their strides.
    unsafe {
        match *op {
            F::Done => return Step::Done,
            F::Clear => *t = [[0; MR]; NR],
            F::LoadTile(col_major, _) => each(t, |r, c, _| *col_major.add(c * MR + r)),
            F::ScalarMin(m) => each(t, |_, _, x| m.min(x)),
            F::ScalarMax(m) => each(t, |_, _, x| m.max(x)),
            F::ScalarAdd(m) => each(t, |_, _, x| m.wrapping_add(x)),
            F::ScalarMul(m) => each(t, |_, _, x| m.wrapping_mul(x)),
            F::ScalarSub(m) => each(t, |_, _, x| m.wrapping_sub(x)),
            F::ScalarSubF(m) => each(t, |_, _, x| x.wrapping_sub(m)),
            F::LeakyRelu(m) => each(t, |_, _, x| if x > 0 { x } else { m.wrapping_mul(x) }),
            F::PerRowMin(p) => each(t, |r, _, x| (*p.add(r)).min(x)),
            F::PerRowMax(p) => each(t, |r, _, x| (*p.add(r)).max(x)),
            F::PerRowAdd(p) => each(t, |r, _, x| (*p.add(r)).wrapping_add(x)),
            F::PerRowMul(p) => each(t, |r, _, x| (*p.add(r)).wrapping_mul(x)),
            F::PerRowSub(p) => each(t, |r, _, x| (*p.add(r)).wrapping_sub(x)),
            F::PerRowSubF(p) => each(t, |r, _, x| x.wrapping_sub(*p.add(r))),
            F::PerColMin(p) => each(t, |_, c, x| (*p.add(c)).min(x)),
            F::PerColMax(p) => each(t, |_, c, x| (*p.add(c)).max(x)),
            F::PerColAdd(p) => each(t, |_, c, x| (*p.add(c)).wrapping_add(x)),
            F::PerColMul(p) => each(t, |_, c, x| (*p.add(c)).wrapping_mul(x)),
            F::PerColSub(p) => each(t, |_, c, x| (*p.add(c)).wrapping_sub(x)),
            F::PerColSubF(p) => each(t, |_, c, x| x.wrapping_sub(*p.add(c))),
            F::AddRowColProducts(rows, cols) => {
                each(t, |r, c, x| x.wrapping_add((*rows.add(r)).wrapping_mul(*cols.add(c))))
            }
            F::ShiftLeft(s) => each(t, |_, _, x| x.q_shl(s)),
            F::RoundingShiftRight(s, rp) => each(t, |_, _, x| x.q_shr(s, rp)),
            F::QScale(shift, rp, mult) => {
                let scaler = Scaler::from_fuse_params(shift, rp, mult);
                each(t, |_, _, x| x.q_scale(scaler))
            }
            F::AddUnicast(o) => match o.item_size {
                1 => each(t, |r, c, x| x.wrapping_add(i32::from(*at::<i8>(&o, r, c)))),
                4 => each(t, |r, c, x| x.wrapping_add(*at::<i32>(&o, r, c))),
                _ => return Step::Unsupported,
            },
            F::Store(o) => match o.item_size {
                // The low bytes, as tract's generic store: the epilogue has clamped already.
                1 => store::<u8>(t, &o, |x| x as u8),
                2 => store::<u16>(t, &o, |x| x as u16),
                4 => store::<i32>(t, &o, |x| x),
                _ => return Step::Unsupported,
            },
            F::AddMatMul { k, pa, pb, packing } => match packing {
                1 => add_mat_mul_i8(t, pa, pb, k),
                0 => add_mat_mul_i32(t, pa as *const i32, pb as *const i32, k),
                _ => return Step::Unsupported,
            },
        }
    }
    Step::Next
}

/// The element at (row, col) of an output-store view.
unsafe fn at<T>(o: &OutputStoreKer, r: usize, c: usize) -> *const T {
    // SAFETY: the view covers the tile (see `apply`).
    unsafe {
        o.ptr
            .offset(o.row_byte_stride * r as isize + o.col_byte_stride * c as isize) as _
    }
}

unsafe fn store<T: Copy>(t: &Tile, o: &OutputStoreKer, cast: impl Fn(i32) -> T) {
    for (c, col) in t.iter().enumerate() {
        for (r, x) in col.iter().enumerate() {
            // SAFETY: the view covers the tile (see `apply`); tract's stores may be unaligned.
            unsafe { (at::<T>(o, r, c) as *mut T).write_unaligned(cast(*x)) }
        }
    }
}

/// Packing 0 (i32 operands): tract's generic loop, for completeness; the model never asks.
unsafe fn add_mat_mul_i32(t: &mut Tile, pa: *const i32, pb: *const i32, k: usize) {
    for ik in 0..k {
        for (c, col) in t.iter_mut().enumerate() {
            for (r, x) in col.iter_mut().enumerate() {
                // SAFETY: packed panels of k x MR and k x NR values.
                let (a, b) = unsafe { (*pa.add(ik * MR + r), *pb.add(ik * NR + c)) };
                *x = x.wrapping_add(a.wrapping_mul(b));
            }
        }
    }
}

/// Packing 1 (i8 x i8): the VPMADDWD loop where the CPU has AVX2, tract's generic loop otherwise
/// (only reachable by calling the kernel by hand: tract dispatches it only with AVX2).
unsafe fn add_mat_mul_i8(t: &mut Tile, pa: *const u8, pb: *const u8, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above); panels as in `apply`.
        unsafe { avx2::add_mat_mul(t, pa, pb, k) };
        return;
    }
    for ik in 0..k {
        for (c, col) in t.iter_mut().enumerate() {
            for (r, x) in col.iter_mut().enumerate() {
                // SAFETY: packed panels of k x MR and k x NR bytes.
                let (a, b) = unsafe { (*pa.add(ik * MR + r) as i8, *pb.add(ik * NR + c) as i8) };
                *x = x.wrapping_add(i32::from(a) * i32::from(b));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, MR, NR};
    use std::arch::x86_64::*;

    /// `t += A·B` over k steps of packed panels: A holds MR i8 per k step, B NR i8 per k step.
    ///
    /// Two k steps at a time: the 16 bytes `[A(k,0..8), A(k+1,0..8)]` are shuffled into row
    /// pairs `(A(k,r), A(k+1,r))` and sign-extended to i16, B's the same into column pairs;
    /// column c's pair broadcast to all lanes, one VPMADDWD gives every row's
    /// `A(k,r)B(k,c) + A(k+1,r)B(k+1,c)` in i32, exactly.
    ///
    /// # Safety
    /// The CPU must have AVX2; `pa` must hold `k * MR` bytes and `pb` `k * NR`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn add_mat_mul(t: &mut Tile, pa: *const u8, pb: *const u8, k: usize) {
        // SAFETY (whole body): loads stay inside the panels (the last odd step reads 8 bytes),
        // the tile is MR x NR i32 in NR columns of 32 bytes, read and written unaligned.
        unsafe {
            let pairs = _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
            let mut acc: [__m256i; NR] = [_mm256_setzero_si256(); NR];
            for (c, col) in t.iter().enumerate() {
                acc[c] = _mm256_loadu_si256(col.as_ptr() as *const __m256i);
            }
            let step = |a: __m128i, b: __m128i, acc: &mut [__m256i; NR]| {
                let a = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(a, pairs));
                let b = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(b, pairs));
                let mut cols = [0i32; NR];
                _mm256_storeu_si256(cols.as_mut_ptr() as *mut __m256i, b);
                for c in 0..NR {
                    let bc = _mm256_set1_epi32(cols[c]);
                    acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(a, bc));
                }
            };
            let full = k / 2;
            for p in 0..full {
                let a = _mm_loadu_si128(pa.add(p * 2 * MR) as *const __m128i);
                let b = _mm_loadu_si128(pb.add(p * 2 * NR) as *const __m128i);
                step(a, b, &mut acc);
            }
            if k % 2 == 1 {
                // The last step alone: the upper 8 bytes are zero, so its pair partner is 0.
                let a = _mm_loadl_epi64(pa.add(full * 2 * MR) as *const __m128i);
                let b = _mm_loadl_epi64(pb.add(full * 2 * NR) as *const __m128i);
                step(a, b, &mut acc);
            }
            for (c, col) in t.iter_mut().enumerate() {
                _mm256_storeu_si256(col.as_mut_ptr() as *mut __m256i, acc[c]);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use tract_linalg::mmm::{MatMatMulKer, RoundingPolicy};

    /// xorshift, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn i8(&mut self) -> i8 {
            self.next() as i8
        }
        fn i32(&mut self, span: i32) -> i32 {
            (self.next() % (2 * span as u64 + 1)) as i32 - span
        }
    }

    fn tracts() -> &'static DynKernel<8, 8, i32> {
        &tract_linalg::x86_64::mmm::avx2_mmm_i32_8x8
    }

    /// Run one epilogue on both kernels over the same operands and compare the stored bytes.
    fn both(rng: &mut Rng, k: usize, epilogue: &[&str], store_size: usize) {
        let a: Vec<i8> = (0..k * MR).map(|_| rng.i8()).collect();
        let b: Vec<i8> = (0..k * NR).map(|_| rng.i8()).collect();
        // Panels aligned as the packings ask (A: 256 bytes).
        let mut a_buf = vec![0u8; k * MR + 512];
        let off = a_buf.as_ptr().align_offset(256);
        for (d, s) in a_buf[off..].iter_mut().zip(&a) {
            *d = *s as u8;
        }
        let pa = a_buf[off..].as_ptr();
        let b_bytes: Vec<u8> = b.iter().map(|x| *x as u8).collect();
        let rows: Vec<i32> = (0..MR).map(|_| rng.i32(1 << 12)).collect();
        let cols: Vec<i32> = (0..NR).map(|_| rng.i32(1 << 12)).collect();
        let other_i32: Vec<i32> = (0..MR * NR).map(|_| rng.i32(1 << 20)).collect();
        let other_i8: Vec<i8> = (0..MR * NR).map(|_| rng.i8()).collect();
        let load: Vec<i32> = (0..MR * NR).map(|_| rng.i32(1 << 20)).collect();
        let unicast = |p: *const u8, size: usize| OutputStoreKer {
            ptr: p as *mut u8,
            row_byte_stride: (size * NR) as isize,
            col_byte_stride: size as isize,
            item_size: size,
        };
        let mut ops: Vec<FusedKerSpec<i32>> = vec![];
        for name in epilogue {
            let op = match *name {
                "clear" => FusedKerSpec::Clear,
                "load" => FusedKerSpec::LoadTile(load.as_ptr(), std::ptr::null()),
                "matmul" => FusedKerSpec::AddMatMul {
                    k,
                    pa,
                    pb: b_bytes.as_ptr(),
                    packing: 1,
                },
                "row_add" => FusedKerSpec::PerRowAdd(rows.as_ptr()),
                "row_mul" => FusedKerSpec::PerRowMul(rows.as_ptr()),
                "row_sub" => FusedKerSpec::PerRowSub(rows.as_ptr()),
                "row_subf" => FusedKerSpec::PerRowSubF(rows.as_ptr()),
                "row_min" => FusedKerSpec::PerRowMin(rows.as_ptr()),
                "row_max" => FusedKerSpec::PerRowMax(rows.as_ptr()),
                "col_add" => FusedKerSpec::PerColAdd(cols.as_ptr()),
                "col_mul" => FusedKerSpec::PerColMul(cols.as_ptr()),
                "col_sub" => FusedKerSpec::PerColSub(cols.as_ptr()),
                "col_subf" => FusedKerSpec::PerColSubF(cols.as_ptr()),
                "col_min" => FusedKerSpec::PerColMin(cols.as_ptr()),
                "col_max" => FusedKerSpec::PerColMax(cols.as_ptr()),
                "rowcol" => FusedKerSpec::AddRowColProducts(rows.as_ptr(), cols.as_ptr()),
                "unicast_i32" => FusedKerSpec::AddUnicast(unicast(other_i32.as_ptr() as _, 4)),
                "unicast_i8" => FusedKerSpec::AddUnicast(unicast(other_i8.as_ptr() as _, 1)),
                "add" => FusedKerSpec::ScalarAdd(rng.i32(1000)),
                "mul" => FusedKerSpec::ScalarMul(rng.i32(7)),
                "sub" => FusedKerSpec::ScalarSub(rng.i32(1000)),
                "subf" => FusedKerSpec::ScalarSubF(rng.i32(1000)),
                "leaky" => FusedKerSpec::LeakyRelu(rng.i32(3)),
                "shl" => FusedKerSpec::ShiftLeft(3),
                "shr" => FusedKerSpec::RoundingShiftRight(5, RoundingPolicy::Even),
                "shr_away" => FusedKerSpec::RoundingShiftRight(7, RoundingPolicy::Away),
                "qscale" => {
                    FusedKerSpec::QScale(rng.i32(8) as isize, RoundingPolicy::Even, (1 << 30) + rng.i32(1 << 29))
                }
                "clamp" => {
                    ops.push(FusedKerSpec::ScalarMax(-128));
                    FusedKerSpec::ScalarMin(127)
                }
                other => panic!("no op {other}"),
            };
            ops.push(op);
        }
        let ours = kernel();
        let runs: [(&str, &dyn Fn(&[FusedKerSpec<i32>]) -> isize); 2] = [
            (NAME, &|l| ours.kernel(l)),
            (MatMatMulKer::name(tracts()), &|l| tracts().kernel(l)),
        ];
        let mut outs = vec![];
        for (name, run) in runs {
            let mut out = vec![0xA5u8; MR * NR * store_size];
            let mut list = ops.clone();
            list.push(FusedKerSpec::Store(OutputStoreKer {
                ptr: out.as_mut_ptr(),
                row_byte_stride: store_size as isize,
                col_byte_stride: (store_size * MR) as isize,
                item_size: store_size,
            }));
            list.push(FusedKerSpec::Done);
            assert_eq!(run(&list), 0, "{name} on {epilogue:?}");
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1], "k {k}, epilogue {epilogue:?}, store {store_size}");
    }

    /// Both kernels need AVX2; without it there is nothing to compare (said, not hidden).
    fn no_avx2() -> bool {
        let missing = !std::is_x86_feature_detected!("avx2");
        if missing {
            eprintln!("no AVX2 on this CPU: nothing to compare");
        }
        missing
    }

    #[test]
    fn the_madd_kernel_stores_what_tracts_avx2_kernel_stores_for_every_epilogue_op() {
        if no_avx2() {
            return;
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let ops = [
            "row_add",
            "row_mul",
            "row_sub",
            "row_subf",
            "row_min",
            "row_max",
            "col_add",
            "col_mul",
            "col_sub",
            "col_subf",
            "col_min",
            "col_max",
            "rowcol",
            "unicast_i32",
            "unicast_i8",
            "add",
            "mul",
            "sub",
            "subf",
            "leaky",
            "shl",
            "shr",
            "shr_away",
            "qscale",
        ];
        for k in [0, 1, 2, 3, 7, 8, 64, 65, 577] {
            for op in ops {
                both(&mut rng, k, &["clear", "matmul", op], 4);
                both(&mut rng, k, &["load", "matmul", op], 4);
            }
        }
    }

    #[test]
    fn the_madd_kernel_matches_tracts_requantizing_epilogue_stored_as_bytes() {
        if no_avx2() {
            return;
        }
        let mut rng = Rng(7);
        for k in [1, 9, 64, 576, 1152, 4608] {
            for _ in 0..4 {
                // The shape of an int8 convolution's epilogue: zero-point corrections, bias,
                // requantization, output zero point, clamp, one byte a value.
                let e = ["clear", "matmul", "rowcol", "row_add", "qscale", "add", "clamp"];
                both(&mut rng, k, &e, 1);
                let e = ["clear", "matmul", "col_sub", "row_add", "shr", "add", "clamp"];
                both(&mut rng, k, &e, 1);
            }
        }
    }

    #[test]
    fn the_madd_tier_is_registered_and_speaks_only_without_vnni() {
        assert!(
            tract_linalg::mmm_routines::declared().any(|r| (r.make)().name() == NAME),
            "the kernel reached tract's inventory"
        );
        assert!(
            tract_linalg::mmm_tiers::declared().any(|t| t.name == MADD_TIER.name),
            "the tier reached tract's inventory"
        );
        let avx2 = IsaSet::of_arch(Arch::X86_64).with(Isa::X86_64Avx2);
        assert!(applies(&avx2));
        assert!(!applies(&avx2.with(Isa::X86_64Avx512Vnni)));
        assert!(!applies(&avx2.with(Isa::X86_64AvxVnni)));
        assert!(!applies(&IsaSet::of_arch(Arch::X86_64).with(Isa::X86_64Avx)));
    }
}
