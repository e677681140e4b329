//! A 16-bit slice file (TIFF or DICOM by signature) through the decoder the scan uses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctsentinel::fuzzing::slice(data);
});
