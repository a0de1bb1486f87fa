#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flashkern::fuzzing::matmul_vs_reference(data));
