//! Development probe: load an ONNX model in tract, optimise it, list what the convolutions and
//! matrix products compute in, time single-slice inference, and profile time per operator type
//! with tract's own evaluation hook (`SimpleState::run_plan_with_eval`); also which matrix
//! kernel tract picked for each product on this CPU. The plan is the appliance's (with
//! `classify::fastquant`); `TRACT_PROBE_PLAIN=1` probes tract's plan as it comes,
//! `TRACT_PROBE_NO_FUSE=1` the plan with the vectorised requantization but no ReLU tables,
//! `TRACT_PROBE_NO_ISLANDS=1` everything but `fastquant::islands`,
//! `TRACT_PROBE_DUMP=1` also prints every node in order, `TRACT_PROBE_BATCH=N` plans N slices a
//! run (times are then per run; divide by N for a slice).
//! `cargo run --release --example tract_probe -- models/ctsentinel-fpn256.int8.onnx [runs] [input size, default 256]`
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let t = Instant::now();
    // As the appliance (src/classify/kernel_pick.rs), unless TRACT_PROBE_PLAIN is set.
    if std::env::var_os("TRACT_PROBE_PLAIN").is_none() {
        eprintln!("kernel_pick: {:?}", ctsentinel::classify::kernel_pick::apply());
    }
    let mut model = tract_onnx::onnx().model_for_path(&args[1])?;
    let batch = model.sym("batch");
    model.set_input_fact(
        0,
        f32::fact([batch.to_dim(), 1.to_dim(), size.to_dim(), size.to_dim()]).into(),
    )?;
    let n_batch: usize = std::env::var("TRACT_PROBE_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let subs = std::collections::HashMap::from([(batch, n_batch.to_dim())]);
    let mut model = model.into_typed()?.set_symbols(&subs)?.into_optimized()?;
    // As the appliance plans it (src/classify/fastquant.rs), unless TRACT_PROBE_PLAIN is set.
    if std::env::var_os("TRACT_PROBE_PLAIN").is_none() {
        if std::env::var_os("TRACT_PROBE_NO_ISLANDS").is_some() {
            let n = ctsentinel::classify::fastquant::replace_quantize(&mut model)?;
            let f = ctsentinel::classify::fastquant::fuse_relu_requantize(&mut model)?;
            eprintln!("fastquant: {n} QuantizeLinearU8 replaced, {f} ReLU tables, no islands");
        } else if std::env::var_os("TRACT_PROBE_NO_FUSE").is_some() {
            let n = ctsentinel::classify::fastquant::replace_quantize(&mut model)?;
            eprintln!("fastquant: {n} QuantizeLinearU8 replaced, no fusion");
        } else {
            let i = ctsentinel::classify::fastquant::install(&mut model)?;
            eprintln!("fastquant: {i:?}");
        }
    }
    eprintln!("load+optimise {:?}", t.elapsed());
    // TRACT_PROBE_DUMP=1: every node of the plan in order (id, op, inputs with their types), to
    // see which float islands sit between the integer products.
    if std::env::var_os("TRACT_PROBE_DUMP").is_some() {
        for n in model.nodes() {
            let inputs: Vec<String> = n
                .inputs
                .iter()
                .map(|i| format!("{}/{}:{:?}", i.node, i.slot, model.outlet_fact(*i).unwrap().datum_type))
                .collect();
            println!("#{} {} [{}] <- {}", n.id, n.op().name(), n.name, inputs.join(", "));
        }
    }
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for n in model.nodes() {
        let inputs: Vec<String> = n
            .inputs
            .iter()
            .map(|i| format!("{:?}", model.outlet_fact(*i).unwrap().datum_type))
            .collect();
        *ops.entry(format!("{} in [{}]", n.op().name(), inputs.join(",")))
            .or_default() += 1;
    }
    for (k, v) in ops {
        println!("{v:4} {k}");
    }
    // Which matrix kernel tract picked for each product (issue 17), and the CPU's ISA.
    println!("isa {:?}", tract_linalg::isa::native());
    for k in ctsentinel::classify::matmul_kernels(&model) {
        println!("  OptMatMul with {k}");
    }
    let plan = model.into_runnable()?;
    let x = Tensor::from_shape(&[n_batch, 1, size, size], &vec![0.3f32; n_batch * size * size])?;
    for _ in 0..runs {
        let t = Instant::now();
        let out = plan.run(tvec!(x.clone().into_tvalue()))?;
        eprintln!(
            "run {:?} -> {:?}",
            t.elapsed(),
            out[0].to_plain_array_view::<f32>()?.as_slice()
        );
    }
    // Time per operator type, summed over `runs` runs.
    let mut per_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
    let t = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(x.clone().into_tvalue()), |ctx, st, node, input| {
            let t = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(ctx, st, node, input);
            let e = per_op.entry(node.op().name().to_string()).or_default();
            e.0 += t.elapsed();
            e.1 += 1;
            r
        })?;
    }
    let total = t.elapsed();
    let mut v: Vec<_> = per_op.into_iter().collect();
    v.sort_by_key(|(_, (d, _))| std::cmp::Reverse(*d));
    println!(
        "profile over {runs} runs of {n_batch} slice(s) ({:?} per run, {:?} per slice):",
        total / runs as u32,
        total / (runs * n_batch) as u32
    );
    for (name, (d, n)) in v.iter().take(12) {
        println!(
            "  {:>5.1}%  {:>8.2} ms/run  {:>4} calls/run  {name}",
            100.0 * d.as_secs_f64() / total.as_secs_f64(),
            d.as_secs_f64() * 1e3 / runs as f64,
            n / runs
        );
    }
    Ok(())
}
