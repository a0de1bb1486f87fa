//! Replays every committed fuzz input (`fuzz/corpus/<target>/` seeds and
//! `fuzz/regressions/<target>/` crash reproducers) through the target's body on stable, so a
//! crash once fixed stays fixed without nightly or cargo-fuzz.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("capi_descriptors", flashkern::fuzzing::capi_descriptors),
    ("matmul_vs_reference", flashkern::fuzzing::matmul_vs_reference),
    ("norm_vs_reference", flashkern::fuzzing::norm_vs_reference),
    ("attention_vs_reference", flashkern::fuzzing::attention_vs_reference),
    ("safetensors_load", flashkern::fuzzing::safetensors_load),
    ("config_parse", flashkern::fuzzing::config_parse),
];

#[test]
fn every_committed_fuzz_input_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let mut replayed = 0;
        for folder in ["corpus", "regressions"] {
            // Regressions exist only for targets that once crashed; every target has seeds.
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else { continue };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).expect("readable corpus file");
                target(&bytes);
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no committed seeds for fuzz target {name} (fuzz/corpus/{name}/)");
        println!("{name}: replayed {replayed} fuzz inputs");
    }
}
