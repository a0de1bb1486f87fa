#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flashkern::fuzzing::attention_vs_reference(data));
