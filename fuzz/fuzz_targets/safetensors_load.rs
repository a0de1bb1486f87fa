#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flashkern::fuzzing::safetensors_load(data));
