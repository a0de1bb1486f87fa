//! all-MiniLM-L6-v2 against the transformers / sentence-transformers reference.
//!
//! The kernels may still be the slow f64 reference while this runs, so the test uses the
//! shortest reference sentences one by one plus the single padded batch of all eight.

mod common;

use common::{cosine, floats, ids, max_abs_diff, model_dir, reference};
use flashkern::DType;
use flashkern::models::bert::SentenceEncoder;

/// The reference sentences run one by one (the shortest ones: lengths 16, 4, 2 — sentence 0
/// is needed for the attention check).
const SINGLES: [usize; 3] = [0, 6, 7];

#[test]
fn minilm_f32_matches_reference() {
    let Some(dir) = model_dir("FLASHKERN_MINILM_DIR") else { return };
    let r = reference(&dir);
    let enc = SentenceEncoder::load(&dir, DType::F32).expect("load MiniLM");
    let h = enc.model().config().hidden_size;
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();

    // Token ids of every sentence.
    for (i, text) in sentences.iter().enumerate() {
        let got = enc.tokenizer().encode(text).unwrap();
        assert_eq!(got.ids, ids(&r["single"][i]["input_ids"]), "token ids of sentence {i}");
    }

    let mut alone = Vec::new();
    for &i in &SINGLES {
        let single = &r["single"][i];
        let input = ids(&single["input_ids"]);
        let out = if i == 0 { enc.model().encode_with_attention(&[input]) } else { enc.model().encode(&[input]) };
        let out = out.unwrap();
        let diff = max_abs_diff(out.sequence(0).unwrap(), &floats(&single["last_hidden_state"]));
        let emb = enc.pool(&out, 0).unwrap();
        alone.push(emb.clone());
        let want = floats(&single["embedding"]);
        let cos = cosine(&emb, &want);
        eprintln!(
            "sentence {i} ({} tokens): last_hidden_state max abs diff {diff:.3e}, embedding max abs diff {:.3e}, cosine {cos:.8}",
            out.lengths[0],
            max_abs_diff(&emb, &want)
        );
        assert!(diff <= 1e-4, "sentence {i}: last_hidden_state max abs diff {diff}");
        assert!(cos >= 0.99999, "sentence {i}: cosine {cos}");
        if i == 0 {
            let want = floats(&r["attentions_sentence0"]);
            let got: Vec<f32> = out.attentions.concat();
            let diff = max_abs_diff(&got, &want);
            eprintln!("attention probabilities of sentence 0 (6 layers × 12 heads × 16 × 16): max abs diff {diff:.3e}");
            assert!(diff <= 1e-5, "attention probabilities: {diff}");
        }
    }

    // The padded batch of all eight equals the one-by-one reference and our one-by-one runs.
    let batch: Vec<Vec<u32>> = (0..sentences.len()).map(|i| ids(&r["single"][i]["input_ids"])).collect();
    let out = enc.model().encode(&batch).unwrap();
    assert_eq!(out.padded_len, r["batched"]["padded_length"].as_u64().unwrap() as usize);
    let embeddings: Vec<Vec<f32>> = (0..batch.len()).map(|b| enc.pool(&out, b).unwrap()).collect();
    let mut worst_hidden = 0f32;
    let mut worst_cos = 1f64;
    for (i, emb) in embeddings.iter().enumerate() {
        let want_rows = floats(&r["single"][i]["last_hidden_state"]);
        assert_eq!(out.sequence(i).unwrap().len(), want_rows.len());
        assert_eq!(emb.len(), h);
        worst_hidden = worst_hidden.max(max_abs_diff(out.sequence(i).unwrap(), &want_rows));
        worst_cos = worst_cos.min(cosine(emb, &floats(&r["batched"]["embeddings"][i])));
        worst_cos = worst_cos.min(cosine(emb, &floats(&r["single"][i]["embedding"])));
    }
    eprintln!(
        "padded batch of 8: worst last_hidden_state diff {worst_hidden:.3e}, worst embedding cosine {worst_cos:.8}"
    );
    assert!(worst_hidden <= 1e-4, "padded batch hidden diff {worst_hidden}");
    assert!(worst_cos >= 0.99999, "padded batch cosine {worst_cos}");
    for (&i, single) in SINGLES.iter().zip(&alone) {
        let diff = max_abs_diff(single, &embeddings[i]);
        eprintln!("sentence {i}: padded batch vs alone embedding max abs diff {diff:.3e}");
        // Unit vectors; different padding may change blocking inside the kernels, so allow a
        // few f32 roundings (the reference's own padded-vs-alone difference was 2e-7).
        assert!(diff <= 1e-5, "sentence {i}: batched vs alone differ by {diff}");
    }
    // The text path (tokenizer + pooling) gives the same vectors.
    let via_text = enc.embed(&[sentences[6], sentences[7]]).unwrap();
    assert!(max_abs_diff(&via_text[0], &embeddings[6]) <= 1e-5);
    assert!(max_abs_diff(&via_text[1], &embeddings[7]) <= 1e-5);
}

#[test]
fn minilm_bf16_weights_cosine() {
    let Some(dir) = model_dir("FLASHKERN_MINILM_DIR") else { return };
    let r = reference(&dir);
    let enc = SentenceEncoder::load(&dir, DType::BF16).expect("load MiniLM as bf16");
    let sentences: Vec<&str> = r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let texts: Vec<&str> = SINGLES.iter().map(|&i| sentences[i]).collect();
    let embeddings = enc.embed(&texts).unwrap();
    let worst = SINGLES
        .iter()
        .zip(&embeddings)
        .map(|(&i, e)| cosine(e, &floats(&r["single"][i]["embedding"])))
        .fold(1f64, f64::min);
    eprintln!("bf16 weights: worst embedding cosine over sentences {SINGLES:?}: {worst:.6}");
    assert!(worst >= 0.997, "bf16 cosine {worst}");
}

#[test]
fn pooling_an_empty_or_missing_sequence_is_an_error() {
    let Some(dir) = model_dir("FLASHKERN_MINILM_DIR") else { return };
    let enc = SentenceEncoder::load(&dir, DType::F32).expect("load MiniLM");
    // [CLS] [SEP] beside an empty sequence: the batch runs, the empty one has nothing to pool.
    let out = enc.model().encode(&[vec![101, 102], vec![]]).unwrap();
    assert_eq!(enc.pool(&out, 0).unwrap().len(), enc.model().config().hidden_size);
    for (b, why) in [(1, "empty"), (2, "of a batch of 2")] {
        let err = enc.pool(&out, b).unwrap_err().to_string();
        assert!(err.contains(why), "sequence {b}: {err}");
    }
}
