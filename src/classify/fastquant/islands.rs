//! Float islands in one pass (issue 17): each `dequantize -> residual add` and each
//! `BatchNorm -> ReLU -> requantize` chain of the pre-activation ResNet becomes one [`Island`] op.
//!
//! Why: between two integer products tract runs the residual stream in float, one memory pass per
//! op: `DequantizeLinearF32` writes the convolution's bytes out as floats, `OptAddUnicast` reads
//! them back beside the residual, and the next block's `OptBinChain(Mul+Add+Max)` first copies the
//! residual (it is still needed by the next add, so the in-place chain cannot take it) before
//! [`super::QuantizeU8`] reads the chain's floats once more to write bytes. An [`Island`] reads
//! its inputs once (bytes are dequantized on the fly) and writes its output once: floats for a
//! residual add, bytes for a chain that ends in a requantization.
//!
//! Bit for bit: every step is the float operation tract's kernel performs, in tract's order, with
//! the same roundings (no fused multiply-add: Rust never contracts `a * b + c`), and the
//! dequantization is tract's formula. `Max` / `Min` are only fused where a requantization follows
//! (a zero's sign cannot survive it). `tests/model_int8.rs` compares the whole plan with tract's
//! own, output bit for output bit, on real slices. Loops over 256-value tiles so LLVM vectorises
//! each step on the baseline target; on x86-64 with AVX2 the same loops are compiled for AVX2 too
//! and chosen at run time (one fenced `unsafe` call; 0.42 against 0.80 ms per million values of a
//! Mul+Add+Max+requantize chain, one thread, and 0.64 for the separate passes it replaces).

use tract_linalg::multithread::BShare;
use tract_linalg::BinOp;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{OptBinChain, OptBinUnicast};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::{dequantize, par_fill, quantize_tile, QuantizeU8};

/// Values per tile: small enough for the tile buffers to stay in L1, large enough to amortise
/// the per-tile dispatch over the steps.
const TILE: usize = 256;

/// How an input of the island is read: floats as they are, or bytes through tract's
/// `DequantizeLinearF32` formula `(x - zero_point) as f32 * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    F32,
    Dequantized { scale: f32, zero_point: i32 },
}

/// How a step's operand lines up with the accumulator: the same shape (`Lockstep`, as tract's
/// unicast kernels) or one value per block of `period` consecutive values (`PerBlock`, as its
/// by-scalar kernels: a per-channel BatchNorm factor, or one constant for the whole tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Lockstep,
    PerBlock { period: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: BinOp,
    pub share: Share,
    pub operand: Source,
}

/// Input 0 is the accumulator, input `i + 1` step `i`'s operand; the output is floats or, with
/// `requantize`, bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Island {
    pub acc: Source,
    pub steps: Vec<Step>,
    pub requantize: Option<QuantizeU8>,
}

// Scales are finite constants of the model (never NaN), so equality is an equivalence.
impl Eq for Island {}

/// One input's values, typed.
enum Values<'a> {
    F32(&'a [f32]),
    U8(&'a [u8], f32, i32),
}

impl Values<'_> {
    /// Values `start..start + out.len()` as floats.
    #[inline(always)]
    fn load(&self, start: usize, out: &mut [f32]) {
        match *self {
            Values::F32(xs) => out.copy_from_slice(&xs[start..start + out.len()]),
            Values::U8(xs, scale, zp) => {
                let n = out.len();
                for (y, &x) in out.iter_mut().zip(&xs[start..start + n]) {
                    *y = dequantize(x, scale, zp);
                }
            }
        }
    }

    /// Value `i` as a float.
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        match *self {
            Values::F32(xs) => xs[i],
            Values::U8(xs, scale, zp) => dequantize(xs[i], scale, zp),
        }
    }
}

/// `acc = acc op b`, as tract's linalg kernels (`SubF` is `b - acc`). `Max` / `Min` are
/// `f32::max` / `min` (branch-free; a branchy compare cost 0.8 ns a value on real activations):
/// they may differ from tract's kernel only in a zero's sign or a NaN, both of which the
/// requantization that must follow them (see [`candidate`]) maps to the same byte as zero.
#[inline(always)]
fn apply_slice(op: BinOp, acc: &mut [f32], b: &[f32]) {
    let it = acc.iter_mut().zip(b);
    match op {
        BinOp::Add => it.for_each(|(a, &b)| *a += b),
        BinOp::Mul => it.for_each(|(a, &b)| *a *= b),
        BinOp::Sub => it.for_each(|(a, &b)| *a -= b),
        BinOp::SubF => it.for_each(|(a, &b)| *a = b - *a),
        BinOp::Max => it.for_each(|(a, &b)| *a = a.max(b)),
        BinOp::Min => it.for_each(|(a, &b)| *a = a.min(b)),
    }
}

#[inline(always)]
fn apply_scalar(op: BinOp, acc: &mut [f32], b: f32) {
    let it = acc.iter_mut();
    match op {
        BinOp::Add => it.for_each(|a| *a += b),
        BinOp::Mul => it.for_each(|a| *a *= b),
        BinOp::Sub => it.for_each(|a| *a -= b),
        BinOp::SubF => it.for_each(|a| *a = b - *a),
        BinOp::Max => it.for_each(|a| *a = a.max(b)),
        BinOp::Min => it.for_each(|a| *a = a.min(b)),
    }
}

fn values<'a>(t: &'a Tensor, src: Source) -> TractResult<Values<'a>> {
    ensure!(
        t.strides() == &*Tensor::natural_strides(t.shape()),
        "island input with non-natural strides {:?}",
        t.strides()
    );
    let plain = t.try_as_plain_ram()?;
    Ok(match src {
        Source::F32 => Values::F32(plain.as_slice::<f32>()?),
        Source::Dequantized { scale, zero_point } => Values::U8(plain.as_slice::<u8>()?, scale, zero_point),
    })
}

/// Where an island writes: bytes through a requantization, or floats.
enum Out<'a> {
    U8(&'a mut [u8], &'a QuantizeU8),
    F32(&'a mut [f32]),
}

impl Island {
    /// Values `first..first + out.len()` of the result, tile by tile, compiled for AVX2 where the
    /// CPU has it (as tract's own element-wise kernels are dispatched at run time; the baseline
    /// x86-64 target has SSE2 only).
    #[allow(unsafe_code)] // the one AVX2 dispatch, see below
    fn run(&self, acc: &Values, operands: &[Values], first: usize, out: Out) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: `run_avx2` requires AVX2 and nothing else; the CPU has it (checked above).
            unsafe { self.run_avx2(acc, operands, first, out) };
            return;
        }
        self.run_tiles(acc, operands, first, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&self, acc: &Values, operands: &[Values], first: usize, out: Out) {
        self.run_tiles(acc, operands, first, out)
    }

    #[inline(always)]
    fn run_tiles(&self, acc: &Values, operands: &[Values], first: usize, mut out: Out) {
        let len = match &out {
            Out::U8(ys, _) => ys.len(),
            Out::F32(ys) => ys.len(),
        };
        let mut tile = [0f32; TILE];
        let mut other = [0f32; TILE];
        let mut i = first;
        while i < first + len {
            // A tile never crosses a block boundary of a per-block step, so each such step has
            // one operand value for the whole tile.
            let mut end = (i + TILE).min(first + len);
            for s in &self.steps {
                if let Share::PerBlock { period } = s.share {
                    end = end.min((i / period + 1) * period);
                }
            }
            let n = end - i;
            let t = &mut tile[..n];
            acc.load(i, t);
            for (s, b) in self.steps.iter().zip(operands) {
                match s.share {
                    Share::Lockstep => {
                        let o = &mut other[..n];
                        b.load(i, o);
                        apply_slice(s.op, t, o);
                    }
                    Share::PerBlock { period } => apply_scalar(s.op, t, b.at(i / period)),
                }
            }
            let at = i - first;
            match &mut out {
                Out::U8(ys, q) => quantize_tile(t, &mut ys[at..at + n], q.scale, q.zero_point),
                Out::F32(ys) => ys[at..at + n].copy_from_slice(t),
            }
            i = end;
        }
    }
}

impl Op for Island {
    fn name(&self) -> StaticName {
        let steps: Vec<String> = self.steps.iter().map(|s| format!("{:?}", s.op)).collect();
        let out = if self.requantize.is_some() { "+Quantize" } else { "" };
        format!("Island({}{out})", steps.join("+")).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} -> {:?} -> {:?}",
            self.acc, self.steps, self.requantize
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Island {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.steps.len() + 1);
        let acc = values(&inputs[0], self.acc)?;
        let operands = inputs[1..]
            .iter()
            .zip(&self.steps)
            .map(|(t, s)| values(t, s.operand))
            .collect::<TractResult<Vec<_>>>()?;
        let shape = inputs[0].shape();
        let len = inputs[0].len();
        for (t, s) in inputs[1..].iter().zip(&self.steps) {
            match s.share {
                Share::Lockstep => ensure!(t.len() == len, "island operand length"),
                Share::PerBlock { period } => {
                    ensure!(period > 0 && t.len() * period == len, "island block period")
                }
            }
        }
        let out = match &self.requantize {
            Some(q) => par_fill::<u8>(shape, |first, chunk| {
                self.run(&acc, &operands, first, Out::U8(chunk, q))
            })?,
            None => par_fill::<f32>(shape, |first, chunk| self.run(&acc, &operands, first, Out::F32(chunk)))?,
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Island {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = if self.requantize.is_some() {
            u8::datum_type()
        } else {
            f32::datum_type()
        };
        Ok(tvec!(dt.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// What an input of a candidate island reads: `outlet` as `source`. A byte tensor comes through
/// a `DequantizeLinearF32` whose only consumer is the island; that node then disappears.
fn source_of(model: &TypedModel, outlet: OutletId, consumer: usize) -> TractResult<(OutletId, Source)> {
    let node = model.node(outlet.node);
    if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
        if let [input] = node.inputs[..] {
            let single = model.single_succ(node.id)?.is_some_and(|s| s.id == consumer);
            if single
                && model.outlet_fact(input)?.datum_type == u8::datum_type()
                && !model.output_outlets()?.contains(&outlet)
            {
                return Ok((
                    input,
                    Source::Dequantized {
                        scale: dq.scale,
                        zero_point: dq.zero_point,
                    },
                ));
            }
        }
    }
    Ok((outlet, Source::F32))
}

fn concrete_len(model: &TypedModel, outlet: OutletId) -> TractResult<Option<usize>> {
    let fact = model.outlet_fact(outlet)?;
    if fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    Ok(fact.shape.as_concrete().map(|s| s.iter().product()))
}

/// An island for node `id` (and the nodes it absorbs), or None. Returns the island, its input
/// outlets and the outlet it replaces.
fn candidate(model: &TypedModel, id: usize) -> TractResult<Option<(Island, TVec<OutletId>, OutletId)>> {
    let node = model.node(id);
    // (accumulator input, steps as (op, share, operand input)), the float output node.
    let (inputs, steps): (Vec<OutletId>, Vec<(BinOp, BShare)>) = if let Some(chain) = node.op_as::<OptBinChain>() {
        (
            node.inputs.clone(),
            chain.steps.iter().map(|s| (s.linalg_op, s.share)).collect(),
        )
    } else if let Some(add) = node.op_as::<OptBinUnicast>() {
        if add.binop.name() != "Add" || node.inputs.len() != 2 {
            return Ok(None);
        }
        (node.inputs.clone(), vec![(BinOp::Add, BShare::Lockstep)])
    } else {
        return Ok(None);
    };
    if model.output_outlets()?.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    // A chain ending in a requantization writes bytes; anything else keeps its float output.
    let requantize = match model.single_succ(id)? {
        Some(q) if !model.output_outlets()?.contains(&OutletId::new(q.id, 0)) => q
            .op_as::<ElementWiseOp>()
            .and_then(|ew| ew.0.downcast_ref::<QuantizeU8>())
            .map(|fq| (fq.clone(), q.id)),
        _ => None,
    };
    if requantize.is_none() && steps.iter().any(|(op, _)| matches!(op, BinOp::Max | BinOp::Min)) {
        return Ok(None);
    }
    let Some(len) = concrete_len(model, inputs[0])? else {
        return Ok(None);
    };
    let (acc_outlet, acc) = source_of(model, inputs[0], id)?;
    let mut outlets = tvec!(acc_outlet);
    let mut island_steps = Vec::new();
    for ((op, share), &input) in steps.iter().zip(&inputs[1..]) {
        let Some(b_len) = concrete_len(model, input)? else {
            return Ok(None);
        };
        let share = match share {
            BShare::Lockstep if b_len == len => Share::Lockstep,
            BShare::PerBlock if b_len > 0 && len % b_len == 0 => Share::PerBlock { period: len / b_len },
            _ => return Ok(None),
        };
        let (outlet, operand) = source_of(model, input, id)?;
        outlets.push(outlet);
        island_steps.push(Step {
            op: *op,
            share,
            operand,
        });
    }
    // Fusing a float chain into a float output saves nothing unless a dequantization is absorbed.
    let absorbs = !matches!(acc, Source::F32) || island_steps.iter().any(|s| !matches!(s.operand, Source::F32));
    if requantize.is_none() && !absorbs {
        return Ok(None);
    }
    let (requantize, replaced) = match requantize {
        Some((q, q_id)) => (Some(q), OutletId::new(q_id, 0)),
        None => (None, OutletId::new(id, 0)),
    };
    Ok(Some((
        Island {
            acc,
            steps: island_steps,
            requantize,
        },
        outlets,
        replaced,
    )))
}

/// Replace every residual add fed by a dequantization, and every float chain that ends in a
/// requantization, by an [`Island`]. Returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    // Node ids change with every patch (compact), so look again from the start each time; nodes
    // already fused are Islands and no longer match.
    loop {
        let mut found = None;
        for id in model.eval_order()? {
            if let Some(c) = candidate(model, id)? {
                found = Some((model.node(id).name.clone(), c));
                break;
            }
        }
        let Some((name, (island, inputs, replaced))) = found else {
            break;
        };
        let mut patch = TypedModelPatch::default();
        let taps = inputs
            .iter()
            .map(|o| patch.tap_model(model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let wire = patch.wire_node(format!("{name}.island"), island, &taps)?[0];
        patch.shunt_outside(model, replaced, wire)?;
        patch.apply(model)?;
        model.compact()?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiles of a per-block step never straddle a block, whatever the period and the split.
    #[test]
    fn an_island_equals_its_steps_applied_one_pass_each_on_every_split() {
        let len = 3 * 97;
        let a: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        let r: Vec<f32> = (0..len).map(|i| (i as f32 - 100.0) * 0.013).collect();
        let slope: Vec<f32> = vec![0.5, -1.25, 2.0];
        let inter: Vec<f32> = vec![0.1, 0.0, -0.3];
        let island = Island {
            acc: Source::Dequantized {
                scale: 0.02,
                zero_point: 128,
            },
            steps: vec![
                Step {
                    op: BinOp::Add,
                    share: Share::Lockstep,
                    operand: Source::F32,
                },
                Step {
                    op: BinOp::Mul,
                    share: Share::PerBlock { period: 97 },
                    operand: Source::F32,
                },
                Step {
                    op: BinOp::Add,
                    share: Share::PerBlock { period: 97 },
                    operand: Source::F32,
                },
                Step {
                    op: BinOp::Max,
                    share: Share::PerBlock { period: len },
                    operand: Source::F32,
                },
            ],
            requantize: Some(QuantizeU8 {
                scale: 1.0 / 0.01,
                zero_point: 3,
            }),
        };
        // One pass per step, as tract's ops run them.
        let mut want_f = vec![0f32; len];
        for i in 0..len {
            let mut v = (i32::from(a[i]) - 128) as f32 * 0.02;
            v += r[i];
            v *= slope[i / 97];
            v += inter[i / 97];
            want_f[i] = if v > 0.0 { v } else { 0.0 };
        }
        let mut want = vec![0u8; len];
        super::super::quantize(&want_f, &mut want, 100.0, 3);
        let zero = [0f32];
        let operands = [
            Values::F32(&r),
            Values::F32(&slope),
            Values::F32(&inter),
            Values::F32(&zero),
        ];
        for split in [1, 5, 96, 97, 100, 256, len] {
            let mut got = vec![0u8; len];
            let mut first = 0;
            while first < len {
                let n = split.min(len - first);
                let q = island.requantize.clone().unwrap();
                island.run(
                    &Values::U8(&a, 0.02, 128),
                    &operands,
                    first,
                    Out::U8(&mut got[first..first + n], &q),
                );
                // And the baseline (SSE2) path gives the same bytes.
                let mut base = vec![0u8; n];
                island.run_tiles(&Values::U8(&a, 0.02, 128), &operands, first, Out::U8(&mut base, &q));
                assert_eq!(base, got[first..first + n], "split {split}: AVX2 and baseline differ");
                first += n;
            }
            assert_eq!(got, want, "split {split}");
        }
    }
}
