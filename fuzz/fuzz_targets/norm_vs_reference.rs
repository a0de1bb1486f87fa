#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flashkern::fuzzing::norm_vs_reference(data));
