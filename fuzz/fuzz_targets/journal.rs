//! The service's journal as found at start-up, opened and replayed.
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ctsentinel-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temporary folder");
        d
    });
    let _ = ctsentinel::fuzzing::journal(data, dir);
});
