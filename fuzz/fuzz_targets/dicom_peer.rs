//! What a DICOM peer sends after association: PDUs, command sets, instances.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ctsentinel::fuzzing::dicom_peer(data);
});
