//! GPT-2 tiny (random weights) against the transformers reference: logits of given inputs,
//! greedy continuation and its step logits, and KV-cache decode against full recompute.

mod common;

use common::{floats, ids, max_abs_diff, model_dir, reference};
use flashkern::DType;
use flashkern::models::gpt2::Gpt2Model;

/// f32 throughout; 1e-4 abs is the bar (logits here are O(1), errors O(1e-6)).
const TOL: f32 = 1e-4;

#[test]
fn gpt2_tiny_matches_reference() {
    let Some(dir) = model_dir("FLASHKERN_GPT2_TINY_DIR") else { return };
    let r = reference(&dir);
    let model = Gpt2Model::load(&dir, DType::F32).expect("load gpt2-tiny");
    let vocab = model.config().vocab_size;

    for (case, entry) in r["logits"].as_array().unwrap().iter().enumerate() {
        let batch: Vec<Vec<u32>> = entry["input_ids"].as_array().unwrap().iter().map(ids).collect();
        let want = floats(&entry["logits"]);
        let flat: Vec<u32> = batch.concat();
        let mut cache = model.new_cache(batch.len()).unwrap();
        let got = model.forward(&flat, &mut cache).expect("forward");
        let diff = max_abs_diff(&got, &want);
        eprintln!("logits case {case}: batch {} × {}: max abs diff {diff:.3e}", batch.len(), batch[0].len());
        assert!(diff <= TOL, "case {case}: max abs diff {diff}");
        assert_eq!(got.len(), flat.len() * vocab);
    }

    let prompt = ids(&r["greedy"]["prompt"]);
    let want_tokens = ids(&r["greedy"]["new_tokens"]);
    let generated = model.generate(&prompt, want_tokens.len(), |_, _| {}).expect("generate");
    assert_eq!(generated.new_tokens, want_tokens, "greedy continuation");
    let want_steps = floats(&r["greedy"]["step_logits"]);
    let got_steps: Vec<f32> = generated.step_logits.concat();
    let diff = max_abs_diff(&got_steps, &want_steps);
    eprintln!("greedy step logits (16 steps): max abs diff {diff:.3e}");
    assert!(diff <= TOL, "step logits: max abs diff {diff}");

    // KV-cache decode equals a full recompute of prompt + generated tokens.
    let mut all = prompt.clone();
    all.extend(&generated.new_tokens[..generated.new_tokens.len() - 1]);
    let full = model.logits(&all).expect("full recompute");
    let recomputed: Vec<f32> = full[(prompt.len() - 1) * vocab..].to_vec();
    let diff = max_abs_diff(&recomputed, &got_steps);
    eprintln!("KV-cache decode vs full recompute: max abs diff {diff:.3e}");
    assert!(diff <= 1e-5, "cache vs recompute: {diff}");
    let prompt_flat: Vec<f32> = generated.prompt_logits.concat();
    assert!(max_abs_diff(&prompt_flat, &full[..prompt.len() * vocab]) <= 1e-5);
}

#[test]
fn gpt2_tiny_bf16_weights_stay_close() {
    let Some(dir) = model_dir("FLASHKERN_GPT2_TINY_DIR") else { return };
    let r = reference(&dir);
    let model = Gpt2Model::load(&dir, DType::BF16).expect("load gpt2-tiny in bf16");
    let entry = &r["logits"][0];
    let input = ids(&entry["input_ids"][0]);
    let want = floats(&entry["logits"]);
    let got = model.logits(&input).expect("forward");
    let diff = max_abs_diff(&got, &want);
    let cos = common::cosine(&got, &want);
    eprintln!("bf16 weights: logits max abs diff {diff:.3e}, cosine {cos:.6}");
    assert!(cos >= 0.997, "cosine {cos}");
}

#[test]
fn gpt2_tiny_f16_weights_and_thread_count_independence() {
    let Some(dir) = model_dir("FLASHKERN_GPT2_TINY_DIR") else { return };
    let r = reference(&dir);
    let entry = &r["logits"][1];
    let batch: Vec<u32> = entry["input_ids"].as_array().unwrap().iter().flat_map(ids).collect();
    let want = floats(&entry["logits"]);
    let model = Gpt2Model::load(&dir, DType::F16).expect("load gpt2-tiny in f16");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cache = model.new_cache(2).unwrap();
            model.forward(&batch, &mut cache).unwrap()
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()), "1 vs 2 threads differ");
    let cos = common::cosine(&one, &want);
    eprintln!("f16 weights: logits max abs diff {:.3e}, cosine {cos:.7}", max_abs_diff(&one, &want));
    assert!(cos >= 0.9999, "cosine {cos}");
}
