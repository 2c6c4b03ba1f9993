#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_ingest::fuzzing::remote_write(data));
