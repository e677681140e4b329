//! The service config, with the repository's board profiles.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let boards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
    let _ = ctsentinel::fuzzing::service_config(data, &boards);
});
