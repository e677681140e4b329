//! Two runnable plans of the shipped model give the same outputs, bit for bit, on real slices:
//! what every change that should alter only speed (our plan rewrites, our int8 kernel) must keep.

use std::path::Path;

use ctsentinel::classify::{Classifier, Options};
use tract_onnx::prelude::*;

/// Runs `a` and `b` on slices 12, 20 and 30 of the shared COVID patient (preprocessed by the
/// shipped card's classifier) and panics, naming the slice and `what`, where any output differs.
pub fn assert_bit_identical_on_real_slices(
    a: &Arc<TypedSimplePlan>,
    b: &Arc<TypedSimplePlan>,
    data: &Path,
    what: &str,
) {
    let mut c = Classifier::load(&super::card_path(), Options { threads: 1 }).unwrap();
    let n = c.input_size();
    let mut decoder = ctsentinel::ingest::SliceDecoder::new();
    for i in [12, 20, 30] {
        let s = decoder
            .decode(&data.join(format!("ct16/covid/ctmd_P001/SR_1/IM{i:05}.tif")))
            .unwrap();
        let plane = c.plane_from_stored(s.pixels, s.width, s.height);
        let x = Tensor::from_shape(&[1, 1, n, n], &plane).unwrap().into_tvalue();
        let ra = a.run(tvec!(x.clone())).unwrap();
        let rb = b.run(tvec!(x)).unwrap();
        assert_eq!(ra.len(), rb.len());
        for (ta, tb) in ra.iter().zip(&rb) {
            let (va, vb) = (
                ta.to_plain_array_view::<f32>().unwrap(),
                tb.to_plain_array_view::<f32>().unwrap(),
            );
            assert_eq!(va.shape(), vb.shape());
            assert!(
                va.iter().zip(vb.iter()).all(|(p, q)| p.to_bits() == q.to_bits()),
                "slice {i}: outputs differ ({what})"
            );
        }
    }
}
