//! Evaluation helper for `training/evaluate.py --tract`: P(COVID) from tract for model input
//! planes that Python prepared, so held-out metrics can be computed on the runtime that ships.
//! `classify_planes CARD PLANES.f32 N THREADS` reads N row-major little-endian f32 planes of the
//! card's input size and prints one probability per line.
use std::io::Read;

use ctsentinel::classify::{Classifier, Options};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() == 5, "usage: classify_planes CARD PLANES.f32 N THREADS");
    let c = Classifier::load(a[1].as_ref(), Options { threads: a[4].parse()? })?;
    let n: usize = a[3].parse()?;
    let side = c.input_size();
    let mut f = std::io::BufReader::new(std::fs::File::open(&a[2])?);
    let mut buf = vec![0u8; side * side * 4];
    for _ in 0..n {
        f.read_exact(&mut buf)?;
        let plane = buf
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        println!("{}", c.p_covid_plane(plane)?);
    }
    Ok(())
}
