//! A request to the results page without a session (`ctsentinel::fuzzing::web_request`).
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ctsentinel-fuzz-web-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temporary folder");
        d
    });
    let _ = ctsentinel::fuzzing::web_request(data, dir);
});
