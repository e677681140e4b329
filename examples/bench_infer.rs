//! Inference benchmark, tract side (driven by `bench/compare_infer.sh`, which interleaves it
//! with ONNX Runtime's `bench/infer_ort.py` on the same model files and slices).
//! `bench_infer CARD THREADS ITERS` prints one JSON line: median milliseconds per slice for the
//! int8 model and the fp32 reference, each loaded through its own card; with THREADS > 1 also
//! per slice when THREADS slices run in parallel (`*_parallel_slices`, the `scan` path). On
//! x86-64 CPUs where `classify::madd16` runs the int8 products, `tract_int8_tract_kernel` is the
//! same int8 model on tract's own AVX2 kernel.
use std::time::Instant;

use ctsentinel::classify::{Classifier, ModelCard, Options};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() == 4, "usage: bench_infer CARD THREADS ITERS");
    let threads: usize = a[2].parse()?;
    let iters: usize = a[3].parse()?;
    let card = ModelCard::load(a[1].as_ref())?;
    // The fp32 reference gets a card of its own in a temporary folder, so both go through the
    // same Classifier (same preprocessing, same plan options).
    let tmp = tempfile::tempdir()?;
    let fp32 = card
        .model
        .reference_fp32_file
        .clone()
        .ok_or_else(|| anyhow::anyhow!("card names no fp32 reference"))?;
    let text = std::fs::read_to_string(&a[1])?
        .replace(
            &format!("file = \"{}\"", card.model.file),
            &format!("file = \"{fp32}\""),
        )
        .replace(
            &card.model.sha256,
            card.model.reference_fp32_sha256.as_deref().unwrap_or_default(),
        );
    // The fp32 reference has no evidence output (training/evidence.py adds it to the int8 file).
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("evidence = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tmp.path().join("card.toml"), text)?;
    std::os::unix::fs::symlink(std::fs::canonicalize(card.dir.join(&fp32))?, tmp.path().join(&fp32))?;
    let n = card.input.size;
    // A chest-like phantom (air, body, two dark lungs); cost does not depend on the values.
    let plane: Vec<f32> = (0..n * n)
        .map(|i| {
            let (y, x) = ((i / n) as f32 - n as f32 / 2.0, (i % n) as f32 - n as f32 / 2.0);
            if (x * x + y * y).sqrt() > 0.43 * n as f32 {
                0.15
            } else if (x.abs() - 0.2 * n as f32).abs() < 0.12 * n as f32 {
                0.2
            } else {
                0.75
            }
        })
        .collect();
    let mut out = serde_json::Map::new();
    let mut runs = vec![
        ("tract_int8", std::path::PathBuf::from(&a[1])),
        ("tract_fp32", tmp.path().join("card.toml")),
    ];
    // Where ctsentinel's own AVX2 int8 kernel runs (classify::madd16), also time tract's own
    // kernel on the same int8 model: the peer in the same run. The switch is read when a plan
    // is built, so it is set just before the last load.
    let peer = ctsentinel::classify::madd16::active();
    if peer {
        runs.push(("tract_int8_tract_kernel", std::path::PathBuf::from(&a[1])));
    }
    for (name, path) in runs {
        if name == "tract_int8_tract_kernel" {
            std::env::set_var(ctsentinel::classify::madd16::ENV_SWITCH, "0");
        }
        let c = Classifier::load(&path, Options { threads })?;
        c.p_covid_plane(plane.clone())?; // warm-up
        let ms: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                c.p_covid_plane(plane.clone()).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        out.insert(name.into(), median(ms).into());
        if threads > 1 {
            // Slices in parallel, one single-threaded run per worker (what `scan` does).
            let k = 4 * threads;
            let ms: Vec<f64> = (0..iters.div_ceil(4).max(2))
                .map(|_| {
                    let t = Instant::now();
                    c.p_covid_planes(vec![plane.clone(); k])
                        .map(|_| t.elapsed().as_secs_f64() * 1e3 / k as f64)
                })
                .collect::<Result<_, _>>()?;
            out.insert(format!("{name}_parallel_slices"), median(ms).into());
        }
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
