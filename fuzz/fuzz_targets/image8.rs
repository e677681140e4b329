//! An 8-bit grayscale PNG or JPEG.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctsentinel::fuzzing::image8(data);
});
