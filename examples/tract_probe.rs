//! Development probe: load an ONNX model in tract, optimise it, list what the convolutions and
//! matrix products compute in, and time single-slice inference.
//! `cargo run --release --example tract_probe -- models/ctsentinel-fpn256.int8.onnx [runs]`
use std::collections::BTreeMap;
use std::time::Instant;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let t = Instant::now();
    let mut model = tract_onnx::onnx().model_for_path(&args[1])?;
    let batch = model.sym("batch");
    model.set_input_fact(
        0,
        f32::fact([batch.to_dim(), 1.to_dim(), 256.to_dim(), 256.to_dim()]).into(),
    )?;
    let subs = std::collections::HashMap::from([(batch, 1.to_dim())]);
    let model = model.into_typed()?.set_symbols(&subs)?.into_optimized()?;
    eprintln!("load+optimise {:?}", t.elapsed());
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
    let plan = model.into_runnable()?;
    let x = Tensor::from_shape(&[1, 1, 256, 256], &vec![0.3f32; 65536])?;
    for _ in 0..runs {
        let t = Instant::now();
        let out = plan.run(tvec!(x.clone().into_tvalue()))?;
        eprintln!(
            "run {:?} -> {:?}",
            t.elapsed(),
            out[0].to_plain_array_view::<f32>()?.as_slice()
        );
    }
    Ok(())
}
