#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flashkern::fuzzing::config_parse(data));
