//! A model card (parsed and validated).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctsentinel::fuzzing::model_card(data);
});
