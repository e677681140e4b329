//! ctsentinel's own int8 matrix kernel (`classify::madd16`, x86-64 AVX2 without VNNI) changes
//! nothing but speed: the whole model's outputs equal tract's own kernel's bit for bit on real
//! slices. One test in its own binary, because the switch between the two kernels is the
//! process environment, read when a plan is built.

mod common;

use ctsentinel::classify::madd16;
use tract_onnx::prelude::*;

fn plan(card: &ctsentinel::classify::ModelCard) -> TypedModel {
    let mut model = tract_onnx::onnx().model_for_path(card.model_path()).unwrap();
    let batch = model.sym("batch");
    let n = card.input.size;
    model
        .set_input_fact(
            0,
            f32::fact([batch.to_dim(), 1.to_dim(), n.to_dim(), n.to_dim()]).into(),
        )
        .unwrap();
    let one = std::collections::HashMap::from([(batch, 1.to_dim())]);
    let mut model = model
        .into_typed()
        .unwrap()
        .set_symbols(&one)
        .unwrap()
        .into_optimized()
        .unwrap();
    ctsentinel::classify::fastquant::install(&mut model).unwrap();
    model
}

#[test]
fn the_avx2_madd_kernel_leaves_every_model_output_bit_identical_to_tracts_own_kernel() {
    let test = "the_avx2_madd_kernel_leaves_every_model_output_bit_identical_to_tracts_own_kernel";
    if !madd16::active() {
        eprintln!("{test}: this CPU has VNNI or no AVX2, so tract's own kernel runs: nothing to compare");
        return;
    }
    let Some(data) = common::shared_or_skip(test) else {
        return;
    };
    let card = ctsentinel::classify::ModelCard::load(&common::card_path()).unwrap();
    let ours = plan(&card);
    let kernels = ctsentinel::classify::matmul_kernels(&ours);
    assert!(
        kernels.iter().any(|k| k.starts_with(madd16::NAME)),
        "the plan does not run {}: {kernels:?}",
        madd16::NAME
    );
    std::env::set_var(madd16::ENV_SWITCH, "0");
    let tracts = plan(&card);
    let theirs = ctsentinel::classify::matmul_kernels(&tracts);
    assert!(
        theirs.iter().all(|k| !k.contains(madd16::NAME)),
        "{} still chosen with {}=0: {theirs:?}",
        madd16::NAME,
        madd16::ENV_SWITCH
    );
    common::same_outputs::assert_bit_identical_on_real_slices(
        &ours.into_runnable().unwrap(),
        &tracts.into_runnable().unwrap(),
        &data,
        &format!("{} against tract's kernel", madd16::NAME),
    );
}
