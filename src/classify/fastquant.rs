//! A vectorisable `QuantizeLinear` (f32 -> u8) and byte-to-byte ReLU tables for tract plans
//! (issue 17).
//!
//! Why: the shipped int8 graph re-quantizes every float island (BatchNorm, ReLU, residual Add,
//! Concat run in float between the QLinearConv / QLinearMatMul nodes) back to u8. tract 0.23's
//! `QuantizeLinearU8` does that with a scalar loop around a branchy round-ties-to-even
//! (`tract_data::round_ties_to_even`); on the development machine (AVX-512 VNNI) its 56 calls took
//! 37% of a slice's int8 time, more than all the matrix products
//! (`cargo run --release --example tract_probe -- models/ctsentinel-fpn256.int8.onnx`).
//!
//! What: [`install`] swaps each such node of an optimised plan for [`QuantizeU8`], which gives
//! **bit-identical** bytes (the test below compares it with tract's own function on edge cases
//! and millions of random values; for |x / scale| beyond 2^31, where tract's i32 arithmetic
//! overflows, it saturates as ONNX specifies) with a branch-free loop LLVM vectorises on every
//! target, baseline x86-64 (SSE2) included: round-ties-to-even by adding and subtracting
//! 1.5 * 2^23 (exact for |v| < 2^22, so v is first clamped to +-512, which cannot change a
//! saturated result), then the zero point, then saturation to 0..255, read back from the float's
//! bits. NaN maps to the zero point, as in tract. Measured on 4M values, one thread: 0.3-0.5 ns
//! per value against tract's 2.3-2.8 ns (near memory bandwidth). On x86-64 CPUs with AVX2 the
//! same loop is also compiled for AVX2 and chosen at run time (8 lanes instead of SSE2's 4:
//! 0.25 against 0.43 ms per million values, one thread): one `unsafe` call, fenced below, and
//! the same bytes (the island test checks both paths against each other).
//!
//! Then [`fuse_relu_requantize`] turns each `dequantize -> ReLU -> requantize` between two
//! integer convolutions (32 in the shipped model) into one 256-entry lookup table, computed with
//! the same arithmetic: one byte read and written per value instead of two float passes.
//! `tests/model_int8.rs` checks the whole plan's outputs bit for bit against tract's own plan.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;

/// `y = saturate_u8(round_ties_even(x * scale) + zero_point)`, `scale` being the reciprocal of the
/// ONNX scale, as in tract's `QuantizeLinearU8`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeU8 {
    pub scale: f32,
    pub zero_point: u8,
}

// The scale is a finite constant of the model (never NaN), so equality is an equivalence.
impl Eq for QuantizeU8 {}

/// 1.5 * 2^23: for |v| < 2^22, `(v + MAGIC) - MAGIC` is v rounded to the nearest integer, ties to
/// even (the sum lies in [2^23, 2^24), where floats are exactly the integers).
const MAGIC: f32 = 12_582_912.0;

/// Beyond this |x * scale| every result saturates whatever the zero point (0..=255).
const SATURATED: f32 = 512.0;

#[allow(unsafe_code)] // the one AVX2 dispatch, see below
fn quantize(xs: &[f32], ys: &mut [u8], scale: f32, zero_point: u8) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: `quantize_avx2` requires AVX2 and nothing else; the CPU has it (checked above).
        unsafe { quantize_avx2(xs, ys, scale, zero_point) };
        return;
    }
    quantize_tile(xs, ys, scale, zero_point)
}

/// [`quantize`] compiled for AVX2 (8 lanes instead of SSE2's 4; same operations, same bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_avx2(xs: &[f32], ys: &mut [u8], scale: f32, zero_point: u8) {
    quantize_tile(xs, ys, scale, zero_point)
}

/// The loop itself, inlined into whichever target it is called from.
#[inline(always)]
fn quantize_tile(xs: &[f32], ys: &mut [u8], scale: f32, zero_point: u8) {
    let zp = f32::from(zero_point);
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        let v = x * scale;
        let v = if v.is_nan() {
            0.0
        } else {
            v.max(-SATURATED).min(SATURATED)
        };
        let q = (((v + MAGIC) - MAGIC) + zp).max(0.0).min(255.0);
        // q is an integer in 0..=255, so q + MAGIC is exactly 1.5 * 2^23 + q, whose low mantissa
        // byte is q: a bit cast and a truncation, which vectorise everywhere (a float-to-int
        // conversion with Rust's saturating semantics does not on the x86-64 baseline).
        *y = (q + MAGIC).to_bits() as u8;
    }
}

impl ElementWiseMiniOp for QuantizeU8 {
    fn name(&self) -> String {
        "QuantizeU8Vectorised".into()
    }

    fn output_type(&self, input_type: DatumType) -> Option<DatumType> {
        (input_type == f32::datum_type()).then(u8::datum_type)
    }

    fn eval_out_of_place(&self, t: &Tensor, _out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let plain = t.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        par_fill::<u8>(t.shape(), |first, chunk| {
            quantize(&xs[first..first + chunk.len()], chunk, self.scale, self.zero_point)
        })
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("1/scale: {} zero_point: {}", self.scale, self.zero_point)])
    }
}

/// A new tensor of `shape`, each chunk of its values written by `fill(first index, chunk)`; as
/// tract's element-wise ops, the chunks are split over the executor's threads when there are
/// several. Shared by [`QuantizeU8`] and [`islands::Island`].
fn par_fill<T: Datum + Copy + tract_onnx::prelude::tract_num_traits::Zero>(
    shape: &[usize],
    fill: impl Fn(usize, &mut [T]) + Send + Sync,
) -> TractResult<Tensor> {
    let mut dst = Tensor::zero::<T>(shape)?;
    let mut plain = dst.try_as_plain_ram_mut()?;
    let ys = plain.as_slice_mut::<T>()?;
    let len = ys.len();
    tract_linalg::multithread::par_chunks_mut(ys, 1, len, |first, chunk| {
        fill(first, chunk);
        Ok(())
    })?;
    drop(plain);
    Ok(dst)
}

/// tract's `DequantizeLinearF32` formula, `(x - zero_point) as f32 * scale`, for one byte.
#[inline(always)]
fn dequantize(x: u8, scale: f32, zero_point: i32) -> f32 {
    (i32::from(x) - zero_point) as f32 * scale
}

pub mod islands;

/// What [`install`] changed in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// `QuantizeLinearU8` nodes replaced by [`QuantizeU8`].
    pub quantize: usize,
    /// `dequantize -> ReLU -> requantize` chains turned into byte tables.
    pub relu_tables: usize,
    /// Residual adds and BatchNorm/ReLU/requantize chains run as one [`islands::Island`] pass.
    pub islands: usize,
}

/// Speed up an optimised plan without changing any output bit: [`replace_quantize`], then
/// [`fuse_relu_requantize`], then [`islands::fuse`].
pub fn install(model: &mut TypedModel) -> TractResult<Installed> {
    let quantize = replace_quantize(model)?;
    let relu_tables = fuse_relu_requantize(model)?;
    let islands = islands::fuse(model)?;
    Ok(Installed {
        quantize,
        relu_tables,
        islands,
    })
}

/// `DequantizeLinear(u8) -> max(x, c) -> QuantizeU8` (a ReLU between two integer convolutions,
/// run in float because tract sees the ReLU as a binary op and stops its own lookup-table fusion
/// there) maps a byte to a byte: one 256-entry table computes it, reading and writing one byte
/// per value instead of a float pass each way. The table is computed with the same arithmetic
/// as the three ops (tract's dequantization formula, `f32::max`, `quantize`), so outputs are
/// unchanged. Only chains whose every link has a single consumer are fused. Returns how many.
pub fn fuse_relu_requantize(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::binary::OptBinByScalar;
    use tract_onnx::tract_core::ops::quant::{lookup_table, DequantizeLinearF32};
    let mut fused = 0;
    loop {
        let mut found = None;
        for node in model.nodes() {
            let Some(dq) = node.op_as::<DequantizeLinearF32>() else {
                continue;
            };
            let [input] = node.inputs[..] else { continue };
            if model.outlet_fact(input)?.datum_type != u8::datum_type() {
                continue;
            }
            let Some(relu) = model.single_succ(node.id)? else {
                continue;
            };
            let Some(max) = relu.op_as::<OptBinByScalar>() else {
                continue;
            };
            if max.binop.name() != "Max" || relu.inputs.len() != 2 || relu.inputs[0] != OutletId::new(node.id, 0) {
                continue;
            }
            let Some(c) = model.outlet_fact(relu.inputs[1])?.konst.clone() else {
                continue;
            };
            if c.datum_type() != f32::datum_type() || c.len() != 1 {
                continue;
            }
            let c = c.try_as_plain_ram()?.as_slice::<f32>()?[0];
            let Some(q) = model.single_succ(relu.id)? else { continue };
            let Some(fq) = q
                .op_as::<ElementWiseOp>()
                .and_then(|ew| ew.0.downcast_ref::<QuantizeU8>())
            else {
                continue;
            };
            let xs: Vec<f32> = (0..=255u8)
                .map(|v| dequantize(v, dq.scale, dq.zero_point).max(c))
                .collect();
            let mut table = vec![0u8; 256];
            quantize(&xs, &mut table, fq.scale, fq.zero_point);
            found = Some((node.name.clone(), input, q.id, table));
            break;
        }
        let Some((name, input, q_id, table)) = found else { break };
        let mut patch = TypedModelPatch::default();
        let wire = patch.tap_model(model, input)?;
        let lut = lookup_table(tract_linalg::routines::lut_u8(&table)?);
        let wire = patch.wire_node(format!("{name}.relu_lut"), lut, &[wire])?[0];
        patch.shunt_outside(model, OutletId::new(q_id, 0), wire)?;
        patch.apply(model)?;
        model.compact()?;
        fused += 1;
    }
    Ok(fused)
}

/// Replace every f32 -> u8 `QuantizeLinearU8` of an optimised model by [`QuantizeU8`]; returns
/// how many were replaced. Other quantize ops (i8 outputs, f16 or i32 inputs) are left as they are.
pub fn replace_quantize(model: &mut TypedModel) -> TractResult<usize> {
    let mut swaps = Vec::new();
    for node in model.nodes() {
        let Some(ew) = node.op_as::<ElementWiseOp>() else {
            continue;
        };
        let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() else {
            continue;
        };
        let [input] = node.inputs[..] else { continue };
        if model.outlet_fact(input)?.datum_type != f32::datum_type() {
            continue;
        }
        swaps.push((
            node.id,
            ElementWiseOp(
                Box::new(QuantizeU8 {
                    scale: q.scale,
                    zero_point: q.zero_point,
                }),
                ew.1,
            ),
        ));
    }
    let n = swaps.len();
    for (id, op) in swaps {
        model.node_mut(id).op = Box::new(op);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    fn both(xs: &[f32], scale: f32, zp: u8) {
        let mut ys = vec![0u8; xs.len()];
        quantize(xs, &mut ys, scale, zp);
        for (x, y) in xs.iter().zip(&ys) {
            let want = quantize_linear_f32_u8(*x, scale, i32::from(zp));
            assert_eq!(*y, want, "x {x:e} (bits {:#x}) scale {scale} zp {zp}", x.to_bits());
        }
    }

    #[test]
    fn vectorised_quantize_equals_tracts_on_ties_edges_and_random_values() {
        // tract adds the zero point in i32 after an `as i32`, which overflows for |x * scale|
        // near 2^31 (wrapping in release, a panic with overflow checks): compared below that.
        let mut edges = vec![f32::NAN, 0.0, -0.0, 2.0e9, -2.0e9, 1.0e6, -1.0e6];
        for k in -600..600 {
            let h = k as f32 + 0.5; // exact ties, rounded to even
            edges.extend([
                h,
                h.next_up(),
                h.next_down(),
                k as f32,
                (k as f32).next_up(),
                (k as f32).next_down(),
            ]);
        }
        for zp in [0u8, 1, 127, 128, 200, 255] {
            both(&edges, 1.0, zp);
            // Beyond it, saturation as ONNX specifies.
            let huge = [f32::INFINITY, f32::MAX, 3.0e9, f32::NEG_INFINITY, f32::MIN, -3.0e9];
            let mut ys = [0u8; 6];
            quantize(&huge, &mut ys, 1.0, zp);
            assert_eq!(ys, [255, 255, 255, 0, 0, 0], "zp {zp}");
        }
        // Random values and scales over the ranges real activations take (and beyond).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let scale = 1.0 / (0.001 + (next() % 10_000) as f32 / 1000.0);
            let zp = (next() % 256) as u8;
            let xs: Vec<f32> = (0..20_000)
                .map(|_| ((next() % 2_000_001) as f32 / 1_000_000.0 - 1.0) * 300.0 / scale)
                .collect();
            both(&xs, scale, zp);
        }
    }
}
