//! A DICOM file's header (grouping and ordering), with the bounds pre-scan.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctsentinel::fuzzing::dicom_header(data);
});
